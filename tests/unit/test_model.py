"""model: spec parsing, allowed-change bounds, durations and the object identity."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftguard.core import model
from driftguard.core.model import AllowedChange, InvalidSpecError, ObjectKey

# -- parse_spec -------------------------------------------------------------------------


def test_parse_spec_defaults() -> None:
    """An empty spec takes the contract's defaults."""
    spec = model.parse_spec({})

    assert (spec.mode, spec.prune, spec.deletion_policy, spec.suspend) == (
        model.Mode.ENFORCE,
        True,
        model.DeletionPolicy.ORPHAN,
        False,
    )
    assert (spec.target_namespace, spec.resources, spec.allowed_changes) == (None, [], [])
    assert spec.resync_seconds == 600


def test_parse_spec_reads_contract_example() -> None:
    """The contract's example spec parses with its camelCase names."""
    spec = model.parse_spec(
        {
            "targetNamespace": "staging",
            "mode": "Observe",
            "prune": False,
            "deletionPolicy": "Delete",
            "suspend": True,
            "resyncInterval": "1h30m",
            "resources": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}],
            "allowedChanges": [
                {"kind": "Deployment", "name": "web", "paths": ["/spec/replicas"], "minimum": 2}
            ],
        }
    )

    assert spec.target_namespace == "staging"
    assert spec.mode is model.Mode.OBSERVE
    assert spec.deletion_policy is model.DeletionPolicy.DELETE
    assert spec.resync_seconds == 5400
    assert spec.allowed_changes[0].minimum == 2


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        pytest.param({"mode": "Sometimes"}, "spec.mode: ", id="mode"),
        pytest.param({"deletionPolicy": "Keep"}, "spec.deletionPolicy: ", id="deletion-policy"),
        pytest.param({"targetNamespace": "Bad_NS"}, "spec.targetNamespace: ", id="namespace"),
        pytest.param({"resyncInterval": "10 minutes"}, "spec.resyncInterval: ", id="duration"),
        pytest.param({"resyncInterval": "1ms"}, "spec.resyncInterval: must be at least 10s", id="busy-resync"),
        pytest.param({"prevention": "Maybe"}, "spec.prevention: ", id="prevention"),
        pytest.param({"suspendUntil": "tomorrow"}, "spec.suspendUntil: ", id="suspend-until"),
        pytest.param({"prune": "maybe"}, "spec.prune: ", id="boolean"),
        pytest.param({"bogus": 1}, "spec.bogus: ", id="unknown-field"),
        pytest.param(
            {"allowedChanges": [{"paths": ["spec/replicas"]}]},
            "spec.allowedChanges[0].paths[0]: ",
            id="pointer-without-slash",
        ),
        pytest.param({"allowedChanges": [{"paths": ["/a~2"]}]}, "paths[0]: ", id="bad-escape"),
        pytest.param({"allowedChanges": [{"paths": []}]}, "spec.allowedChanges[0].paths: ", id="no-paths"),
        pytest.param({"allowedChanges": [{"kind": "X"}]}, "spec.allowedChanges[0].paths: ", id="paths-missing"),
        pytest.param({"allowedChanges": [{"paths": ["/a"], "minimum": "low"}]}, "spec.allowedChanges[0].minimum: ", id="bound-not-a-number"),
        pytest.param({"resources": [{"kind": "ConfigMap", "metadata": {"name": "c"}}]}, "resources[0]: apiVersion is required", id="resource-without-apiVersion"),
        pytest.param({"resources": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}, {"apiVersion": "v1", "metadata": {"name": "c"}}]}, "resources[1]: kind is required", id="resource-without-kind"),
        pytest.param({"resources": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}]}, "resources[0]: metadata.name is required", id="resource-without-name"),
        pytest.param({"resources": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a" * 254}}]}, "resources[0]: metadata.name must be at most 253", id="name-too-long"),
        pytest.param({"resources": [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "Web"}}]}, "resources[0]: metadata.name must be a lowercase RFC 1123", id="name-uppercase"),
        pytest.param({"resources": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": 42}}]}, "resources[0]: metadata.name must be at most", id="name-not-a-string"),
    ],
)  # fmt: skip
def test_parse_spec_error_names_the_path(raw: dict[str, Any], path: str) -> None:
    """An invalid spec raises InvalidSpecError whose message names the offending path."""
    with pytest.raises(InvalidSpecError) as caught:
        model.parse_spec(raw)
    assert path in str(caught.value)


