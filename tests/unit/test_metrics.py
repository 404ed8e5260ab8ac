"""metrics: the collectors are exactly the contract's, with bounded labels."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from driftguard.telemetry import metrics

ENV = ("namespace", "environment")

Row = tuple[MetricWrapperBase, str, str, tuple[str, ...]]

ROWS: list[Row] = [
    (metrics.managed_resources, "driftguard_managed_resources", "gauge", ENV),
    (metrics.drifted_resources, "driftguard_drifted_resources", "gauge", ENV),
    (metrics.environment_in_sync, "driftguard_environment_in_sync", "gauge", ENV),
    (metrics.drift_detected, "driftguard_drift_detected_total", "counter", (*ENV, "kind")),
    (metrics.drift_reverted, "driftguard_drift_reverted_total", "counter", (*ENV, "kind")),
    (metrics.revert_latency, "driftguard_revert_latency_seconds", "histogram", ("kind",)),
    (metrics.detect_latency, "driftguard_detect_latency_seconds", "histogram", ("kind",)),
    (metrics.reconcile_duration, "driftguard_reconcile_duration_seconds", "histogram", ()),
    (metrics.reconcile_errors, "driftguard_reconcile_errors_total", "counter", (*ENV, "reason")),
    (metrics.environment_suspended, "driftguard_environment_suspended", "gauge", ENV),
    (metrics.fights, "driftguard_fights_total", "counter", ENV),
    (metrics.drift_unattributed, "driftguard_drift_unattributed_total", "counter", ENV),
    (metrics.exceptions_active, "driftguard_exceptions_active", "gauge", ENV),
    (
        metrics.exception_expiry,
        "driftguard_exception_expiry_timestamp_seconds",
        "gauge",
        (*ENV, "exception"),
    ),
    (metrics.watches, "driftguard_watches", "gauge", ("state",)),
    (metrics.watch_restarts, "driftguard_watch_restarts_total", "counter", ("kind",)),
    (
        metrics.environment_info,
        "driftguard_environment_info",
        "gauge",
        (*ENV, "blueprint", "revision", "cluster"),
    ),
    (metrics.shard_environments, "driftguard_shard_environments", "gauge", ("replica",)),
    (metrics.cluster_connected, "driftguard_cluster_connected", "gauge", ("cluster",)),
    (metrics.clusters_connected, "driftguard_clusters_connected", "gauge", ()),
]
"""The contract's table, then suspension and the watchers' health: collector, name, type, labels."""

CONTRACT = [pytest.param(*row, id=row[1]) for row in ROWS]

HISTOGRAM_SERIES = {"_bucket", "_sum", "_count"}


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    """A registry holding only driftguard's collectors, each with one child; removed after."""
    own = CollectorRegistry()
    children = []
    for collector, _, _, labels in ROWS:
        own.register(collector)
        if labels:
            values = tuple(f"test-{label}" for label in labels)
            collector.labels(*values)
            children.append((collector, values))
    yield own
    for collector, values in children:
        collector.remove(*values)


def families(registry: CollectorRegistry) -> dict[str, tuple[str, set[str], set[str]]]:
    """name -> (type, sample names, label names) from the text exposition format."""
    text = generate_latest(registry).decode()
    out: dict[str, tuple[str, set[str], set[str]]] = {}
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):
            continue  # prometheus_client's companion series of counters and histograms
        names = {sample.name for sample in family.samples}
        labels = {label for sample in family.samples for label in sample.labels} - {"le"}
        out[family.name] = (family.type, names, labels)
    return out


@pytest.mark.parametrize(("collector", "name", "kind", "labels"), CONTRACT)
def test_exposition(
    registry: CollectorRegistry,
    collector: MetricWrapperBase,
    name: str,
    kind: str,
    labels: tuple[str, ...],
) -> None:
    """Each contract metric is exposed under its name, type and label names."""
    family = name.removesuffix("_total")
    exposed = families(registry)

    assert exposed[family][0] == kind
    assert exposed[family][2] == set(labels)
    if kind == "counter":
        assert exposed[family][1] == {name}
    if kind == "histogram":
        assert {sample.removeprefix(name) for sample in exposed[family][1]} >= HISTOGRAM_SERIES


def test_no_other_metrics(registry: CollectorRegistry) -> None:
    """driftguard exposes the contract's eight families, suspension, the watches', nothing else."""
    expected = {name.removesuffix("_total") for _, name, _, _ in ROWS}
    assert set(families(registry)) == expected


def test_module_has_no_unlisted_collectors() -> None:
    """Every collector defined in metrics.py is one the table above names."""
    defined = {
        id(value) for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)
    }
    assert defined == {id(collector) for collector, _, _, _ in ROWS}


def test_no_per_object_labels(registry: CollectorRegistry) -> None:
    """No label names an object, so cardinality is bounded by Environments, kinds, reasons,
    replicas, remote clusters and the DriftExceptions in force (few, and their series go
    when they end)."""
    used = set().union(*(labels for _, _, labels in families(registry).values()))
    bounded = {"namespace", "environment", "kind", "reason", "state", "blueprint", "revision"}
    assert used <= bounded | {"replica", "exception", "cluster"}  # cluster: a kubeconfig Secret


