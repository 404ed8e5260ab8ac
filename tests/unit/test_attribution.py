"""Attribution: signed stamps and records, the webhook's answers, the witness's verdicts."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
import pytest

from driftguard.core import attribution
from driftguard.core.attribution import Person, Signer
from driftguard.core.changes import Change, ChangeSet, Outcome
from driftguard.core.model import ObjectKey
from driftguard.runtime.admission import AttributionWebhook
from driftguard.runtime.witness import Witness

KEY = b"k" * 32
OPERATOR = "system:serviceaccount:driftguard-system:driftguard"
ALICE = Person(user="alice", groups=("dev",), operation="UPDATE", manager="kubectl-patch")


def configmap(value: str = "5.7", *, name: str = "db", uid: str = "u-1") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": "staging",
            "uid": uid,
            "resourceVersion": "10",
            "labels": {"app.kubernetes.io/managed-by": "driftguard"},
        },
        "data": {"DB_VERSION": value},
    }


def stamped(obj: dict[str, Any], person: Person, signer: Signer) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"].setdefault("annotations", {})[attribution.ANNOTATION] = signer.stamp(
        obj, person
    )
    return out


def review(
    operation: str, obj: dict[str, Any] | None, *, user: str = "alice", **request: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "r-1",
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "namespace": "staging",
            "name": "db",
            "operation": operation,
            "userInfo": {"username": user, "groups": ["dev", "system:authenticated"]},
            "object": obj,
            "options": {"fieldManager": "kubectl-patch"},
            **request,
        },
    }


def patched(obj: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    ops = json.loads(base64.b64decode(answer["response"]["patch"]))
    return jsonpatch.apply_patch(obj, ops)


def user_of(person: Person | None) -> str | None:
    return person.user if person is not None else None


def test_a_stamp_names_its_person_while_the_content_is_what_they_wrote() -> None:
    signer = Signer(KEY)
    obj = stamped(configmap(), ALICE, signer)
    person = signer.stamped(obj)
    assert person is not None
    assert (person.user, person.groups) == ("alice", ("dev",))
    # Fields no person writes (resourceVersion, status, a controller's annotation) change nothing.
    obj["metadata"]["resourceVersion"] = "11"
    obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "2"
    assert signer.stamped(obj) == person


@pytest.mark.parametrize(
    "tamper",
    [
        lambda o: o["data"].update(DB_VERSION="5.5"),  # a later write, not stamped
        lambda o: o["metadata"].update(uid="u-2"),  # the stamp of another object
        lambda o: o["metadata"].update(name="other"),
        lambda o: o["metadata"]["labels"].update(x="y"),
    ],
)
def test_a_stamp_that_does_not_match_the_content_names_nobody(tamper: Any) -> None:
    signer = Signer(KEY)
    obj = stamped(configmap(), ALICE, signer)
    tamper(obj)
    assert signer.stamped(obj) is None


def test_a_create_stamp_binds_the_name_and_content_before_the_uid_is_given() -> None:
    signer = Signer(KEY)
    created = stamped(configmap(uid=""), ALICE, signer)
    stored = copy.deepcopy(created)
    stored["metadata"]["uid"] = "u-9"  # given by the API server after admission
    person = signer.stamped(stored)
    assert person is not None
    assert person.user == "alice"
    stored["data"]["DB_VERSION"] = "5.5"
    assert signer.stamped(stored) is None
    moved = copy.deepcopy(created)
    moved["metadata"].update(name="other", uid="u-10")
    assert signer.stamped(moved) is None


def test_an_environment_stamp_covers_its_spec_not_what_kopf_and_the_operator_add() -> None:
    signer = Signer(KEY)
    env = {
        "apiVersion": "driftguard.io/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": "staging", "namespace": "team", "uid": "e-1"},
        "spec": {"mode": "Enforce", "resources": []},
    }
    obj = stamped(env, ALICE, signer)
    obj["metadata"]["finalizers"] = ["kopf.zalando.org/KopfFinalizerMarker"]
    obj["metadata"]["annotations"]["kopf.zalando.org/last-handled-configuration"] = "{}"
    obj["status"] = {"revision": 1}
    assert signer.stamped(obj) == ALICE
    obj["spec"]["mode"] = "Observe"
    assert signer.stamped(obj) is None


def test_a_forged_or_foreign_stamp_names_nobody() -> None:
    signer = Signer(KEY)
    obj = stamped(configmap(), ALICE, signer)
    token = obj["metadata"]["annotations"][attribution.ANNOTATION]
    body, mac = token.split(".")
    # Another user's name in the payload, the signature kept.
    forged = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged["u"] = "bob"
    forged_body = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
    for bad in (f"{forged_body}.{mac}", "garbage", "a.b", token + "x", ""):
        obj["metadata"]["annotations"][attribution.ANNOTATION] = bad
        assert signer.stamped(obj) is None
    # A genuine stamp made with another key (another installation) is not believed either.
    other = stamped(configmap(), ALICE, Signer(b"o" * 32))
    assert signer.stamped(other) is None


def test_a_secret_value_never_shows_in_the_stamp() -> None:
    signer = Signer(KEY)
    secret = {
        "kind": "Secret",
        "metadata": {"name": "s", "uid": "u"},
        "data": {"p": "aHVudGVyMg=="},
    }
    token = signer.stamp(secret, ALICE)
    body = token.split(".")[0]
    decoded = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    assert "aHVudGVyMg" not in decoded
    assert "hunter2" not in decoded


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Signer(b"short")


async def test_the_webhook_stamps_an_update_with_the_requester() -> None:
    witness = Witness(Signer(KEY))
    webhook = AttributionWebhook(witness, operator_user=OPERATOR)
    answer = await webhook.review(review("UPDATE", configmap("5.5")))
    response = answer["response"]
    assert (response["allowed"], response["uid"]) == (True, "r-1")
    stored = patched(configmap("5.5"), answer)
    person = witness.signer.stamped(stored)
    assert person is not None
    assert (person.user, person.operation, person.manager) == ("alice", "UPDATE", "kubectl-patch")


async def test_a_copied_stamp_is_replaced_by_the_requesters_own() -> None:
    """Mallory copies alice's stamp onto her own write: the webhook names mallory."""
    signer = Signer(KEY)
    webhook = AttributionWebhook(Witness(signer), operator_user=OPERATOR)
    alices = stamped(configmap("5.7"), ALICE, signer)
    mallorys = copy.deepcopy(alices)
    mallorys["data"]["DB_VERSION"] = "5.5"
    stored = patched(mallorys, await webhook.review(review("UPDATE", mallorys, user="mallory")))
    person = signer.stamped(stored)
    assert person is not None
    assert person.user == "mallory"


