"""inspection: `driftguard diff` reports what the operator reports, and never a Secret's values."""

from __future__ import annotations

import base64
import copy
import json
import os
import string
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftguard.cli import inspection
from driftguard.core import model, render
from driftguard.core.model import ObjectKey, State

from . import objects
from .objects import claim, disown, nest

KEY = ObjectKey("", "v1", "Secret", "staging", "db")
REDACTED = inspection.REDACTED


def secret(data: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "staging"},
        "type": "Opaque",
        **extra,
    }
    if data is not None:
        obj["data"] = data
    return obj


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("live", "expected"),
    [
        pytest.param(
            secret({"password": b64("hunter2"), "user": b64("app")}),
            secret({"password": REDACTED, "user": REDACTED}),
            id="data",
        ),
        pytest.param(
            secret(stringData={"token": "s3cr3t"}),
            secret(stringData={"token": REDACTED}),
            id="stringData",
        ),
        pytest.param(
            secret({"a": b64("1")}, stringData={"b": "2"}),
            secret({"a": REDACTED}, stringData={"b": REDACTED}),
            id="both",
        ),
        pytest.param(secret({}), secret({}), id="empty-data"),
        pytest.param(secret(), secret(), id="no-data"),
        pytest.param(secret(data=None, stringData=None), secret(stringData=None), id="null-data"),
        pytest.param(
            {"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "shown"}},
            {"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "shown"}},
            id="configmap-untouched",
        ),
    ],
)
def test_redact(live: dict[str, Any], expected: dict[str, Any]) -> None:
    """redact() hides Secret values and keeps their keys; other kinds pass through."""
    assert inspection.redact(live) == expected


def test_redact_does_not_mutate_input() -> None:
    """The live object keeps its values after being redacted for display."""
    live = secret({"password": b64("hunter2")}, stringData={"token": "s3cr3t"})
    before = copy.deepcopy(live)

    inspection.redact(live)

    assert live == before


def _with_last_applied(obj: dict[str, Any]) -> dict[str, Any]:
    """kubectl apply (client side) leaves the whole Secret, values included, in an annotation."""
    out = copy.deepcopy(obj)
    annotation = {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(obj)}
    out["metadata"]["annotations"] = annotation
    return out


@pytest.mark.parametrize(
    ("live", "wanted"),
    [
        pytest.param(
            secret({"password": b64("old-value-1")}),
            secret({"password": b64("new-value-2")}),
            id="value-changed",
        ),
        pytest.param(None, secret({"password": b64("new-value-2")}), id="missing"),
        pytest.param(
            secret(stringData={"token": "old-value-1"}),
            secret({"token": b64("new-value-2")}),
            id="stringData-to-data",
        ),
        pytest.param(
            _with_last_applied(secret({"password": b64("old-value-1")})),
            secret({"password": b64("new-value-2")}),
            id="last-applied-annotation",
        ),
    ],
)
def test_unified_never_shows_secret_values(
    live: dict[str, Any] | None, wanted: dict[str, Any]
) -> None:
    """The unified diff of two Secrets contains neither side's values, encoded or not."""
    text = inspection.unified(KEY, live, wanted)

    for value in ("old-value-1", "new-value-2", b64("old-value-1"), b64("new-value-2")):
        assert value not in text


def test_unified_shows_changed_secret_key() -> None:
    """A key added to a Secret shows in the diff, with its value redacted."""
    text = inspection.unified(
        KEY, secret({"a": b64("1")}), secret({"a": b64("1"), "added": b64("2")})
    )
    assert f"+  added: {REDACTED}" in text


def test_unified_shows_key_of_changed_secret_value() -> None:
    """A Secret whose value drifted still shows which key changed, without the value."""
    text = inspection.unified(
        KEY, secret({"password": b64("old-value-1")}), secret({"password": b64("new-value-2")})
    )
    assert "password" in text


def test_unified_shows_configmap_values() -> None:
    """Values of other kinds are shown, so the diff stays useful."""
    key = ObjectKey("", "v1", "ConfigMap", "staging", "c")
    live: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c"},
        "data": {"v": "5.6"},
    }
    wanted = copy.deepcopy(live)
    wanted["data"]["v"] = "5.7"

    text = inspection.unified(key, live, wanted)

    assert "-  v: '5.6'" in text
    assert "+  v: '5.7'" in text