def test_help_texts(registry: CollectorRegistry) -> None:
    """Every family documents itself, as promtool check metrics expects."""
    text = generate_latest(registry).decode()
    helps = {
        line.split()[2]: line
        for line in text.splitlines()
        if line.startswith("# HELP") and not line.split()[2].endswith("_created")
    }
    expected = {name for _, name, _, _ in ROWS}
    assert set(helps) == expected
    assert all(len(line.split(maxsplit=3)) == 4 for line in helps.values())


def test_forget_removes_environment_gauges() -> None:
    """forget() drops an Environment's gauges and leaves its counters alone."""
    labels = ("test-forget", "shop")
    metrics.managed_resources.labels(*labels).set(5)
    metrics.environment_in_sync.labels(*labels).set(1)
    metrics.drift_detected.labels(*labels, "Deployment").inc()
    try:
        metrics.forget(*labels)
        metrics.forget(*labels)  # a second time is harmless

        own = CollectorRegistry()
        for collector in (metrics.managed_resources, metrics.drift_detected):
            own.register(collector)
        text = generate_latest(own).decode()
        assert 'driftguard_managed_resources{environment="shop"' not in text
        assert 'driftguard_drift_detected_total{environment="shop"' in text
    finally:
        metrics.drift_detected.remove(*labels, "Deployment")


def test_environment_info_keeps_one_series_per_environment() -> None:
    """A new revision replaces the Environment's info series; forgetting it removes it."""
    metrics.set_info("ns-info", "dev", "shop", 1)
    metrics.set_info("ns-info", "dev", "shop", 2, "ns-info/prod-kubeconfig")
    samples = [
        sample.labels
        for family in metrics.environment_info.collect()
        for sample in family.samples
        if sample.labels["namespace"] == "ns-info"
    ]
    assert samples == [
        {
            "namespace": "ns-info",
            "environment": "dev",
            "blueprint": "shop",
            "revision": "2",
            "cluster": "ns-info/prod-kubeconfig",
        }
    ]
    metrics.forget("ns-info", "dev")
    left = [
        sample
        for family in metrics.environment_info.collect()
        for sample in family.samples
        if sample.labels["namespace"] == "ns-info"
    ]
    assert left == []


def test_prime_makes_every_counter_series_of_an_environment_start_at_zero() -> None:
    """rate() and increase() see a first event only if the series was there at 0 before it."""
    metrics.prime("ns-prime", "dev", kinds=["ConfigMap"])
    try:
        found = {
            (sample.name, sample.labels.get("kind") or sample.labels.get("reason") or "")
            for collector in (
                metrics.drift_detected,
                metrics.drift_reverted,
                metrics.fights,
                metrics.reconcile_errors,
            )
            for family in collector.collect()
            for sample in family.samples
            if sample.labels.get("namespace") == "ns-prime" and sample.value == 0
        }
        assert ("driftguard_drift_detected_total", "ConfigMap") in found
        assert ("driftguard_drift_reverted_total", "ConfigMap") in found
        assert ("driftguard_fights_total", "") in found
        assert {r for n, r in found if n == "driftguard_reconcile_errors_total"} == set(
            metrics.ERROR_REASONS
        )
    finally:
        metrics.forget("ns-prime", "dev", kinds=["ConfigMap"])


def test_out_of_sync_seconds_count_while_the_interval_lasts() -> None:
    """Time out of sync is a counter that grows during the drift, not only after it."""
    clock = metrics.OutOfSync()
    own = CollectorRegistry()
    own.register(clock)
    clock.prime("shop", "idle")
    clock.began("shop", "prod", at=0.0)  # before the process started: counted from its start
    clock.began("shop", "prod", at=clock._started + 10**9)  # a later start keeps the first

    def seconds() -> dict[str, float]:
        (family,) = text_string_to_metric_families(generate_latest(own).decode())
        assert (family.name, family.type) == ("driftguard_out_of_sync_seconds", "counter")
        return {s.labels["environment"]: s.value for s in family.samples}

    first = seconds()
    assert first["idle"] == 0.0
    assert first["prod"] >= 0.0
    spent = clock.ended("shop", "prod", at=clock._started + 5.0)
    assert spent is not None
    assert spent >= 5.0 - 0.001
    assert clock.ended("shop", "prod", at=clock._started + 9.0) is None  # nothing open
    assert seconds()["prod"] == spent  # closed: it no longer grows
    clock.forget("shop", "prod")
    assert "prod" not in seconds()


def test_exception_expiry_series_follow_the_exceptions_in_force() -> None:
    metrics.set_exception_ends("shop", "prod", {"hold": 100.0, "more": 200.0})
    assert metrics.exception_expiry.labels("shop", "prod", "hold")._value.get() == 100.0
    metrics.set_exception_ends("shop", "prod", {"more": 200.0})
    exposed = generate_latest().decode()
    assert 'exception="hold"' not in exposed
    assert 'exception="more"' in exposed
    metrics.forget("shop", "prod")
    assert 'exception="more"' not in generate_latest().decode()
