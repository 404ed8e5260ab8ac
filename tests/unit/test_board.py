"""The board's pure parts: grid rows, the live store, and pages that escape what the cluster says."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient, TestServer

from driftguard.cli import comparison, inspection
from driftguard.cli.board import details, grid, live, pages, server
from driftguard.cli.comparison import Side
from driftguard.core import model
from driftguard.kube.client import KubeCluster
from driftguard.kube.errors import ApiError

INJECTED = '<script>window.__injected=1</script><img src=x onerror="window.__injected=2">'
CM = ("v1", "ConfigMap", "db")
CONTEXT = pages.Context(viewer="alice", scopes=[None])


def env(
    name: str = "staging",
    namespace: str = "platform",
    *,
    ready: str = "True",
    in_sync: str | None = "True",
    message: str = "",
    blueprint: str = "",
    **status: Any,
) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": ready, "reason": "Applied", "message": message}]
    if in_sync is not None:
        conditions.append({"type": "InSync", "status": in_sync, "reason": "x", "message": message})
    spec: dict[str, Any] = {"mode": "Enforce", "resources": []}
    if blueprint:
        spec["blueprintRef"] = {"name": blueprint}
    return {
        "metadata": {"name": name, "namespace": namespace, "managedFields": [{"manager": "x"}]},
        "spec": spec,
        "status": {"conditions": conditions, **status},
    }


def scripts(html: str) -> list[str]:
    """Every <script> element's opening tag in a page."""
    return re.findall(r"<script\b[^>]*>", html)


@pytest.mark.parametrize(
    ("ready", "in_sync", "expected"),
    [
        ("True", "True", grid.Health.IN_SYNC),
        ("True", "False", grid.Health.DRIFTED),
        ("False", "False", grid.Health.NOT_READY),
        ("True", None, grid.Health.PENDING),
    ],
    ids=["in-sync", "drifted", "not-ready-wins", "not-reported"],
)
def test_health_reads_ready_before_in_sync(
    ready: str, in_sync: str | None, expected: grid.Health
) -> None:
    """A row's state is Ready's failure first, then InSync, else pending."""
    assert grid.row_of(env(ready=ready, in_sync=in_sync)).health is expected


def test_row_cells_are_status_wide_columns() -> None:
    """The grid's cells are `driftguard status -o wide`'s, by column name."""
    body = env(
        summary={"managed": 3, "inSync": 2, "drifted": 1, "excepted": 1},
        revision=4,
        lastDrift={
            "time": "T",
            "object": "ConfigMap/staging/db",
            "changedByUser": "bob",
            "changedBy": "kubectl-patch",
        },
    )
    row = grid.row_of(body)

    assert row.cells["OBJECTS"] == "2/3"
    assert row.cells["REVISION"] == "4"
    assert row.cells["CHANGED BY"] == "bob (kubectl-patch)"
    assert row.excepted == 1


def test_groups_order_blueprints_then_those_without() -> None:
    """Groups by Blueprint name, inline Environments last, rows by namespace and name."""
    found = grid.groups(
        [
            env("b"),
            env("z", blueprint="shop"),
            env("a", blueprint="shop"),
            env("c", blueprint="base"),
        ]
    )

    assert [(g.blueprint, [r.name for r in g.rows]) for g in found] == [
        ("base", ["c"]),
        ("shop", ["a", "z"]),
        ("", ["b"]),
    ]


def test_row_id_is_css_safe_and_distinct() -> None:
    """Names with dots still give plain ids, and different names differ."""
    first, second = grid.row_id("a.b", "c"), grid.row_id("a", "b.c")

    assert re.fullmatch(r"env-[0-9a-f]{16}", first)
    assert first != second


def test_store_publishes_rows_and_refreshes() -> None:
    """A change of a known row publishes its key; an addition, a deletion or a re-list the grid."""
    board = live.Board([None])
    queue = board.listen()
    board.relisted(None, [env("a")])
    board.changed("MODIFIED", env("a"))
    board.changed("ADDED", env("b"))
    board.changed("DELETED", env("a"))

    published = [queue.get_nowait() for _ in range(queue.qsize())]
    assert published == [live.REFRESH, ("platform", "a"), live.REFRESH, live.REFRESH]
    assert list(board.environments) == [("platform", "b")]
    assert "managedFields" not in board.environments[("platform", "b")]["metadata"]