def test_unified_hides_server_noise() -> None:
    """managedFields, resourceVersion and status do not show up as differences."""
    live = secret({"a": b64("1")})
    live["metadata"].update(resourceVersion="9", uid="u", managedFields=[{"manager": "x"}])
    live["status"] = {"x": 1}

    assert inspection.unified(KEY, live, secret({"a": b64("1")})) == ""


SECRET_VALUES = st.text(alphabet=string.ascii_letters + string.digits, min_size=6, max_size=20)


@given(
    old=st.dictionaries(st.sampled_from(["a", "b", "c"]), SECRET_VALUES, max_size=3),
    new=st.dictionaries(st.sampled_from(["a", "b", "d"]), SECRET_VALUES, max_size=3),
)
def test_unified_never_leaks_any_value(old: dict[str, str], new: dict[str, str]) -> None:
    """For any Secret values, in data or stringData, the diff shows none of them."""
    live = secret({k: b64("V" + v) for k, v in old.items()}, stringData={"s": "V" + "x" * 6})
    wanted = secret(stringData={k: "V" + v for k, v in new.items()})

    text = inspection.unified(KEY, live, wanted)

    for value in [*old.values(), *new.values()]:
        assert "V" + value not in text
        assert b64("V" + value) not in text


# -- which objects diff reports: the operator's own judging step ----------------------

WEB = ObjectKey("apps", "v1", "Deployment", "staging", "web")
OWNER = render.Owner(name="staging", namespace="platform")
"""The Environment whose labels the stored `web` Deployment carries."""

DESIRED: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "staging", "labels": {"app": "web", **OWNER.labels}},
    "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}},
}
REPLICAS_2_TO_10 = {"kind": "Deployment", "paths": ["/spec/replicas"], "minimum": 2, "maximum": 10}

Edit = Callable[[dict[str, Any]], None]


def spec(mode: str = "Enforce", *, suspend: bool = False, rules: int = 1) -> model.EnvironmentSpec:
    """An Environment spec for the `web` Deployment, with the replicas rule unless rules=0."""
    return model.parse_spec(
        {
            "mode": mode,
            "suspend": suspend,
            "resources": [DESIRED],
            "allowedChanges": [REPLICAS_2_TO_10] * rules,
        }
    )


def scale(replicas: int) -> Edit:
    """`kubectl scale`: the scale subresource takes spec.replicas from driftguard."""

    def edit(live: dict[str, Any]) -> None:
        live["spec"]["replicas"] = replicas
        disown(live, "f:spec", "f:replicas")
        claim(live, "kubectl", nest("f:spec", "f:replicas"), subresource="scale")

    return edit


def take_replicas(live: dict[str, Any]) -> None:
    """Another manager holds spec.replicas at the blueprint's value (scaled away and back)."""
    disown(live, "f:spec", "f:replicas")
    claim(live, "other", nest("f:spec", "f:replicas"), operation="Apply")


def relabel(live: dict[str, Any]) -> None:
    """The object carries another Environment's labels."""
    live["metadata"]["labels"][model.LABEL_ENVIRONMENT] = "prod"


def untouched(live: dict[str, Any]) -> None:
    pass


class Case(NamedTuple):
    spec: model.EnvironmentSpec
    edit: Edit | None  # None: the object is gone


class Expected(NamedTuple):
    state: State
    is_reported: bool


JUDGE_CASES = [
    pytest.param(Case(spec(), untouched), Expected(State.IN_SYNC, False), id="in-sync"),
    pytest.param(Case(spec(), scale(5)), Expected(State.OVERRIDDEN, False), id="within-bounds-enforce"),
    pytest.param(Case(spec("Observe"), scale(5)), Expected(State.OVERRIDDEN, False), id="within-bounds-observe"),
    pytest.param(Case(spec("Observe"), scale(12)), Expected(State.DRIFTED, True), id="out-of-bounds-observe"),
    pytest.param(Case(spec(), scale(12)), Expected(State.DRIFTED, True), id="out-of-bounds-enforce"),
    pytest.param(Case(spec(rules=0), scale(5)), Expected(State.DRIFTED, True), id="no-rule"),
    pytest.param(Case(spec("Observe", rules=0), take_replicas), Expected(State.IN_SYNC, False), id="taken-observe"),
    pytest.param(Case(spec(rules=0), take_replicas), Expected(State.DRIFTED, True), id="taken-enforce"),
    pytest.param(Case(spec(suspend=True, rules=0), take_replicas), Expected(State.IN_SYNC, False), id="taken-suspended"),
    pytest.param(Case(spec("Observe"), None), Expected(State.MISSING, True), id="missing-observe"),
    pytest.param(Case(spec(), None), Expected(State.MISSING, True), id="missing-enforce"),
    pytest.param(Case(spec(rules=0), relabel), Expected(State.CONFLICT, False), id="other-environment"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "expected"), JUDGE_CASES)