async def test_a_write_that_leaves_the_content_as_stamped_keeps_the_stamp() -> None:
    """A controller touching metadata only: the last person stays the one named."""
    signer = Signer(KEY)
    webhook = AttributionWebhook(Witness(signer), operator_user=OPERATOR)
    stored = stamped(configmap(), ALICE, signer)
    obj = copy.deepcopy(stored)
    obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "3"
    controller = "system:serviceaccount:kube-system:x"
    answer = await webhook.review(review("UPDATE", obj, user=controller, oldObject=stored))
    assert "patch" not in answer["response"]


async def test_a_stamp_asked_of_the_webhook_directly_does_not_survive_a_real_write() -> None:
    """Mallory posts a review claiming alice wrote 5.5, then writes 5.5 with that stamp."""
    signer = Signer(KEY)
    webhook = AttributionWebhook(Witness(signer), operator_user=OPERATOR)
    direct = await webhook.review(review("UPDATE", configmap("5.5"), user="alice"))
    planted = patched(configmap("5.5"), direct)
    assert signer.stamped(planted) is not None  # a genuine signature, for that content

    real = review("UPDATE", planted, user="mallory", oldObject=configmap("5.7"))
    person = signer.stamped(patched(planted, await webhook.review(real)))
    assert person is not None
    assert person.user == "mallory"


@pytest.mark.parametrize(
    ("user", "extra"),
    [(OPERATOR, {}), ("alice", {"dryRun": True}), ("", {})],
)
async def test_the_operator_a_dry_run_and_nobody_are_not_stamped(
    user: str, extra: dict[str, Any]
) -> None:
    webhook = AttributionWebhook(Witness(Signer(KEY)), operator_user=OPERATOR)
    answer = await webhook.review(review("UPDATE", configmap(), user=user, **extra))
    assert answer["response"] == {"uid": "r-1", "allowed": True}


async def test_a_broken_request_is_still_allowed() -> None:
    webhook = AttributionWebhook(Witness(Signer(KEY)), operator_user=OPERATOR)
    answer = await webhook.review({"request": {"uid": "r-9", "userInfo": "not a map"}})
    assert answer["response"] == {"uid": "r-9", "allowed": True}


async def test_a_delete_is_remembered_and_explains_the_missing_object() -> None:
    witness = Witness(Signer(KEY))
    webhook = AttributionWebhook(witness, operator_user=OPERATOR)
    key = ObjectKey("", "v1", "ConfigMap", "staging", "db")
    assert await witness.who(key, None) is None
    await webhook.review(review("DELETE", None, oldObject=configmap()))
    assert user_of(await witness.who(key, None)) == "alice"
    # A delete explains a missing object, not a changed one.
    assert await witness.who(key, configmap("5.5")) is None


