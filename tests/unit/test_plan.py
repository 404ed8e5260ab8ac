"""plan: the state of one object and what its mode does about it."""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftguard.core import diff, plan
from driftguard.core.diff import MISSING, ChangeKind, Drift, FieldChange
from driftguard.core.model import AllowedChange, Mode, ObjectKey, State, parse_spec
from driftguard.core.plan import Action

from . import objects

KEY = ObjectKey("apps", "v1", "Deployment", "staging", "web")
IMAGE = "/spec/template/spec/containers/0/image"
ENFORCE, OBSERVE = Mode.ENFORCE, Mode.OBSERVE

DESIRED: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "staging", "labels": {"app": "web"}},
    "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27.3"}]},
        },
    },
}


def allow(**fields: Any) -> AllowedChange:
    return AllowedChange.model_validate(fields)


REPLICAS_2_TO_10 = allow(
    kind="Deployment", name="web", paths=["/spec/replicas"], minimum=2, maximum=10
)
ANY_IMAGE = allow(paths=[IMAGE])


def live(replicas: int = 3, image: str = "nginx:1.27.3") -> dict[str, Any]:
    obj = objects.deployment()
    obj["spec"]["replicas"] = replicas
    obj["spec"]["template"]["spec"]["containers"][0]["image"] = image
    return obj


def scaled(before: int, after: int, kind: ChangeKind = ChangeKind.CHANGED) -> FieldChange:
    return FieldChange("/spec/replicas", kind, before, after, "kubectl")


def imaged(after: str) -> FieldChange:
    return FieldChange(IMAGE, ChangeKind.CHANGED, "nginx:1.27.3", after, "kubectl-set")


class Case(NamedTuple):
    mode: Mode
    live: dict[str, Any] | None
    changes: tuple[FieldChange, ...] = ()
    rules: tuple[AllowedChange, ...] = ()
    recent_reverts: int = 0
    is_fighting: bool = False
    is_due: bool = True


class Expected(NamedTuple):
    state: State
    action: Action
    pointers: tuple[str, ...] = ()
    tolerated: frozenset[str] = frozenset()


LIMIT = plan.FIGHT_LIMIT
REPLICAS = frozenset({"/spec/replicas"})