def test_judge_reports_what_the_operator_reports(case: Case, expected: Expected) -> None:
    """verdict_for() gives the operator's state, and only Drifted or Missing objects are reported."""
    live = None
    if case.edit is not None:
        live = objects.deployment()
        case.edit(live)

    verdict = inspection.verdict_for(
        key=WEB,
        owner=OWNER,
        spec=case.spec,
        desired=DESIRED,
        wanted=objects.deployment(),
        live=live,
    )

    assert (verdict.state, inspection.is_reported(verdict)) == expected


def without_replicas(manifest: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(manifest)
    del out["spec"]["replicas"]
    return out


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        pytest.param(Case(spec(), untouched), DESIRED, id="enforce-in-sync"),
        pytest.param(Case(spec(), scale(5)), without_replicas(DESIRED), id="enforce-within-bounds"),
        pytest.param(Case(spec(), scale(12)), DESIRED, id="enforce-out-of-bounds"),
        pytest.param(Case(spec(rules=0), scale(5)), DESIRED, id="enforce-no-rule"),
        pytest.param(Case(spec(), None), DESIRED, id="enforce-missing"),
        pytest.param(Case(spec("Observe"), untouched), render.without_owner_labels(DESIRED), id="observe-in-sync"),
        pytest.param(Case(spec("Observe"), scale(5)), render.without_owner_labels(without_replicas(DESIRED)), id="observe-within-bounds"),
        pytest.param(Case(spec(suspend=True), untouched), render.without_owner_labels(DESIRED), id="suspended"),
    ],
)  # fmt: skip
def test_trim_dry_runs_what_the_operator_holds(case: Case, expected: dict[str, Any]) -> None:
    """trim() leaves out tolerated fields, and in Observe driftguard's labels, from the dry-run."""
    live = None
    if case.edit is not None:
        live = objects.deployment()
        case.edit(live)

    assert inspection.trim(key=WEB, spec=case.spec, desired=DESIRED, live=live) == expected


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        pytest.param(Case(spec(), untouched), True, id="enforce-keeps-them"),
        pytest.param(Case(spec("Observe"), untouched), False, id="observe-drops-them"),
        pytest.param(Case(spec(suspend=True), untouched), False, id="suspended-drops-them"),
        pytest.param(Case(spec("Observe"), None), False, id="observe-missing"),
    ],
)
def test_comparable_shows_owner_labels_only_where_judged(case: Case, expected: bool) -> None:
    """comparable() leaves driftguard's labels out of both sides exactly where they are not judged."""
    live = None
    if case.edit is not None:
        live = objects.deployment()
        case.edit(live)

    shown_live, shown_wanted = inspection.comparable(
        spec=case.spec, live=live, wanted=objects.deployment()
    )

    for side in (shown_live, shown_wanted):
        if side is not None:
            labels = side["metadata"].get("labels") or {}
            assert (model.LABEL_ENVIRONMENT in labels) is expected
            assert labels.get("app") == "web"


# -- the kubeconfig's namespace, with the async client stack alone ------------------


