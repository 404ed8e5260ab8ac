"""An Environment's compliance as a Policy Report: one result per managed object.

Policy tools (Policy Reporter, and the dashboards built on it) read the reports of the
Kubernetes Policy WG: the OpenReports `Report` (openreports.io) and, before it, the
wgpolicyk8s.io `PolicyReport`. Both hold the same results; driftguard writes whichever the
server serves. The Environment is the policy; each object either matches its blueprint
(pass), drifted and was not put back (fail), drifted under Observe (warn), or holds drift
by a DriftException (skip). Paths and people only, never a value: a Secret's stay secret.

Pure: the content is a function of the objects' records, with no clock in it, so a report
is written only when a result changes.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from driftguard.core.model import LABEL_ENVIRONMENT, Mode, State
from driftguard.core.tracking import Tracked

SOURCE = "driftguard"
RULE = "matches-blueprint"
CATEGORY = "Drift"
OUTCOMES = ("pass", "fail", "warn", "error", "skip")
LIMIT = 1000
"""Results one report lists (failing ones first), so that it stays far below etcd's object
size limit; the summary counts every object."""
FORMATS = (("openreports.io/v1alpha1", "Report"), ("wgpolicyk8s.io/v1alpha2", "PolicyReport"))
"""Preferred first: OpenReports is where the Policy WG's format went."""

_FAILING = (State.DRIFTED, State.MISSING, State.CONFLICT, State.FIGHTING, State.ERROR)


def outcome(state: State, mode: Mode) -> str:
    """pass, fail, warn or skip: what a policy tool shows for one object's state."""
    if state is State.EXCEPTED:
        return "skip"
    if state in _FAILING:
        return "warn" if mode is Mode.OBSERVE else "fail"
    return "pass"  # in sync, or drift the blueprint itself allows (allowedChanges)


Epoch = Callable[[str], float | None]
"""An RFC 3339 time in seconds since the epoch (the caller's clock library)."""


def result(tracked: Tracked, environment: str, mode: Mode, epoch: Epoch) -> dict[str, Any]:
    """The report's result for one managed object."""
    key, state = tracked.key, tracked.state
    found = outcome(state, mode)
    paths = ", ".join(tracked.pointers) or "/"
    if found == "pass":
        message = "matches the blueprint"
        if state is State.OVERRIDDEN:
            message += f" (allowed drift at {paths})"
    elif found == "skip":
        message = f"drift at {paths} held by DriftException {tracked.exception}"
    elif state is State.MISSING:
        message = "missing: deleted or never created"
    else:
        message = f"{state.value}: drifted at {paths}"
        if tracked.message:
            message += f": {tracked.message}"
    properties = {
        "state": state.value,
        "paths": ",".join(tracked.pointers),
        "changedBy": tracked.changed_by or "",
        "changedByUser": tracked.changed_by_user or "",
        "exception": tracked.exception if state is State.EXCEPTED else "",
    }
    reference = {"apiVersion": key.api_version, "kind": key.kind, "name": key.name}
    if key.namespace:
        reference["namespace"] = key.namespace
    made: dict[str, Any] = {
        "source": SOURCE,
        "policy": environment,
        "rule": RULE,
        "category": CATEGORY,
        "result": found,
        "scored": True,
        "message": message[:900],
        "resources": [reference],
        "properties": {k: v for k, v in properties.items() if v},
    }
    if found in ("fail", "warn"):
        made["severity"] = "high" if found == "fail" else "medium"
    seconds = epoch(tracked.last_drift_time or "") if found != "pass" else None
    if seconds is not None:
        made["timestamp"] = {"seconds": int(seconds), "nanos": 0}
    return made


def content(
    tracked: Iterable[Tracked], environment: str, mode: Mode, epoch: Epoch
) -> dict[str, Any]:
    """`results` and `summary`, in a stable order: equal content means nothing to write."""
    ordered = sorted(tracked, key=lambda t: (t.key.kind, t.key.namespace, t.key.name))
    tally = Counter(outcome(one.state, mode) for one in ordered)
    listed = sorted(ordered, key=lambda t: outcome(t.state, mode) == "pass")[:LIMIT]
    return {
        "summary": {name: tally.get(name, 0) for name in OUTCOMES},
        "results": [result(one, environment, mode, epoch) for one in listed],
    }


def report_name(environment: str) -> str:
    name = f"driftguard-{environment}"
    if len(name) <= 253:
        return name
    return f"driftguard-{environment[:220]}-{hashlib.sha256(environment.encode()).hexdigest()[:10]}"


def document(
    api_version: str,
    kind: str,
    env: dict[str, Any],
    owner_reference: dict[str, Any],
    body: dict[str, Any],
) -> dict[str, Any]:
    """The whole report object for one Environment, owned by it (gone when it goes)."""
    meta = env["metadata"]
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": report_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {
                "app.kubernetes.io/managed-by": SOURCE,
                LABEL_ENVIRONMENT: meta["name"],
                "driftguard.io/record": "compliance",
            },
            "ownerReferences": [owner_reference],
        },
        **body,
    }