CASES = [
    pytest.param(Case(ENFORCE, None), Expected(State.MISSING, Action.RECREATE), id="missing-enforce-recreates"),
    pytest.param(Case(OBSERVE, None), Expected(State.MISSING, Action.FLAG), id="missing-observe-flags"),
    pytest.param(Case(ENFORCE, live()), Expected(State.IN_SYNC, Action.NONE), id="in-sync"),
    pytest.param(Case(ENFORCE, live(5), (scaled(3, 5),)), Expected(State.DRIFTED, Action.REVERT, ("/spec/replicas",)), id="drift-enforce-reverts"),
    pytest.param(Case(OBSERVE, live(5), (scaled(3, 5),)), Expected(State.DRIFTED, Action.FLAG, ("/spec/replicas",)), id="drift-observe-flags"),
    pytest.param(Case(ENFORCE, live(5), (scaled(3, 5),), (REPLICAS_2_TO_10,)), Expected(State.OVERRIDDEN, Action.NONE, (), REPLICAS), id="allowed-within-bounds-enforce"),
    pytest.param(Case(OBSERVE, live(5), (scaled(3, 5),), (REPLICAS_2_TO_10,)), Expected(State.OVERRIDDEN, Action.NONE, (), REPLICAS), id="allowed-within-bounds-observe"),
    pytest.param(Case(ENFORCE, live(10), (scaled(3, 10),), (REPLICAS_2_TO_10,)), Expected(State.OVERRIDDEN, Action.NONE, (), REPLICAS), id="allowed-at-maximum"),
    pytest.param(Case(ENFORCE, live(11), (scaled(3, 11),), (REPLICAS_2_TO_10,)), Expected(State.DRIFTED, Action.REVERT, ("/spec/replicas",)), id="above-maximum-enforce"),
    pytest.param(Case(OBSERVE, live(1), (scaled(3, 1),), (REPLICAS_2_TO_10,)), Expected(State.DRIFTED, Action.FLAG, ("/spec/replicas",)), id="below-minimum-observe"),
    pytest.param(Case(ENFORCE, live(image="evil:latest"), (imaged("evil:latest"),), (ANY_IMAGE,)), Expected(State.OVERRIDDEN, Action.NONE, (), frozenset({IMAGE})), id="no-bounds-any-value"),
    pytest.param(Case(ENFORCE, live(image="x"), (imaged("x"),), (allow(paths=[IMAGE], minimum=1),)), Expected(State.DRIFTED, Action.REVERT, (IMAGE,)), id="bounds-on-a-string"),
    pytest.param(Case(ENFORCE, live(5), (scaled(3, 5),), (allow(name="db", paths=["/spec/replicas"]),)), Expected(State.DRIFTED, Action.REVERT, ("/spec/replicas",)), id="rule-for-another-name"),
    pytest.param(Case(ENFORCE, live(5), (scaled(3, 5),), (allow(kind="StatefulSet", paths=["/spec/replicas"]),)), Expected(State.DRIFTED, Action.REVERT, ("/spec/replicas",)), id="rule-for-another-kind"),
    pytest.param(Case(ENFORCE, live(5), (scaled(3, 5),), (allow(apiVersion="apps/v1beta2", paths=["/spec/replicas"]),)), Expected(State.DRIFTED, Action.REVERT, ("/spec/replicas",)), id="rule-for-another-api-version"),
    pytest.param(Case(ENFORCE, live(image="y"), (imaged("y"),), (allow(paths=["/spec/template"]),)), Expected(State.OVERRIDDEN, Action.NONE, (), frozenset({"/spec/template"})), id="parent-path-covers-child"),
    pytest.param(Case(ENFORCE, live(5, "z"), (scaled(3, 5), imaged("z")), (REPLICAS_2_TO_10,)), Expected(State.DRIFTED, Action.REVERT, (IMAGE,), REPLICAS), id="tolerated-beside-drift"),
    pytest.param(Case(ENFORCE, live(5), (scaled(3, 5),), (), LIMIT - 1), Expected(State.DRIFTED, Action.REVERT, ("/spec/replicas",)), id="below-fight-limit"),
    pytest.param(Case(ENFORCE, live(5), (scaled(3, 5),), (), LIMIT), Expected(State.FIGHTING, Action.REVERT, ("/spec/replicas",)), id="fighting-at-limit-due"),
    pytest.param(Case(ENFORCE, live(5), (scaled(3, 5),), (), LIMIT, is_due=False), Expected(State.FIGHTING, Action.DEFER, ("/spec/replicas",)), id="fighting-waits-for-backoff"),
    pytest.param(Case(ENFORCE, live(5), (scaled(3, 5),), (), 0, is_fighting=True, is_due=False), Expected(State.FIGHTING, Action.DEFER, ("/spec/replicas",)), id="still-fighting-after-window"),
    pytest.param(Case(ENFORCE, live(), (), (), LIMIT, is_fighting=True, is_due=False), Expected(State.IN_SYNC, Action.NONE), id="fighting-but-in-sync"),
    pytest.param(Case(OBSERVE, live(5), (scaled(3, 5),), (), LIMIT * 2), Expected(State.DRIFTED, Action.FLAG, ("/spec/replicas",)), id="observe-never-fights"),
    pytest.param(Case(ENFORCE, live(), (scaled(3, 3, ChangeKind.TAKEN),)), Expected(State.DRIFTED, Action.REVERT, ("/spec/replicas",)), id="taken-enforce-reclaims"),
    pytest.param(Case(OBSERVE, live(), (scaled(3, 3, ChangeKind.TAKEN),)), Expected(State.IN_SYNC, Action.NONE), id="taken-observe-is-in-sync"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "expected"), CASES)
def test_decide(case: Case, expected: Expected) -> None:
    """decide() gives each situation its state, action, drifted pointers and tolerated paths."""
    verdict = plan.decide(
        key=KEY,
        mode=case.mode,
        desired=DESIRED,
        live=case.live,
        drift=Drift(case.changes),
        rules=case.rules,
        recent_reverts=case.recent_reverts,
        is_fighting=case.is_fighting,
        is_due=case.is_due,
    )

    assert verdict.state is expected.state
    assert verdict.action is expected.action
    assert tuple(verdict.pointers) == expected.pointers
    assert verdict.tolerated == expected.tolerated


@pytest.mark.parametrize(
    ("mode", "replicas", "expected"),
    [
        pytest.param(ENFORCE, None, State.MISSING, id="missing"),
        pytest.param(ENFORCE, 3, State.IN_SYNC, id="in-sync"),
        pytest.param(ENFORCE, 5, State.OVERRIDDEN, id="within-bounds"),
        pytest.param(OBSERVE, 12, State.DRIFTED, id="out-of-bounds"),
    ],
)
def test_judge_computes_the_drift_then_decides(
    mode: Mode, replicas: int | None, expected: State
) -> None:
    """judge() is decide() on the drift of the live object from the stored expectation."""
    stored = objects.deployment()
    found = None
    if replicas is not None:
        found = objects.deployment()
        found["spec"]["replicas"] = replicas
    expectation = diff.expect(stored)
    facts: dict[str, Any] = {"key": KEY, "mode": mode, "desired": DESIRED, "live": found}
    facts["rules"] = [REPLICAS_2_TO_10]

    verdict = plan.judge(expectation=expectation, **facts)

    drift = diff.compute(expectation, found) if found is not None else Drift()
    assert verdict == plan.decide(drift=drift, **facts)
    assert verdict.state is expected