def test_relist_of_one_namespace_keeps_the_others() -> None:
    """A namespace re-listed replaces only its own Environments."""
    board = live.Board(["one", "two"])
    board.relisted("one", [env("a", "one")])
    board.relisted("two", [env("b", "two")])
    board.relisted("one", [])

    assert list(board.environments) == [("two", "b")]


def test_refused_scope_is_a_notice_not_a_row() -> None:
    """A namespace RBAC refuses shows as a notice naming it, with no rows of it."""
    board = live.Board(["mine", "theirs"])
    board.relisted("mine", [env("a", "mine")])
    error = ApiError(403, "Forbidden", "no")
    error.verb, error.kind, error.namespace = "list", "Environment", "theirs"
    board.refused("theirs", error)

    html = pages.grid_page(board, CONTEXT)
    assert "mine/a" in html
    assert "Not shown:" in html
    assert "cannot list Environment in namespace theirs" in html


def test_grid_escapes_what_the_cluster_says() -> None:
    """Names, messages and people are text: no element comes from them."""
    board = live.Board([None])
    body = env(
        in_sync="False",
        message=INJECTED,
        lastDrift={"time": "T", "object": INJECTED, "changedByUser": INJECTED},
    )
    board.relisted(None, [body])

    html = pages.grid_page(board, CONTEXT)
    assert scripts(html) == ['<script src="/static/board.js" defer>']
    assert "<img" not in html
    assert "&lt;script&gt;window.__injected=1&lt;/script&gt;" in html


def test_row_fragment_matches_the_rows_of_the_page() -> None:
    """The live row is the page's row: same id, same markup."""
    board = live.Board([None])
    board.relisted(None, [env("a")])
    row = grid.row_of(board.environments[("platform", "a")])

    assert pages.row_fragment(row).strip() in pages.grid_page(board, CONTEXT)


def view(**parts: Any) -> details.EnvironmentView:
    body = env(
        in_sync="False", resources=[{"kind": "ConfigMap", "name": INJECTED, "state": "Drifted"}]
    )
    empty: details.Part[Any] = details.Part([])
    return details.EnvironmentView(
        env=body,
        row=grid.row_of(body),
        objects=[
            {
                "kind": "ConfigMap",
                "namespace": "staging",
                "name": INJECTED,
                "state": "Drifted",
                "who": INJECTED,
                "driftedPaths": ["/data/X"],
            }
        ],
        omitted=0,
        conditions=body["status"]["conditions"],
        diffs=parts.get("diffs", empty),
        history=parts.get("history", empty),
        trail=parts.get("trail", empty),
        exceptions=parts.get("exceptions", empty),
    )


def test_environment_page_escapes_diff_and_trail() -> None:
    """A value in a diff and in the audit trail is shown as text."""
    key = model.ObjectKey("", "v1", "ConfigMap", "staging", "db")
    text = inspection.unified(
        key,
        {"kind": "ConfigMap", "metadata": {}, "data": {"X": INJECTED}},
        {"kind": "ConfigMap", "metadata": {}, "data": {"X": "ok"}},
    )
    trail = [
        [
            "2026-11-26T10:00:00Z",
            "ConfigMap/staging/db",
            "flagged",
            "/data/X",
            INJECTED,
            f"/data/X: ok → {INJECTED}",
        ]
    ]
    html = pages.environment_page(
        view(
            diffs=details.Part([inspection.Reported(key, "changed by bob", text)]),
            trail=details.Part(trail),
        ),
        CONTEXT,
        read_at="now",
    )

    assert scripts(html) == ['<script src="/static/board.js" defer>']
    assert "<img" not in html
    assert html.count("&lt;script&gt;window.__injected=1&lt;/script&gt;") >= 4
    assert '<span class="del">-  X: &lt;script&gt;window.__injected=1' in html


