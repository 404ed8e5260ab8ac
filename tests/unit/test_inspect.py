"""inspect: the `driftguard diff` view never shows a Secret's values."""

from __future__ import annotations

import base64
import copy
import json
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftguard import inspect
from driftguard.model import ObjectKey

KEY = ObjectKey("", "v1", "Secret", "staging", "db")
REDACTED = inspect.REDACTED


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
    assert inspect.redact(live) == expected


def test_redact_does_not_mutate_input() -> None:
    """The live object keeps its values after being redacted for display."""
    live = secret({"password": b64("hunter2")}, stringData={"token": "s3cr3t"})
    before = copy.deepcopy(live)

    inspect.redact(live)

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
    text = inspect.unified(KEY, live, wanted)

    for value in ("old-value-1", "new-value-2", b64("old-value-1"), b64("new-value-2")):
        assert value not in text


def test_unified_shows_changed_secret_key() -> None:
    """A key added to a Secret shows in the diff, with its value redacted."""
    text = inspect.unified(KEY, secret({"a": b64("1")}), secret({"a": b64("1"), "added": b64("2")}))
    assert f"+  added: {REDACTED}" in text


def test_unified_shows_key_of_changed_secret_value() -> None:
    """A Secret whose value drifted still shows which key changed, without the value."""
    text = inspect.unified(
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

    text = inspect.unified(key, live, wanted)

    assert "-  v: '5.6'" in text
    assert "+  v: '5.7'" in text


def test_unified_hides_server_noise() -> None:
    """managedFields, resourceVersion and status do not show up as differences."""
    live = secret({"a": b64("1")})
    live["metadata"].update(resourceVersion="9", uid="u", managedFields=[{"manager": "x"}])
    live["status"] = {"x": 1}

    assert inspect.unified(KEY, live, secret({"a": b64("1")})) == ""


SECRET_VALUES = st.text(alphabet=string.ascii_letters + string.digits, min_size=6, max_size=20)


@given(
    old=st.dictionaries(st.sampled_from(["a", "b", "c"]), SECRET_VALUES, max_size=3),
    new=st.dictionaries(st.sampled_from(["a", "b", "d"]), SECRET_VALUES, max_size=3),
)
def test_unified_never_leaks_any_value(old: dict[str, str], new: dict[str, str]) -> None:
    """For any Secret values, in data or stringData, the diff shows none of them."""
    live = secret({k: b64("V" + v) for k, v in old.items()}, stringData={"s": "V" + "x" * 6})
    wanted = secret(stringData={k: "V" + v for k, v in new.items()})

    text = inspect.unified(KEY, live, wanted)

    for value in [*old.values(), *new.values()]:
        assert "V" + value not in text
        assert b64("V" + value) not in text
