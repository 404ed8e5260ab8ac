"""Prometheus collectors, exactly as the contract names them. Created once, here.

No per-object labels: cardinality stays bounded by the number of Environments.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

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
detect_latency = Histogram(
    "driftguard_detect_latency_seconds",
    "From a manual write (its admission, else its managedFields time) to driftguard seeing "
    "the drift. Whole-second managedFields times make it coarse without attribution.",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0),
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
exception_expiry = Gauge(
    "driftguard_exception_expiry_timestamp_seconds",
    "When each DriftException in force ends (Unix time): its drift is reverted then. Alert on "
    "it minus time() to warn before an exception runs out. Few series: exceptions are rare.",
    [*_ENV, "exception"],
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
    "use (the Blueprint's, or the Environment's own), and the cluster it acts in (the "
    "kubeconfig Secret's namespace/name; empty: this one). Alert on count by blueprint of "
    "distinct revisions > 1 to find environments on different revisions; join on it to give "
    "any Environment's series its cluster.",
    [*_ENV, "blueprint", "revision", "cluster"],
)
cluster_connected = Gauge(
    "driftguard_cluster_connected",
    "1 while a remote cluster (named by its kubeconfig Secret's namespace/name) answers and "
    "its kubeconfig can be used, else 0: its Environments are then not Ready.",
    ["cluster"],
)
clusters_connected = Gauge(
    "driftguard_clusters_connected", "Remote clusters in use that answer, this replica's."
)
shard_environments = Gauge(
    "driftguard_shard_environments",
    "Environments this replica acts on, when replicas share the work by Leases.",
    ["replica"],
)


class OutOfSync(Collector):
    """Seconds each Environment spent out of sync, counted up to the moment of the scrape,
    so that a long drift shows while it lasts and `increase()` over 30 days is one SLO.

    An interval opens at the manual write (when known) or when drift is seen, and closes
    when nothing drifts any more. It never reaches back before this process started: time
    an earlier process counted is its series', and time nobody watched is nobody's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # scrapes come from the metrics server's thread
        self._spent: dict[tuple[str, str], float] = {}
        self._since: dict[tuple[str, str], float] = {}
        self._started = time.time()

    def began(self, namespace: str, environment: str, at: float) -> None:
        key = (namespace, environment)
        with self._lock:
            self._spent.setdefault(key, 0.0)
            start = min(max(at, self._started), time.time())
            self._since[key] = min(self._since.get(key, start), start)

    def ended(self, namespace: str, environment: str, at: float) -> float | None:
        """Closes an open interval: its length, or None when none was open."""
        with self._lock:
            key = (namespace, environment)
            since = self._since.pop(key, None)
            if since is None:
                return None
            spent = max(0.0, at - since)
            self._spent[key] = self._spent.get(key, 0.0) + spent
            return spent

    def prime(self, namespace: str, environment: str) -> None:
        with self._lock:
            self._spent.setdefault((namespace, environment), 0.0)

    def forget(self, namespace: str, environment: str) -> None:
        with self._lock:
            self._spent.pop((namespace, environment), None)
            self._since.pop((namespace, environment), None)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "driftguard_out_of_sync_seconds",
            "Seconds the Environment spent out of sync (drifted or missing objects), so far. "
            "In sync over 30 days: 1 - increase(...[30d]) / (30 * 86400).",
            labels=_ENV,
        )
        now = time.time()
        with self._lock:
            for key, spent in sorted(self._spent.items()):
                since = self._since.get(key)
                family.add_metric(key, spent + (now - since if since is not None else 0.0))
        yield family


out_of_sync = OutOfSync()
REGISTRY.register(out_of_sync)

_info: dict[tuple[str, str], tuple[str, str, str]] = {}
_primed: dict[tuple[str, str], set[str]] = {}
exceptions_ending: dict[tuple[str, str], set[str]] = {}
"""The exceptions each Environment has an expiry series for."""
"""Kinds whose counters each Environment has, so that forget() removes them all."""


def set_info(
    namespace: str, environment: str, blueprint: str, revision: int, cluster: str = ""
) -> None:
    """One series per Environment: the old one goes when the revision (or cluster) changes."""
    labels = (blueprint, str(revision), cluster)
    old = _info.get((namespace, environment))
    if old == labels:
        return
    if old is not None:
        with contextlib.suppress(KeyError):
            environment_info.remove(namespace, environment, *old)
    environment_info.labels(namespace, environment, *labels).set(1)
    _info[(namespace, environment)] = labels


def set_exception_ends(namespace: str, environment: str, ends: dict[str, float]) -> None:
    """The expiry series of an Environment's exceptions in force; the others go."""
    key = (namespace, environment)
    for gone in exceptions_ending.get(key, set()) - ends.keys():
        with contextlib.suppress(KeyError):
            exception_expiry.remove(namespace, environment, gone)
    for name, end in ends.items():
        exception_expiry.labels(namespace, environment, name).set(end)
    exceptions_ending[key] = set(ends)


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
    out_of_sync.prime(namespace, environment)
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
    out_of_sync.forget(namespace, environment)
    for exception in exceptions_ending.pop((namespace, environment), set()):
        with contextlib.suppress(KeyError):
            exception_expiry.remove(namespace, environment, exception)
    info = _info.pop((namespace, environment), None)
    if info is not None:
        with contextlib.suppress(KeyError):
            environment_info.remove(namespace, environment, *info)
    for reason in ERROR_REASONS:
        with contextlib.suppress(KeyError):
            reconcile_errors.remove(namespace, environment, reason)