def test_environment_page_redacts_secret_values_in_diffs() -> None:
    """A drifted Secret's diff names the key that changed and neither value."""
    key = model.ObjectKey("", "v1", "Secret", "staging", "creds")
    live_secret = {"kind": "Secret", "metadata": {}, "data": {"pw": "c2VjcmV0LWxpdmU="}}
    wanted = {"kind": "Secret", "metadata": {}, "data": {"pw": "c2VjcmV0LWJsdWU="}}
    text = inspection.unified(key, live_secret, wanted)
    html = pages.environment_page(
        view(diffs=details.Part([inspection.Reported(key, "-", text)])), CONTEXT, read_at="now"
    )

    assert "c2VjcmV0" not in html
    assert "&lt;redacted&gt; (live)" in html


def test_environment_page_says_which_part_rbac_refused() -> None:
    """A part that could not be read says why; the others still show."""
    history = details.Part([["CURRENT", "REVISION"], ["current", "1"]])
    html = pages.environment_page(
        view(diffs=details.Part(None, "cannot dry-run apply ConfigMap"), history=history),
        CONTEXT,
        read_at="now",
    )

    assert "Cannot show the diff: cannot dry-run apply ConfigMap" in html
    assert '<th scope="row">current</th>' in html


def sides(staging: str, prod: str, live_prod: str) -> list[Side]:
    def side(label: str, declared: str, found: str) -> Side:
        manifest = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "db"},
            "data": {"DB_VERSION": declared, "LABEL": INJECTED},
        }
        shown = {**manifest, "data": {"DB_VERSION": found, "LABEL": INJECTED}}
        return Side(label, {CM: manifest}, {CM: shown}, {CM: frozenset()})

    return [side("platform/staging", staging, staging), side("platform/prod", prod, live_prod)]


def compared(found: list[Side], *, everything: bool = False) -> details.CompareView:
    labels = [s.label for s in found]
    rows = comparison.rows(found)
    shown = [
        (r, comparison.cells(r)) for r in rows if comparison.is_shown(r, everything=everything)
    ]
    return details.CompareView(labels, shown, comparison.drift_lines(labels, rows))


def test_compare_marks_differing_values_in_words() -> None:
    """5.7 against 5.5 is marked "differs" in text, not only by colour."""
    html = pages.compare_page(
        CONTEXT, groups=[], chosen=[], everything=False, view=compared(sides("5.7", "5.5", "5.5"))
    )

    row = re.search(r'<tr class="differs"[^>]*>.*?</tr>', html, re.S)
    assert row is not None
    assert "<strong>differs</strong>" in row.group(0)
    assert "5.7" in row.group(0)
    assert "5.5" in row.group(0)


def test_compare_marks_live_drift_and_escapes_values() -> None:
    """A live value off its declared one is marked drift with the live value; values are text."""
    html = pages.compare_page(
        CONTEXT,
        groups=[],
        chosen=[],
        everything=True,
        view=compared(sides("5.7", "5.7", "5.5"), everything=True),
    )

    assert "<strong>drift</strong>" in html
    assert "5.7 (live: 5.5)" in html
    assert "platform/prod: ConfigMap/db /data/DB_VERSION" in html
    assert scripts(html) == ['<script src="/static/board.js" defer>']
    assert "&lt;script&gt;window.__injected=1&lt;/script&gt;" in html


