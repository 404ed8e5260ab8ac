"""Who made a change: signed records the admission webhook writes and the operator reads.

The webhook learns the person from the API server's admission request
(`request.userInfo`). It stamps an object it admits with a record of who, when, the
object's uid and a keyed digest of the admitted content, signed with the operator's
attribution key. The operator believes a stamp only when the signature verifies and
the digest matches the object the watch delivered: a stamp copied from another
object, or left behind by an earlier write, names nobody. A delete or a scale cannot
be stamped (the object goes, or the request is a Scale): their records travel signed
in an Event beside the object instead, bound to its uid (and the replica count).

Pure: hashing and signing only; the time is passed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from driftguard.core.model import GROUP

ANNOTATION = f"{GROUP}/changed-by"
"""The stamp on a managed object: the last person whose write changed its content."""
EVENT_REASON = "ChangeAdmitted"
APPROVAL_ANNOTATION = f"{GROUP}/approved"
"""Written by `driftguard exception approve` (a new value each time), stamped with the approver."""
"""The reason of the Event that carries a delete's or a scale's record."""
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
# Written by controllers beside any person's write; they are no part of what was admitted.
_VOLATILE_ANNOTATIONS = (f"{GROUP}/", "deployment.kubernetes.io/")
_VERSION = 1


@dataclass(frozen=True, slots=True)
class Person:
    """Who wrote, as the API server authenticated them, and how."""

    user: str
    groups: tuple[str, ...] = ()
    operation: str = ""  # CREATE, UPDATE, DELETE; a scale is UPDATE of scale
    subresource: str = ""
    manager: str = ""  # the request's field manager, when the client gave one
    at: str = ""  # RFC 3339, when the webhook admitted it

    @property
    def is_service_account(self) -> bool:
        return self.user.startswith(SERVICE_ACCOUNT_PREFIX)


def describe(user: str | None, manager: str | None) -> str:
    """`alice (kubectl-patch)`, `alice`, `kubectl-patch`, or empty: the "by" of a sentence."""
    if user and manager:
        return f"{user} ({manager})"
    return user or manager or ""


class Signer:
    """Signs and checks records with the key every replica shares."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the attribution key must be at least 16 bytes")
        self._key = key

    def digest(self, obj: dict[str, Any], *, uid: str | None = None) -> str:
        """A keyed digest of what a person can change: it reveals nothing of a Secret.

        `uid`: the one to bind instead of the object's (empty for a create's stamp: the
        API server gives the uid after admission)."""
        meta = obj.get("metadata") or {}
        bound = {
            "namespace": meta.get("namespace") or "",
            "name": meta.get("name") or "",
            "uid": (meta.get("uid") or "") if uid is None else uid,
        }
        if str(obj.get("apiVersion") or "").startswith(f"{GROUP}/"):
            # driftguard's own resources: a person writes the spec, while kopf and the
            # operator write their metadata (finalizers, annotations) after them.
            content: dict[str, Any] = {"spec": obj.get("spec"), "metadata": bound}
            approval = (meta.get("annotations") or {}).get(APPROVAL_ANNOTATION)
            if approval is not None:
                # An approval is a person's act too: its stamp names the approver.
                content["approval"] = approval
        else:
            annotations = {
                k: v
                for k, v in (meta.get("annotations") or {}).items()
                if not k.startswith(_VOLATILE_ANNOTATIONS)
            }
            content = {
                k: v for k, v in obj.items() if k not in ("apiVersion", "metadata", "status")
            }
            content["metadata"] = {
                **bound,
                "labels": meta.get("labels") or {},
                "annotations": annotations,
                "finalizers": meta.get("finalizers") or [],
                "ownerReferences": meta.get("ownerReferences") or [],
            }
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(self._key, canonical, hashlib.sha256).hexdigest()[:32]

    def stamp(self, obj: dict[str, Any], person: Person) -> str:
        """The annotation value that attributes this content of this object to person."""
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        return self._sign({**_fields(person), "uid": uid, "d": self.digest(obj)})

    def stamped(self, obj: dict[str, Any]) -> Person | None:
        """The person behind the object's content, if its stamp is genuine and current."""
        token = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
        record = self._open(token)
        if record is None:
            return None
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        bound = str(record.get("uid") or "")
        # A create's stamp names no uid (none is given yet): it binds the name and content.
        if bound not in (uid, "") or record.get("d") not in self._digests(obj, bound):
            return None
        return _person(record)

    def _digests(self, obj: dict[str, Any], uid: str) -> list[str]:
        found = [self.digest(obj, uid=uid)]
        meta = obj.get("metadata") or {}
        prefix = meta.get("generateName")
        if not uid and prefix and str(meta.get("name") or "").startswith(prefix):
            # Admission sees a generateName create before the name is made: no name then.
            unnamed = {**obj, "metadata": {**meta, "name": ""}}
            found.append(self.digest(unnamed, uid=uid))
        return found

    def record(self, person: Person, *, uid: str, object_key: str, detail: str = "") -> str:
        """A delete's or a scale's record: bound to the object's uid, key and detail."""
        return self._sign({**_fields(person), "uid": uid, "k": object_key, "x": detail})

    def read(self, token: str | None, *, object_key: str) -> tuple[Person, str, str] | None:
        """A genuine record for this object: the person, the uid and the detail it holds."""
        record = self._open(token)
        if record is None or record.get("k") != object_key:
            return None
        return _person(record), str(record.get("uid") or ""), str(record.get("x") or "")

    def _sign(self, record: dict[str, Any]) -> str:
        payload = json.dumps({"v": _VERSION, **record}, sort_keys=True, separators=(",", ":"))
        body = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
        mac = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return f"{body}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"

    def _open(self, token: object) -> dict[str, Any] | None:
        if not isinstance(token, str) or token.count(".") != 1:
            return None
        body, mac = token.split(".")
        expected = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        try:
            given = base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4))
            if not hmac.compare_digest(expected, given):
                return None
            record = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (binascii.Error, ValueError):
            return None
        if not isinstance(record, dict) or record.get("v") != _VERSION:
            return None
        return record


def _fields(person: Person) -> dict[str, Any]:
    return {
        "u": person.user,
        "g": list(person.groups),
        "op": person.operation,
        "sub": person.subresource,
        "m": person.manager,
        "at": person.at,
    }


def _person(record: dict[str, Any]) -> Person:
    return Person(
        user=str(record.get("u") or ""),
        groups=tuple(str(g) for g in record.get("g") or ()),
        operation=str(record.get("op") or ""),
        subresource=str(record.get("sub") or ""),
        manager=str(record.get("m") or ""),
        at=str(record.get("at") or ""),
    )