@pytest.mark.parametrize(
    ("mode", "suspend", "expected"),
    [
        pytest.param("Enforce", False, ENFORCE, id="enforce"),
        pytest.param("Enforce", True, OBSERVE, id="enforce-suspended"),
        pytest.param("Observe", False, OBSERVE, id="observe"),
        pytest.param("Observe", True, OBSERVE, id="observe-suspended"),
    ],
)
def test_mode_of(mode: str, suspend: bool, expected: Mode) -> None:
    """mode_of() is the spec's mode, except that a suspended Environment only reports."""
    spec = parse_spec({"mode": mode, "suspend": suspend, "resources": [DESIRED]})

    assert plan.mode_of(spec) is expected


@pytest.mark.parametrize(
    ("live_obj", "changes", "expected"),
    [
        pytest.param(
            live(20),
            (FieldChange("/spec/replicas", ChangeKind.CHANGED, 3, 20, "kubectl-edit"),),
            "kubectl-edit",
            id="from-the-diff",
        ),
        pytest.param(live(20), (), "kubectl", id="last-writer-when-diff-is-silent"),
    ],
)
def test_bounds_breach_names_manager(
    live_obj: dict[str, Any], changes: tuple[FieldChange, ...], expected: str
) -> None:
    """An out-of-bounds value names the diff's manager, else the object's last writer."""
    objects.claim(live_obj, "kubectl", objects.nest("f:spec", "f:replicas"), subresource="scale")

    verdict = plan.decide(
        key=KEY,
        mode=ENFORCE,
        desired=DESIRED,
        live=live_obj,
        drift=Drift(changes),
        rules=[REPLICAS_2_TO_10],
    )

    assert [(c.pointer, c.expected, c.actual) for c in verdict.drifted] == [
        ("/spec/replicas", 3, 20)
    ]
    assert verdict.changed_by == expected


def test_allowed_path_taken_back_to_blueprint_value_is_not_reverted() -> None:
    """An allowed field scaled away and back (now owned by kubectl) is not reverted."""
    verdict = plan.decide(
        key=KEY,
        mode=ENFORCE,
        desired=DESIRED,
        live=live(3),
        drift=Drift((scaled(3, 3, ChangeKind.TAKEN),)),
        rules=[REPLICAS_2_TO_10],
    )

    assert (verdict.action, verdict.pointers) == (Action.NONE, [])


def test_tolerate_reports_breach_values() -> None:
    """tolerate() returns in-bounds paths as tolerated and out-of-bounds ones as breaches."""
    rules = [REPLICAS_2_TO_10, ANY_IMAGE]

    tolerated, breaches = plan.tolerate(rules, DESIRED, live(12, "nginx:2"))

    assert tolerated == frozenset({IMAGE})
    assert [(b.pointer, b.kind, b.expected, b.actual) for b in breaches] == [
        ("/spec/replicas", ChangeKind.CHANGED, 3, 12)
    ]


def test_tolerating_nothing_is_one_shared_empty_set() -> None:
    """Most objects tolerate nothing; each kept its own empty frozenset (216 bytes)."""
    first = plan.tolerate([REPLICAS_2_TO_10], DESIRED, live(3))[0]
    second = plan.tolerate([], DESIRED, live(12))[0]

    assert first == frozenset()
    assert first is second is plan.NOTHING


# -- without ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pointers", "expected"),
    [
        pytest.param({"/spec/replicas"}, {"spec": {"template": {}}, "metadata": {"labels": {"app.kubernetes.io/name": "web"}}}, id="map-field"),
        pytest.param({"/metadata/labels/app.kubernetes.io~1name"}, {"spec": {"replicas": 3, "template": {}}, "metadata": {"labels": {}}}, id="escaped-key"),
        pytest.param({"/spec/paused"}, {"spec": {"replicas": 3, "template": {}}, "metadata": {"labels": {"app.kubernetes.io/name": "web"}}}, id="absent-field"),
        pytest.param({"/status/replicas"}, {"spec": {"replicas": 3, "template": {}}, "metadata": {"labels": {"app.kubernetes.io/name": "web"}}}, id="absent-parent"),
        pytest.param({"/spec/replicas", "/spec/template"}, {"spec": {}, "metadata": {"labels": {"app.kubernetes.io/name": "web"}}}, id="several"),
    ],
)  # fmt: skip
def test_without_removes_tolerated_fields(pointers: set[str], expected: dict[str, Any]) -> None:
    """without() drops the tolerated fields and nothing else."""
    manifest = {
        "spec": {"replicas": 3, "template": {}},
        "metadata": {"labels": {"app.kubernetes.io/name": "web"}},
    }
    assert plan.without(manifest, frozenset(pointers)) == expected