def test_compare_form_works_without_script() -> None:
    """Picking Environments is a plain GET form: checkboxes by Blueprint and a button."""
    groups = grid.groups([env("a", blueprint="shop"), env("b", blueprint="shop")])
    html = pages.compare_page(CONTEXT, groups=groups, chosen=["platform/a"], everything=False)

    assert '<form method="get" action="/compare"' in html
    assert '<input type="checkbox" name="env" value="platform/a" checked>' in html
    assert '<input type="checkbox" name="env" value="platform/b">' in html
    assert 'href="/compare?blueprint=shop"' in html


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({live.REFRESH}, ["refresh"]),
        ({("platform", "a")}, ["row"]),
        ({("platform", str(i)) for i in range(server.ROWS_PER_EVENT + 1)}, ["refresh"]),
        ({("platform", "gone")}, []),
    ],
    ids=["refresh", "one-row", "burst", "unknown-row"],
)
def test_events_send_rows_or_a_refresh(keys: set[live.Key], expected: list[str]) -> None:
    """A few changed rows go as rows; a burst or a change of shape as one refresh."""
    board = live.Board([None])
    board.relisted(None, [env("a")] + [env(str(i)) for i in range(server.ROWS_PER_EVENT + 1)])
    text = server._messages(board, keys).decode()

    assert re.findall(r"^event: (\w+)$", text, re.M) == expected


def test_row_event_carries_escaped_markup() -> None:
    """A row event is one line of JSON whose markup escapes the cluster's text."""
    board = live.Board([None])
    board.relisted(None, [env("a", in_sync="False", message=INJECTED)])
    text = server._messages(board, {("platform", "a")}).decode()
    data = json.loads(text.split("data: ", 1)[1])

    assert data["id"] == grid.row_id("platform", "a")
    assert "<script" not in data["html"]
    assert "&lt;script&gt;" in data["html"]


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1", {"127.0.0.1:8765", "localhost:8765", "[::1]:8765"}),
        ("0.0.0.0", set()),
    ],
    ids=["loopback", "any"],
)
def test_loopback_hosts(address: str, expected: set[str]) -> None:
    """A loopback board answers its loopback names only; one bound wider answers any Host."""
    assert server.loopback_hosts(address, 8765) == expected


async def test_server_refuses_other_hosts_and_sends_its_policy() -> None:
    """A rebound name gets 421; answers carry a CSP without inline script, and GET only."""
    board = live.Board([None])
    board.relisted(None, [env("a")])
    app = server.application(board, cast(KubeCluster, None), CONTEXT, hosts=set())
    async with TestClient(TestServer(app)) as client:
        app[server.HOSTS].update(server.loopback_hosts("127.0.0.1", client.port or 0))
        ok = await client.get("/", headers={"Host": f"127.0.0.1:{client.port}"})
        rebound = await client.get("/", headers={"Host": f"evil.example:{client.port}"})
        posted = await client.post("/", headers={"Host": f"127.0.0.1:{client.port}"})
        script = await client.get("/static/board.js", headers={"Host": f"localhost:{client.port}"})

        assert ok.status == 200
        assert "platform/a" in await ok.text()
        assert "script-src 'self'" in ok.headers["Content-Security-Policy"]
        assert "unsafe-inline" not in ok.headers["Content-Security-Policy"]
        assert rebound.status == 421
        assert posted.status == 405
        assert script.status == 200
        assert script.content_type == "text/javascript"


async def test_events_stream_a_change_as_a_row() -> None:
    """A page listening gets hello, then the changed row's markup."""
    board = live.Board([None])
    board.relisted(None, [env("a")])
    app = server.application(board, cast(KubeCluster, None), CONTEXT, hosts=set())
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/events")
        assert (await response.content.readuntil(b"\n\n")).endswith(b"event: hello\ndata: {}\n\n")
        board.changed("MODIFIED", env("a", in_sync="False"))
        async with asyncio.timeout(5):
            message = await response.content.readuntil(b"\n\n")
        assert message.startswith(b"event: row\n")
        assert b"Drifted" in message
        response.close()


def test_a_remote_environment_names_its_cluster_in_the_grid() -> None:
    """An Environment with spec.kubeConfig says which kubeconfig Secret's cluster it acts in."""
    body = env()
    body["spec"]["kubeConfig"] = {"secretRef": {"name": "prod-kubeconfig"}}
    row = grid.row_of(body)
    assert row.cluster == "platform/prod-kubeconfig"
    assert grid.row_of(env()).cluster == ""
    html = pages.row_fragment(row)
    assert "in the cluster of Secret platform/prod-kubeconfig" in html
