"""Who is behind a drift: the stamp on the object, else a record the webhook admitted.

The judges ask `who(key, live)` for the drift they report. A write is vouched for by
the object's own stamp when it is genuine and current; a delete or a scale has no
stamp, so its record is looked up: first in this replica's memory (its webhook admitted
it), then in the signed Events any replica's webhook leaves beside the object. Nothing
found is "unknown" (None): never an earlier person's name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from driftguard.core.attribution import Person, Signer
from driftguard.core.changes import ChangeSet
from driftguard.core.model import ObjectKey
from driftguard.kube import timestamps
from driftguard.kube.errors import ApiError
from driftguard.telemetry.logs import get as get_logger

RECORD_TTL_S = 120.0
"""How long a delete's or a scale's record may explain a drift seen after it."""

log = get_logger(__name__)


class Records(Protocol):
    async def tokens(self, namespace: str, kind: str, name: str) -> list[str]: ...

    async def post(
        self, involved: dict[str, Any], *, message: str, token: str, namespace: str
    ) -> None: ...

    async def is_managed(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> bool: ...


@dataclass(frozen=True, slots=True)
class Admitted:
    """A delete or a scale this replica's webhook let through."""

    person: Person
    uid: str
    detail: str  # a scale's replica count
    at: float  # monotonic


class Witness:
    def __init__(self, signer: Signer, records: Records | None = None) -> None:
        self.signer = signer
        self.records = records
        self._admitted: dict[ObjectKey, Admitted] = {}

    def remember(self, key: ObjectKey, admitted: Admitted) -> None:
        key, now = key._replace(version=""), time.monotonic()
        # Old ones go as new ones come: memory stays bounded by the writes of two minutes.
        for old in [k for k, a in self._admitted.items() if now - a.at > RECORD_TTL_S]:
            del self._admitted[old]
        self._admitted[key] = admitted

    async def who(self, key: ObjectKey, live: dict[str, Any] | None) -> Person | None:
        """The person behind the object's last change, or None when nothing vouches for one."""
        if live is not None:
            person = self.signer.stamped(live)
            if person is not None:
                return person
        uid = str(((live or {}).get("metadata") or {}).get("uid") or "")
        detail = _replicas(live)
        admitted = self._admitted.get(key._replace(version=""))
        if admitted is not None and _explains(admitted, live, uid, detail):
            return admitted.person
        if self.records is None:
            return None
        return await self._recorded(key, live, uid, detail)

    async def _recorded(
        self, key: ObjectKey, live: dict[str, Any] | None, uid: str, detail: str
    ) -> Person | None:
        namespace = key.namespace or "default"
        try:
            assert self.records is not None
            tokens = await self.records.tokens(namespace, key.kind, key.name)
        except ApiError as exc:
            log.warning("attribution_lookup_failed", object=str(key), error=exc.describe())
            return None
        for token in reversed(tokens):
            found = self.signer.read(token, object_key=str(key))
            if found is None:
                continue
            person, record_uid, record_detail = found
            admitted = Admitted(person, record_uid, record_detail, _age(person.at))
            if _explains(admitted, live, uid, detail):
                return person
        return None


async def attribute(
    witness: Witness | None, key: ObjectKey, judged: ChangeSet, live: dict[str, Any] | None
) -> ChangeSet:
    """The records, their drift naming the person behind it (None: attribution off) and
    when they wrote."""
    if not judged.drift:
        return judged
    person = await witness.who(key, live) if witness is not None else None
    return judged.attributed(person, live)


def _explains(admitted: Admitted, live: dict[str, Any] | None, uid: str, detail: str) -> bool:
    if time.monotonic() - admitted.at > RECORD_TTL_S:
        return False
    if live is None:
        return admitted.person.operation == "DELETE"
    return (
        admitted.person.subresource == "scale"
        and admitted.uid == uid
        and (admitted.detail == detail)
    )


def _replicas(live: dict[str, Any] | None) -> str:
    replicas = ((live or {}).get("spec") or {}).get("replicas")
    return "" if replicas is None else str(replicas)


def _age(at: str) -> float:
    """A record's RFC 3339 time as a monotonic moment, for the TTL."""
    return time.monotonic() - timestamps.seconds_ago(at)
