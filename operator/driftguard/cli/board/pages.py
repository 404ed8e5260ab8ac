"""The board's HTML, from jinja2 templates that escape every value they are given.

Everything on these pages that comes from the cluster (names, values, messages, people) is
untrusted: the templates are autoescaped and strictly undefined, so a value can only ever
be text, and the server's Content-Security-Policy allows no inline script besides. Pure:
templates in, markup out.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2

from driftguard.cli import comparison
from driftguard.cli.board import details, grid, live


@dataclass(frozen=True, slots=True)
class Context:
    """Who is looking, and at what: said in every page's header."""

    viewer: str = ""
    scopes: Sequence[str | None] = ()

    @property
    def scope_text(self) -> str:
        return ", ".join(live.scope_label(s) for s in self.scopes)


@functools.cache
def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("driftguard.cli.board", "templates"),
        autoescape=True,  # every template, whatever its name: nothing is ever raw
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["diffclass"] = diff_class
    env.filters["marks"] = compare_marks
    return env


def diff_class(line: str) -> str:
    """A diff line's class; its leading `+`/`-` stays in the text, so colour is not alone."""
    if line.startswith(("+++", "---")):
        return "file"
    if line.startswith("@@"):
        return "hunk"
    return {"+": "add", "-": "del"}.get(line[:1], "ctx")


def compare_marks(row: comparison.Row) -> list[str]:
    """What a compare row says in words: declared values differ, a live value drifted."""
    marks = []
    if row.declared_differs:
        marks.append("differs")
    if row.live_differs:
        marks.append("drift")
    if any(row.tolerated):
        marks.append("allowed")
    return marks


def _base(context: Context, *, title: str, section: str) -> dict[str, Any]:
    return {
        "title": title,
        "section": section,
        "viewer": context.viewer,
        "scopes": context.scope_text,
    }


def _grid_values(board: live.Board, context: Context) -> dict[str, Any]:
    groups = grid.groups(board.snapshot())
    notices = [f"{live.scope_label(s)}: {why}" for s, why in board.refusals.items()]
    notices += [
        f"{live.scope_label(s)} (watch lost, retrying): {why}" for s, why in board.lost.items()
    ]
    return {
        "groups": groups,
        "total": sum(len(g.rows) for g in groups),
        "drifted": sum(g.drifted for g in groups),
        "notices": notices,
        "scopes": context.scope_text,
    }


def grid_page(board: live.Board, context: Context) -> str:
    values = _base(context, title="Environments", section="grid") | _grid_values(board, context)
    return templates().get_template("grid.html").render(values)


def grid_fragment(board: live.Board, context: Context) -> str:
    """The grid alone (with its notices), for a page that refreshes it in place."""
    values = _grid_values(board, context)
    page = templates()
    return page.get_template("notices.html").render(values) + page.get_template(
        "grid_body.html"
    ).render(values)


def row_fragment(row: grid.Row) -> str:
    return templates().get_template("row.html").render(row=row)


def environment_page(view: details.EnvironmentView, context: Context, *, read_at: str) -> str:
    title = f"{view.row.namespace}/{view.row.name}"
    values = _base(context, title=title, section="environment")
    return templates().get_template("environment.html").render(values, view=view, read_at=read_at)


def compare_page(
    context: Context,
    *,
    groups: Iterable[grid.Group],
    chosen: Sequence[str],
    everything: bool,
    blueprint: str = "",
    view: details.CompareView | None = None,
) -> str:
    values = _base(context, title="Compare", section="compare")
    return (
        templates()
        .get_template("compare.html")
        .render(
            values,
            groups=list(groups),
            chosen=list(chosen),
            everything=everything,
            blueprint=blueprint,
            view=view,
        )
    )


def message_page(context: Context, *, title: str, message: str) -> str:
    values = _base(context, title=title, section="")
    return templates().get_template("message.html").render(values, message=message)