class Records:
    """The Events the webhook leaves, in memory: what another replica would list."""

    def __init__(self, managed: set[str]) -> None:
        self.managed = managed
        self.posted: list[tuple[dict[str, Any], str, str]] = []

    async def post(
        self, involved: dict[str, Any], *, message: str, token: str, namespace: str
    ) -> None:
        self.posted.append((involved, message, token))

    async def tokens(self, namespace: str, kind: str, name: str) -> list[str]:
        return [t for i, _, t in self.posted if (i["kind"], i["name"]) == (kind, name)]

    async def is_managed(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> bool:
        return name in self.managed


async def test_another_replica_finds_a_delete_in_the_signed_event() -> None:
    records = Records(managed=set())
    webhook = AttributionWebhook(Witness(Signer(KEY), records), operator_user=OPERATOR)
    await webhook.review(review("DELETE", None, oldObject=configmap()))
    ((involved, message, _),) = records.posted
    assert (involved["kind"], involved["uid"]) == ("ConfigMap", "u-1")
    assert message == "ConfigMap/staging/db deleted by alice (kubectl-patch)"
    other = Witness(Signer(KEY), records)  # nothing in its memory
    key = ObjectKey("", "v1", "ConfigMap", "staging", "db")
    assert user_of(await other.who(key, None)) == "alice"
    # An Event written by anyone else (no genuine signature) names nobody.
    records.posted[0] = (involved, message, "forged.token")
    assert await other.who(key, None) is None


async def test_a_scale_is_remembered_for_that_replica_count() -> None:
    records = Records(managed={"web"})
    witness = Witness(Signer(KEY), records)
    webhook = AttributionWebhook(witness, operator_user=OPERATOR)
    scale = {"kind": "Scale", "metadata": {"name": "web", "uid": "d-1"}, "spec": {"replicas": 7}}
    request = review(
        "UPDATE",
        scale,
        user="bob",
        subResource="scale",
        kind={"group": "autoscaling", "version": "v1", "kind": "Scale"},
        resource={"group": "apps", "version": "v1", "resource": "deployments"},
        name="web",
    )
    await webhook.review(request)
    key = ObjectKey("apps", "v1", "Deployment", "staging", "web")
    deployment = {"kind": "Deployment", "metadata": {"name": "web", "uid": "d-1"}}
    assert user_of(await witness.who(key, {**deployment, "spec": {"replicas": 7}})) == "bob"
    assert await witness.who(key, {**deployment, "spec": {"replicas": 3}}) is None
    # The scale of an object driftguard does not manage leaves nothing behind.
    await webhook.review({**request, "request": {**request["request"], "name": "other"}})
    assert len(records.posted) == 1


def test_the_sentence_names_the_person_and_the_tool() -> None:
    key = ObjectKey("", "v1", "ConfigMap", "staging", "db")
    change = Change(key, Outcome.REVERTED, ("/data/DB_VERSION",), "kubectl-patch")
    assert change.describe().endswith("by kubectl-patch")
    alice = Person("alice", at="2026-12-06T10:00:00.250Z")
    named = ChangeSet.of(change, Change(key, Outcome.CREATED)).attributed(alice)
    assert named.changes[0].describe().endswith("by alice (kubectl-patch)")
    assert named.changes[0].changed_at == "2026-12-06T10:00:00.250Z"
    assert named.changes[1].changed_by_user is None  # only drift is somebody's
    assert ChangeSet.of(change).attributed(None).changes[0].changed_by_user is None


def test_without_a_person_the_write_time_is_the_field_managers() -> None:
    key = ObjectKey("", "v1", "ConfigMap", "staging", "db")
    change = Change(key, Outcome.FLAGGED, ("/data/DB_VERSION",), "kubectl-patch")
    live = {
        "metadata": {
            "managedFields": [
                {"manager": "driftguard", "time": "2026-12-06T11:00:00Z"},
                {"manager": "kubectl-patch", "time": "2026-12-06T09:00:00Z"},
                {"manager": "kubectl-patch", "time": "2026-12-06T10:00:00Z"},
            ]
        }
    }
    (found,) = ChangeSet.of(change).attributed(None, live)
    assert (found.changed_by_user, found.changed_at) == (None, "2026-12-06T10:00:00Z")
    nobody = Change(key, Outcome.FLAGGED, ("/data/X",))  # a removed field names no manager
    assert ChangeSet.of(nobody).attributed(None, live).changes[0].changed_at is None


def test_a_create_by_generate_name_is_stamped_before_its_name_is_made() -> None:
    signer = Signer(KEY)
    asked = configmap(name="", uid="")
    asked["metadata"]["generateName"] = "db-"
    token = signer.stamp(asked, ALICE)
    stored = copy.deepcopy(asked)
    stored["metadata"] |= {"name": "db-x7k2p", "uid": "u-3"}
    stored["metadata"]["annotations"] = {attribution.ANNOTATION: token}
    person = signer.stamped(stored)
    assert person is not None
    assert person.user == "alice"
    stored["metadata"]["name"] = "other"  # not a name made from its generateName
    assert signer.stamped(stored) is None