def test_without_does_not_mutate_input() -> None:
    """without() works on a copy; the blueprint is left as it was."""
    manifest = copy.deepcopy(DESIRED)

    trimmed = plan.without(manifest, frozenset({"/spec/replicas", "/metadata/labels/app"}))

    assert manifest == DESIRED
    assert "replicas" not in trimmed["spec"]


def test_without_nothing_is_identity() -> None:
    """With no tolerated pointers the manifest itself comes back."""
    assert plan.without(DESIRED, frozenset()) is DESIRED


def test_without_removes_list_item_by_index() -> None:
    """A tolerated pointer ending in a list index drops that item; a bad index drops none."""
    manifest = {"spec": {"ports": [{"port": 80}, {"port": 443}]}}

    kept = {"spec": {"ports": [{"port": 443}]}}

    assert plan.without(manifest, frozenset({"/spec/ports/0"})) == kept
    assert plan.without(manifest, frozenset({"/spec/ports/-", "/spec/ports/2"})) == manifest


def test_without_removes_field_inside_list_item() -> None:
    """A tolerated pointer through a list index is removed from the manifest."""
    trimmed = plan.without(DESIRED, frozenset({IMAGE}))

    assert trimmed["spec"]["template"]["spec"]["containers"] == [{"name": "web"}]


# -- pointer_get ----------------------------------------------------------------------

DOC: dict[str, Any] = {
    "spec": {"replicas": 3, "ports": [{"port": 80}, {"port": 443}]},
    "metadata": {"labels": {"app.kubernetes.io/name": "web", "a~b": "tilde", "~1": "literal"}},
    "": {"": "empty keys"},
}


@pytest.mark.parametrize(
    ("pointer", "expected"),
    [
        pytest.param("", DOC, id="whole-document"),
        pytest.param("/spec/replicas", 3, id="field"),
        pytest.param("/spec/ports/1/port", 443, id="list-index"),
        pytest.param("/metadata/labels/app.kubernetes.io~1name", "web", id="escaped-slash"),
        pytest.param("/metadata/labels/a~0b", "tilde", id="escaped-tilde"),
        pytest.param("/metadata/labels/~01", "literal", id="tilde-decoded-after-slash"),
        pytest.param("//", "empty keys", id="empty-keys"),
        pytest.param("/spec/paused", MISSING, id="absent"),
        pytest.param("/spec/ports/2", MISSING, id="index-out-of-range"),
        pytest.param("/spec/ports/-", MISSING, id="dash"),
        pytest.param("/spec/ports/01", MISSING, id="leading-zero-is-no-index"),
        pytest.param("/spec/replicas/x", MISSING, id="through-a-scalar"),
    ],
)
def test_pointer_get(pointer: str, expected: Any) -> None:
    """pointer_get() follows RFC 6901, returning MISSING where nothing is."""
    assert plan.pointer_get(DOC, pointer) == expected


@given(st.lists(st.text(alphabet="ab/~0", max_size=4), min_size=1, max_size=4), st.integers())
def test_pointer_get_round_trips_escaped_tokens(tokens: list[str], value: int) -> None:
    """Any key, escaped per RFC 6901, leads pointer_get back to its value."""
    doc: Any = value
    for token in reversed(tokens):
        doc = {token: doc}
    pointer = "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)

    assert plan.pointer_get(doc, pointer) == value


@pytest.mark.parametrize(
    ("round_", "expected"),
    [(1, 5.0), (2, 10.0), (3, 20.0), (7, 300.0), (20, 300.0)],
    ids=["first", "doubles", "doubles-again", "capped", "stays-capped"],
)
def test_fight_delay(round_: int, expected: float) -> None:
    """Reverts while fighting wait 5 s, doubling per revert, never more than 5 minutes."""
    assert plan.fight_delay(round_) == expected


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (allow(paths=["/spec/replicas"], minimum=2, maximum=10), []),
        (allow(paths=["/spec/replicas"]), []),
        (allow(paths=["/spec/absent"], minimum=1), []),
        (
            allow(paths=["/spec/template/spec/containers/0/image"], maximum=3),
            [
                "spec.allowedChanges[0]: minimum/maximum need a number at /spec/template/spec/containers/0/image, but the blueprint's Deployment/staging/web holds a str there"
            ],
        ),
    ],
    ids=["number", "no-bounds", "path-not-in-blueprint", "string"],
)
def test_misplaced_bounds(rule: AllowedChange, expected: list[str]) -> None:
    """Bounds on a field the blueprint holds as a string are refused, naming the rule and path."""
    assert plan.misplaced_bounds([rule], {KEY: DESIRED}) == expected
