"""The drift audit trail: the last incidents of one Environment, kept where a restart finds them.

A ConfigMap beside the Environment, owned by it, holds one JSON line per incident
(newest last), at most `LIMIT` of them: time, object, paths, the blueprint's and the
live values summarised (a Secret's never), the field manager and what was done.
Status stays small; this is the memory. Writes are gathered and made at most every
`FLUSH_S`, as the operator.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterable
from typing import Any

from driftguard.core import model
from driftguard.core.changes import Change, Outcome
from driftguard.kube import history, timestamps
from driftguard.kube.cluster import Cluster, Resource
from driftguard.kube.errors import ApiError
from driftguard.kube.retries import retrying
from driftguard.telemetry.logs import get as get_logger

log = get_logger(__name__)

CONFIGMAPS = Resource("", "v1", "ConfigMap", "configmaps", namespaced=True)
KEY = "incidents.jsonl"
LIMIT = 400
BYTES_LIMIT = 512 * 1024
FLUSH_S = 1.0
RECORDED = {
    Outcome.REVERTED: "reverted",
    Outcome.FLAGGED: "flagged",
    Outcome.TOLERATED: "tolerated",
    Outcome.EXCEPTED: "excepted",
    Outcome.FIGHTING: "fighting",
    Outcome.CONFLICT: "conflict",
}
"""Outcomes that are incidents, and the word the trail uses for what was done."""


def trail_name(environment: str) -> str:
    """The ConfigMap's name: `<environment>-drift-audit`, hashed down when too long."""
    name = f"{environment}-drift-audit"
    if len(name) <= 253:
        return name
    digest = hashlib.sha256(environment.encode()).hexdigest()[:10]
    return f"{environment[:230]}-{digest}-drift-audit"


def entry(change: Change, *, at: str, paused: bool) -> dict[str, Any]:
    """One incident as a JSON-ready dict."""
    key = change.key
    done = RECORDED[change.outcome]
    if paused and change.outcome is Outcome.FLAGGED:
        done = "paused"  # enforcement was suspended: flagged now, reverted when it resumes
    record: dict[str, Any] = {
        "time": at,
        "apiVersion": key.api_version,
        "kind": key.kind,
        "namespace": key.namespace,
        "name": key.name,
        "action": done,
        "paths": list(change.paths) or ["/"],
        "changedBy": change.changed_by,
        "user": change.changed_by_user,  # the person the admission webhook vouched for
    }
    if change.is_missing:
        record["deleted"] = True
    if change.latency is not None:
        record["latencyMs"] = round(change.latency * 1000, 1)
    if change.changed_at:
        record["changedAt"] = change.changed_at
    if change.exception:
        record["exception"] = change.exception
    if change.values:
        record["values"] = [
            {"path": path, "blueprint": wanted, "live": found}
            for path, wanted, found in change.values
        ]
    return record


def parse(text: str) -> list[dict[str, Any]]:
    """The incidents in a trail's data, oldest first; a damaged line is skipped."""
    out = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out


def bounded(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest entries that fit LIMIT and BYTES_LIMIT."""
    kept: list[dict[str, Any]] = []
    size = 0
    for item in reversed(entries[-LIMIT:]):
        size += len(json.dumps(item)) + 1
        if size > BYTES_LIMIT:
            break
        kept.append(item)
    return kept[::-1]


class AuditTrail:
    """Buffers one Environment's incidents and appends them to its ConfigMap."""

    def __init__(self, cluster: Cluster, env: dict[str, Any]) -> None:
        self._cluster = cluster
        self._env = env
        self._pending: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def update(self, env: dict[str, Any]) -> None:
        self._env = env

    def add(self, changes: Iterable[Change], paused: bool) -> None:
        at = timestamps.now()
        self._queue([entry(c, at=at, paused=paused) for c in changes if c.outcome in RECORDED])

    def note(self, action: str, **fields: Any) -> None:
        """A record of the Environment itself: back in sync, an exception begun or ended."""
        self._queue([{"time": timestamps.now(), "action": action, **fields}])

    def _queue(self, news: list[dict[str, Any]]) -> None:
        if not news or self._stopped:
            return
        self._pending.extend(news)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(FLUSH_S)
        await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        news, self._pending = self._pending, []
        try:
            await self._append(news)
        except ApiError as exc:
            # The trail is a record, never a reason to stop enforcing: say so and go on.
            log.warning("audit_write_failed", error=exc.describe(), incidents=len(news))

    async def _append(self, news: list[dict[str, Any]]) -> None:
        meta = self._env["metadata"]
        name = trail_name(meta["name"])
        found = await retrying(lambda: self._cluster.get(CONFIGMAPS, meta["namespace"], name))
        old = parse(((found or {}).get("data") or {}).get(KEY, ""))
        kept = bounded(old + news)
        manifest = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "labels": {model.LABEL_ENVIRONMENT: meta["name"], "driftguard.io/record": "audit"},
                "ownerReferences": [history.owner_reference(self._env)],
            },
            "data": {KEY: "".join(json.dumps(item, sort_keys=True) + "\n" for item in kept)},
        }
        await retrying(lambda: self._cluster.apply(CONFIGMAPS, manifest))

    def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
