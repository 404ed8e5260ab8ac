"""Declared: an Environment's spec parsed once, with its defaults and what an invalid one still tells."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from driftguard.core.declared import Declared


def body(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "shop", "name": "staging", "generation": 3}, "spec": spec}


def test_a_valid_spec_is_parsed_once_with_its_defaults() -> None:
    """The target namespace defaults to the Environment's own; prevention is Off; Orphan."""
    declared = Declared.of(body(resources=[]))

    assert declared.error is None
    assert declared.spec is not None
    assert (declared.ident, declared.generation) == (("shop", "staging"), 3)
    assert declared.target_namespace == "shop"
    assert declared.is_prevention_off
    assert not declared.deletes_objects
    assert declared.blueprint is None


def test_set_fields_come_from_the_typed_spec() -> None:
    """Target, Blueprint, pinned revision, prevention and deletion policy as written."""
    declared = Declared.of(
        body(
            targetNamespace="shop-staging",
            blueprintRef={"name": "db", "revision": 2},
            prevention="Deny",
            deletionPolicy="Delete",
            serviceAccountName="deployer",
        )
    )

    assert declared.spec is not None
    assert declared.target_namespace == "shop-staging"
    assert (declared.blueprint, declared.pinned_revision) == ("db", 2)
    assert not declared.is_prevention_off
    assert declared.deletes_objects
    assert declared.service_account_name == "deployer"


@pytest.mark.parametrize(
    ("spec", "target", "blueprint"),
    [
        ({"mode": 7, "targetNamespace": "elsewhere"}, "elsewhere", None),
        ({"resyncInterval": "1ms", "blueprintRef": {"name": "db"}}, "shop", "db"),
        ({"targetNamespace": ["not", "a", "string"]}, "shop", None),
    ],
    ids=["bad-mode", "bad-resync", "target-not-a-string"],
)
def test_an_invalid_spec_keeps_its_error_and_where_it_writes(
    spec: dict[str, Any], target: str, blueprint: str | None
) -> None:
    """Refused by the model: the error is kept, and sharding still finds its target."""
    declared = Declared.of(body(**spec))

    assert declared.spec is None
    assert declared.error is not None
    assert str(declared.error).startswith("spec.")
    assert declared.target_namespace == target
    assert declared.blueprint == blueprint


def test_the_parsed_spec_is_kept_while_the_generation_is_the_same() -> None:
    """A status write (same uid, same generation) reuses the parse, and the copy of the
    spec it was made from; a new generation or a new object with the same name is parsed
    again, even to an invalid spec."""
    first = {**body(targetNamespace="a"), "metadata": {**body()["metadata"], "uid": "u1"}}
    seen = Declared.of(first)
    status_only = {**first, "spec": copy.deepcopy(first["spec"]), "status": {"revision": 2}}
    again = Declared.of(status_only, like=seen)
    assert again.spec is seen.spec
    assert again.body["spec"] is first["spec"]  # one copy of the same spec is kept
    assert again.body["status"] is status_only["status"]
    assert again.body["metadata"] is status_only["metadata"]

    bumped = {**first, "metadata": {**first["metadata"], "generation": 4}, "spec": {"mode": "X"}}
    changed = Declared.of(bumped, like=seen)
    assert changed.spec is None
    assert changed.error is not None

    recreated = {**first, "metadata": {**first["metadata"], "uid": "u2"}, "spec": {}}
    assert Declared.of(recreated, like=seen).target_namespace == "shop"


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"prevention": "Deny"},
        {"prevention": "Warn", "deletionPolicy": "Orphan"},
        {"deletionPolicy": "Delete"},
        {"prevention": "Off", "deletionPolicy": "Delete", "resources": []},
        {"prevention": "Bogus"},
        {"deletionPolicy": "Delete", "mode": 7},
    ],
)
def test_what_deletion_needs_reads_the_same_unparsed(spec: dict[str, Any]) -> None:
    """kopf asks at every event whether a deletion leaves something (its finalizer): the
    raw spec's answer is the parsed one's, for a valid spec and an invalid one alike."""
    parsed, raw = Declared.of(body(**spec)), Declared.unparsed(body(**spec))

    assert not raw.is_parsed
    assert (raw.deletes_objects, raw.is_prevention_off) == (
        parsed.deletes_objects,
        parsed.is_prevention_off,
    )


def test_what_is_kept_between_events_lists_each_kind_and_namespace_once() -> None:
    """The body kept has one status entry per apiVersion, kind and namespace (what a pass
    lists for leftovers); the spec, metadata, conditions and the rest stay as received."""
    entry = {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "shop", "state": "InSync"}
    entries = [{**entry, "name": f"cm-{i}"} for i in range(50)]
    entries += [
        {**entry, "kind": "Service", "name": "web"},
        {**entry, "namespace": "other", "name": "x"},
    ]
    received = body(resources=[])
    received["status"] = {
        "conditions": [{"type": "Ready", "status": "True"}],
        "revision": 4,
        "resources": entries,
    }
    declared = Declared.of(received)

    kept = declared.kept()

    assert kept.spec is declared.spec
    assert kept.body["spec"] is received["spec"]
    assert kept.body["metadata"] is received["metadata"]
    status = kept.body["status"]
    assert (status["conditions"], status["revision"]) == (received["status"]["conditions"], 4)
    assert [(e["kind"], e["namespace"], e["name"]) for e in status["resources"]] == [
        ("ConfigMap", "shop", "cm-0"),
        ("Service", "shop", "web"),
        ("ConfigMap", "other", "x"),
    ]
    assert len(received["status"]["resources"]) == 52  # the received body is left as it was
    assert kept.kept() is kept  # nothing more to cut
    assert Declared.of(body(resources=[])).kept().body == body(resources=[])
