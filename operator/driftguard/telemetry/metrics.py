"""Prometheus collectors, exactly as the contract names them. Created once, here.

No per-object labels: cardinality stays bounded by the number of Environments.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

_ENV = ["namespace", "environment"]
ERROR_REASONS = ("InvalidSpec", "ApplyFailed", "Forbidden")
"""The values of `reason` on driftguard_reconcile_errors_total (Ready's failure reasons)."""

managed_resources = Gauge(
    "driftguard_managed_resources", "Objects managed by an Environment.", _ENV
)
drifted_resources = Gauge(
    "driftguard_drifted_resources",
    "Managed objects that differ from the blueprint.",
    _ENV,
)
environment_in_sync = Gauge(
    "driftguard_environment_in_sync",
    "1 when every managed object matches, else 0.",
    _ENV,
)
drift_detected = Counter(
    "driftguard_drift_detected_total", "Drift detected on a managed object.", [*_ENV, "kind"]
)
drift_reverted = Counter(
    "driftguard_drift_reverted_total", "Drift reverted to the blueprint.", [*_ENV, "kind"]
)
revert_latency = Histogram(
    "driftguard_revert_latency_seconds",
    "From the watch event showing drift to the server accepting the revert.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
reconcile_duration = Histogram(
    "driftguard_reconcile_duration_seconds", "Duration of a full pass over one Environment."
)
reconcile_errors = Counter(
    "driftguard_reconcile_errors_total", "Full passes that failed, by reason.", [*_ENV, "reason"]
)


fights = Counter(
    "driftguard_fights_total",
    "Managed objects that started fighting: reverted 5 times within a minute by another writer.",
    _ENV,
)
exceptions_active = Gauge(
    "driftguard_exceptions_active",
    "DriftExceptions in force for the Environment (their drift stands until they end).",
    _ENV,
)
drift_unattributed = Counter(
    "driftguard_drift_unattributed_total",
    "Drift detected whose author no admission record vouches for (webhook off, down, or "
    "bypassed). Never a user label: the person is in status, Events and the audit trail.",
    _ENV,
)
environment_suspended = Gauge(
    "driftguard_environment_suspended",
    "1 while an Environment is suspended (spec.suspend, or spec.suspendUntil ahead), else 0.",
    _ENV,
)
watches = Gauge(
    "driftguard_watches",
    "Watches of managed kinds by state: healthy, lost (restarting) or forbidden (no RBAC).",
    ["state"],
)
watch_restarts = Counter(
    "driftguard_watch_restarts_total",
    "Watches that were lost (error, end of stream, silence) and started again, by kind.",
    ["kind"],
)
environment_info = Gauge(
    "driftguard_environment_info",
    "1 for each Environment: the Blueprint it is made from (empty: none) and the revision in "
    "use (the Blueprint's, or the Environment's own). Alert on count by blueprint of distinct "
    "revisions > 1 to find environments on different revisions.",
    [*_ENV, "blueprint", "revision"],
)
shard_environments = Gauge(
    "driftguard_shard_environments",
    "Environments this replica acts on, when replicas share the work by Leases.",
    ["replica"],
)
_info: dict[tuple[str, str], tuple[str, str]] = {}
_primed: dict[tuple[str, str], set[str]] = {}
"""Kinds whose counters each Environment has, so that forget() removes them all."""


def set_info(namespace: str, environment: str, blueprint: str, revision: int) -> None:
    """One series per Environment: the old one goes when the revision changes."""
    labels = (blueprint, str(revision))
    old = _info.get((namespace, environment))
    if old == labels:
        return
    if old is not None:
        with contextlib.suppress(KeyError):
            environment_info.remove(namespace, environment, *old)
    environment_info.labels(namespace, environment, *labels).set(1)
    _info[(namespace, environment)] = labels


def prime(namespace: str, environment: str, *, kinds: Iterable[str]) -> None:
    """Every counter series an Environment may use, at 0 before its first event.

    A series born at 1 hides its first increment from rate() and increase(): the first
    drift of a new Environment would never show on a dashboard or in an alert.
    """
    primed = _primed.setdefault((namespace, environment), set())
    for kind in kinds:
        drift_detected.labels(namespace, environment, kind)
        drift_reverted.labels(namespace, environment, kind)
        primed.add(kind)
    fights.labels(namespace, environment)
    drift_unattributed.labels(namespace, environment)
    for reason in ERROR_REASONS:
        reconcile_errors.labels(namespace, environment, reason)


def forget(namespace: str, environment: str, *, kinds: Iterable[str] = ()) -> None:
    """Drops every series of an Environment that is gone, so series do not pile up."""
    gauges = (managed_resources, drifted_resources, environment_in_sync, environment_suspended)
    for gauge in (*gauges, exceptions_active):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, environment)
    for kind in {*kinds, *_primed.pop((namespace, environment), set())}:
        for counter in (drift_detected, drift_reverted):
            with contextlib.suppress(KeyError):
                counter.remove(namespace, environment, kind)
    for counter in (fights, drift_unattributed):
        with contextlib.suppress(KeyError):
            counter.remove(namespace, environment)
    info = _info.pop((namespace, environment), None)
    if info is not None:
        with contextlib.suppress(KeyError):
            environment_info.remove(namespace, environment, *info)
    for reason in ERROR_REASONS:
        with contextlib.suppress(KeyError):
            reconcile_errors.remove(namespace, environment, reason)