def kubeconfig(namespace: str | None) -> str:
    context = {"cluster": "local", "user": "admin"}
    if namespace is not None:
        context["namespace"] = namespace
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            # Port 1 refuses connections at once: the CLI fails fast with exit code 2.
            "clusters": [{"name": "local", "cluster": {"server": "https://127.0.0.1:1"}}],
            "users": [{"name": "admin", "user": {"token": "t"}}],
            "contexts": [{"name": "local", "context": context}],
            "current-context": "local",
        }
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(kubeconfig("team-a"), "team-a", id="context-namespace"),
        pytest.param(kubeconfig(None), "default", id="no-namespace"),
        pytest.param(None, "default", id="no-kubeconfig"),
    ],
)
def test_current_namespace(
    content: str | None, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """current_namespace() is the current context's namespace, else `default`."""
    path = tmp_path / "kubeconfig"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("KUBECONFIG", str(path))

    assert inspection.current_namespace() == expected


def test_cli_diff_and_status_load_neither_kubernetes_nor_kopf(tmp_path: Path) -> None:
    """`driftguard diff` and `status` run on kubernetes_asyncio's configuration and REST client
    alone: the sync client, kopf and the generated API classes and models stay unloaded."""
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig("team-a"))
    script = textwrap.dedent(
        """
        import sys
        from driftguard.cli import main as cli
        codes = [cli.main(["diff", "app"]), cli.main(["status"])]
        loaded = sorted({m.split(".")[0] for m in sys.modules} & {"kubernetes", "kopf"})
        generated = [m for m in sys.modules if m.startswith(("kubernetes_asyncio.client.api.", "kubernetes_asyncio.client.models."))]
        print(codes, loaded, len(generated))
        """
    )
    # No in-cluster config and no proxy: the CLI must reach for the kubeconfig above alone.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KUBERNETES_") and "proxy" not in k.lower()
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**env, "KUBECONFIG": str(path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.stdout.strip() == "[2, 2] [] 0", done.stderr


DENY = {"type": "Prevention", "status": "True", "reason": "Deny"}


@pytest.mark.parametrize(
    ("spec", "conditions", "expected"),
    [
        ({}, [], ["Off", "-"]),
        ({"prevention": "Deny", "suspend": True}, [DENY], ["Deny", "yes"]),
        (
            {"prevention": "Warn", "suspendUntil": "2026-11-26T15:00:00Z"},
            [{"type": "Suspended", "status": "True"}, {**DENY, "reason": "Off"}],
            ["Off", "until 2026-11-26T15:00:00Z"],
        ),
        ({"suspendUntil": "2020-01-01T00:00:00Z"}, [], ["Off", "-"]),
        ({"prevention": "Off"}, [DENY], ["Deny", "-"]),
    ],
    ids=["defaults", "suspended", "suspended-until", "suspension-over", "off-not-yet"],
)
def test_status_row_shows_prevention_and_suspension(
    spec: dict[str, Any], conditions: list[dict[str, Any]], expected: list[str]
) -> None:
    """driftguard status ends each row with the prevention the API server enforces (the
    Prevention condition, not the spec) and the suspension."""
    env = {
        "metadata": {"name": "app", "namespace": "shop"},
        "spec": spec,
        "status": {"conditions": conditions},
    }

    assert inspection.status_row(env, with_namespace=False)[-2:] == expected


def test_status_wide_row_names_the_last_drift_and_its_person() -> None:
    """driftguard status -o wide ends each row with the last drift, when, and who made it."""
    last = {
        "time": "2026-12-06T10:00:00Z",
        "object": "ConfigMap/shop/db",
        "changedBy": "kubectl-patch",
        "changedByUser": "alice",
    }
    env = {
        "metadata": {"name": "app", "namespace": "shop"},
        "spec": {},
        "status": {"lastDrift": last},
    }

    row = inspection.status_row(env, with_namespace=False, wide=True)

    assert row[-3:] == ["ConfigMap/shop/db", "2026-12-06T10:00:00Z", "alice (kubectl-patch)"]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            {"changedBy": "kubectl-edit", "changedByUser": "bob", "lastDriftTime": "T1"},
            "changed by bob (kubectl-edit) at T1",
        ),
        ({"changedBy": "kubectl-edit"}, "changed by kubectl-edit"),
        ({}, "changed by unknown"),
    ],
    ids=["person", "field-manager-only", "nobody"],
)
def test_diff_names_who_changed_each_object(entry: dict[str, Any], expected: str) -> None:
    """driftguard diff heads each object's diff with the person the operator saw change it."""
    key = model.ObjectKey("", "v1", "ConfigMap", "shop", "db")
    listed = {"kind": "ConfigMap", "namespace": "shop", "name": "db", **entry}
    env = {
        "status": {"resources": [{"kind": "ConfigMap", "namespace": "shop", "name": "web"}, listed]}
    }

    assert inspection.changed_by(env, key) == expected
