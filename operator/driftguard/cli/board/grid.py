"""The grid of the board, pure: one row per Environment, grouped by Blueprint.

The cells are `driftguard status -o wide`'s (inspection.status_row), so the board and the
command line never disagree; the row adds only what a glance needs: one state in words,
the Blueprint, the excepted count and a stable id for live updates. No I/O, no markup.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from driftguard.cli import inspection

NO_BLUEPRINT = ""
"""The group of Environments that write their resources inline."""


class Health(StrEnum):
    """An Environment's state in one word, shown as text and a symbol (never colour alone)."""

    IN_SYNC = "In sync"
    DRIFTED = "Drifted"
    NOT_READY = "Not ready"
    PENDING = "Pending"


SYMBOLS = {Health.IN_SYNC: "✓", Health.DRIFTED: "✗", Health.NOT_READY: "!", Health.PENDING: "…"}


@dataclass(frozen=True, slots=True)
class Row:
    """One Environment as the grid shows it."""

    namespace: str
    name: str
    blueprint: str
    health: Health
    detail: str  # why, in the words of its conditions
    cells: dict[str, str]  # status_header's column -> status_row's cell
    excepted: int
    cluster: str = ""  # the kubeConfig Secret of the remote cluster it acts in; "": this one

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    @property
    def dom_id(self) -> str:
        return row_id(self.namespace, self.name)

    @property
    def symbol(self) -> str:
        return SYMBOLS[self.health]

    @property
    def is_drifted(self) -> bool:
        return self.health is Health.DRIFTED


@dataclass(frozen=True, slots=True)
class Group:
    """The Environments of one Blueprint (or of none), by namespace and name."""

    blueprint: str
    rows: tuple[Row, ...]

    @property
    def drifted(self) -> int:
        return sum(1 for row in self.rows if row.is_drifted)


def row_id(namespace: str, name: str) -> str:
    """An HTML id safe for any name: names may hold dots, ids must not need escaping in CSS."""
    digest = hashlib.blake2s(f"{namespace}/{name}".encode(), digest_size=8).hexdigest()
    return f"env-{digest}"


def blueprint_used(env: dict[str, Any]) -> str:
    ref = (env.get("spec") or {}).get("blueprintRef") or {}
    return str(ref.get("name") or NO_BLUEPRINT)


def health_of(env: dict[str, Any]) -> tuple[Health, str]:
    """Ready first (an Environment that cannot apply is not "in sync"), then InSync."""
    status = env.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready, in_sync = conditions.get("Ready") or {}, conditions.get("InSync") or {}
    if ready.get("status") == "False":
        return Health.NOT_READY, str(ready.get("message") or ready.get("reason") or "")
    if in_sync.get("status") == "False":
        return Health.DRIFTED, str(in_sync.get("message") or in_sync.get("reason") or "")
    if in_sync.get("status") == "True":
        return Health.IN_SYNC, str(in_sync.get("message") or "")
    return Health.PENDING, "not reported by the operator yet"


def row_of(env: dict[str, Any]) -> Row:
    meta = env["metadata"]
    header = inspection.status_header(with_namespace=False, wide=True)
    cells = dict(
        zip(header, inspection.status_row(env, with_namespace=False, wide=True), strict=True)
    )
    health, detail = health_of(env)
    summary = (env.get("status") or {}).get("summary") or {}
    return Row(
        namespace=str(meta["namespace"]),
        name=str(meta["name"]),
        blueprint=blueprint_used(env),
        health=health,
        detail=detail,
        cells=cells,
        excepted=int(summary.get("excepted") or 0),
        cluster=cluster_of(env),
    )


def cluster_of(env: dict[str, Any]) -> str:
    """`namespace/secret` of the kubeconfig Secret it acts through ("" for this cluster)."""
    ref = ((env.get("spec") or {}).get("kubeConfig") or {}).get("secretRef") or {}
    return f"{env['metadata']['namespace']}/{ref['name']}" if ref.get("name") else ""


def groups(envs: Iterable[dict[str, Any]]) -> list[Group]:
    """Blueprints by name, the Environments without one last."""
    by_blueprint: dict[str, list[Row]] = {}
    for env in envs:
        row = row_of(env)
        by_blueprint.setdefault(row.blueprint, []).append(row)
    order = sorted(by_blueprint, key=lambda b: (b == NO_BLUEPRINT, b))
    return [Group(b, tuple(sorted(by_blueprint[b], key=lambda r: r.key))) for b in order]