def test_parse_spec_error_lists_every_problem() -> None:
    """Several problems are all reported, separated by semicolons."""
    with pytest.raises(InvalidSpecError) as caught:
        model.parse_spec({"mode": "x", "suspend": "maybe"})
    assert str(caught.value).count("; ") == 1


def test_parse_spec_error_names_the_bad_value() -> None:
    """The message of an invalid mode quotes the value that was given."""
    with pytest.raises(InvalidSpecError, match="Sometimes"):
        model.parse_spec({"mode": "Sometimes"})


def test_spec_is_frozen() -> None:
    """A parsed spec cannot be changed in place."""
    spec = model.parse_spec({})
    with pytest.raises(ValueError, match="frozen"):
        spec.mode = model.Mode.OBSERVE


# -- AllowedChange ----------------------------------------------------------------------


def allow(**fields: Any) -> AllowedChange:
    return AllowedChange.model_validate({"paths": ["/spec/replicas"], **fields})


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        pytest.param(allow(), 1_000_000, True, id="no-bounds-any-number"),
        pytest.param(allow(), "anything", True, id="no-bounds-any-string"),
        pytest.param(allow(), True, True, id="no-bounds-boolean"),
        pytest.param(allow(minimum=2, maximum=10), 2, True, id="at-minimum"),
        pytest.param(allow(minimum=2, maximum=10), 10, True, id="at-maximum"),
        pytest.param(allow(minimum=2, maximum=10), 1, False, id="below"),
        pytest.param(allow(minimum=2, maximum=10), 11, False, id="above"),
        pytest.param(allow(minimum=2, maximum=10), 2.5, True, id="float-within"),
        pytest.param(allow(minimum=2), 10**9, True, id="minimum-only"),
        pytest.param(allow(maximum=10), -5, True, id="maximum-only"),
        pytest.param(allow(minimum=0, maximum=1), True, False, id="true-is-not-a-number"),
        pytest.param(allow(minimum=0, maximum=1), False, False, id="false-is-not-a-number"),
        pytest.param(allow(minimum=0), "5", False, id="numeric-string-is-not-a-number"),
        pytest.param(allow(minimum=0), None, False, id="null"),
    ],
)
def test_is_within_bounds(rule: AllowedChange, value: Any, expected: bool) -> None:
    """Bounds are inclusive, apply to numbers only, and no bounds allow anything."""
    assert rule.is_within_bounds(value) is expected


@given(
    low=st.integers(-1000, 1000),
    span=st.integers(0, 1000),
    value=st.one_of(st.integers(-3000, 3000), st.floats(-3000, 3000, allow_nan=False)),
)
def test_is_within_bounds_is_inclusive_interval(low: int, span: int, value: float) -> None:
    """For any number, within bounds means minimum <= value <= maximum."""
    rule = allow(minimum=low, maximum=low + span)
    assert rule.is_within_bounds(value) is (low <= value <= low + span)


KEY = ObjectKey("apps", "v1", "Deployment", "staging", "web")


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        pytest.param(allow(), True, id="no-filters"),
        pytest.param(allow(kind="Deployment", name="web", apiVersion="apps/v1"), True, id="all-match"),
        pytest.param(allow(kind="StatefulSet"), False, id="other-kind"),
        pytest.param(allow(name="api"), False, id="other-name"),
        pytest.param(allow(apiVersion="apps/v1beta1"), False, id="other-api-version"),
        pytest.param(allow(apiVersion="v1"), False, id="version-without-group"),
    ],
)  # fmt: skip
def test_allowed_change_matches(rule: AllowedChange, expected: bool) -> None:
    """An allowed change applies to objects matching all its given filters."""
    assert rule.matches(KEY) is expected


# -- parse_duration ---------------------------------------------------------------------

UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


@given(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(sorted(UNITS))), min_size=1))
def test_parse_duration_sums_units(parts: list[tuple[int, str]]) -> None:
    """A duration is the sum of its number-unit parts, in seconds."""
    text = "".join(f"{number}{unit}" for number, unit in parts)
    expected = sum(number * UNITS[unit] for number, unit in parts)
    assert math.isclose(model.parse_duration(text), expected, rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("30s", 30, id="seconds"),
        pytest.param("10m", 600, id="minutes"),
        pytest.param("1h30m", 5400, id="compound"),
        pytest.param("500ms", 0.5, id="milliseconds"),
        pytest.param("1.5h", 5400, id="fraction"),
        pytest.param("1m1ms", 60.001, id="minute-then-millisecond"),
    ],
)
def test_parse_duration(text: str, expected: float) -> None:
    """Go-style durations read as seconds."""
    assert math.isclose(model.parse_duration(text), expected)


@pytest.mark.parametrize("text", ["", "10", "1d", "-1s", "1.s", ".5s", "10 m", "1H", "m"])
def test_parse_duration_rejects(text: str) -> None:
    """Anything but number-unit pairs is a ValueError that says what is allowed."""
    with pytest.raises(ValueError, match="is not a duration such as 30s, 10m or 1h"):
        model.parse_duration(text)


# -- ObjectKey --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("manifest", "expected", "text", "api_version"),
    [
        pytest.param({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "staging"}}, ObjectKey("apps", "v1", "Deployment", "staging", "web"), "Deployment/staging/web", "apps/v1", id="grouped"),
        pytest.param({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "s"}}, ObjectKey("", "v1", "ConfigMap", "s", "c"), "ConfigMap/s/c", "v1", id="core-group"),
        pytest.param({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "staging"}}, ObjectKey("", "v1", "Namespace", "", "staging"), "Namespace/staging", "v1", id="cluster-scoped"),
        pytest.param({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r", "namespace": None}}, ObjectKey("rbac.authorization.k8s.io", "v1", "ClusterRole", "", "r"), "ClusterRole/r", "rbac.authorization.k8s.io/v1", id="null-namespace"),
    ],
)  # fmt: skip
def test_object_key(
    manifest: dict[str, Any], expected: ObjectKey, text: str, api_version: str
) -> None:
    """ObjectKey.of reads the identity; it prints Kind/namespace/name and gives back apiVersion."""
    key = ObjectKey.of(manifest)

    assert key == expected
    assert str(key) == text
    assert key.api_version == api_version


def test_object_key_needs_a_name() -> None:
    """A manifest without metadata.name has no identity."""
    with pytest.raises(KeyError):
        ObjectKey.of({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})


def test_bounds_out_of_order_are_refused() -> None:
    """minimum above maximum is refused by the model too, not only by the CRD rule."""
    with pytest.raises(InvalidSpecError, match=r"spec\.allowedChanges\[0\]: minimum must be"):
        model.parse_spec({"allowedChanges": [{"paths": ["/a"], "minimum": 5, "maximum": 2}]})


def test_names_of_other_groups_may_be_path_segments() -> None:
    """RBAC names such as `system:Viewer` are not held to the DNS rule of the core groups."""
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole"}
    spec = model.parse_spec({"resources": [{**role, "metadata": {"name": "system:Viewer"}}]})
    assert spec.resources[0]["metadata"]["name"] == "system:Viewer"
