"""Admission records kept as Events beside the object: a delete's or a scale's person.

A replica's webhook may admit a delete of an object another replica acts on. The
record goes where every replica can read it: a core/v1 Event on the object, signed
(core/attribution.py), so an Event anyone else writes names nobody.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from driftguard.core import attribution, model
from driftguard.kube import timestamps
from driftguard.kube.client import KubeCluster
from driftguard.kube.errors import ApiError, naming_request


class AdmissionRecords:
    def __init__(self, cluster: KubeCluster) -> None:
        self._connection = cluster.connection

    async def post(
        self, involved: dict[str, Any], *, message: str, token: str, namespace: str
    ) -> None:
        now = timestamps.now()
        body = {
            "metadata": {
                "generateName": f"{involved['name']}.",
                "namespace": namespace,
                "annotations": {attribution.ANNOTATION: token},
            },
            "involvedObject": involved,
            "reason": attribution.EVENT_REASON,
            "message": message[:1024],
            "type": "Normal",
            "source": {"component": model.FIELD_MANAGER},
            "reportingComponent": model.FIELD_MANAGER,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        with naming_request("create", "Event", namespace):
            await self._connection.json(
                "POST", f"/api/v1/namespaces/{quote(namespace)}/events", body=body
            )

    async def tokens(self, namespace: str, kind: str, name: str) -> list[str]:
        """The signed records on Events about this object, newest last (unverified)."""
        fields = f"involvedObject.kind={kind},involvedObject.name={name}"
        fields += f",reason={attribution.EVENT_REASON}"
        with naming_request("list", "Event", namespace):
            found = await self._connection.json(
                "GET",
                f"/api/v1/namespaces/{quote(namespace)}/events",
                query={"fieldSelector": fields},
            )
        items = sorted(found.get("items") or [], key=lambda e: str(e.get("lastTimestamp") or ""))
        return [
            str((item.get("metadata", {}).get("annotations") or {}).get(attribution.ANNOTATION))
            for item in items
        ]

    async def is_managed(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> bool:
        """Whether the object carries driftguard's labels (a scale request names none)."""
        base = f"/apis/{group}/{version}" if group else f"/api/{version}"
        path = f"{base}/namespaces/{quote(namespace)}/{plural}/{quote(name)}"
        try:
            with naming_request("get", plural, namespace):
                found = await self._connection.json("GET", path)
        except ApiError as exc:
            if exc.is_not_found:
                return False
            raise
        labels = (found.get("metadata") or {}).get("labels") or {}
        return labels.get(model.LABEL_MANAGED_BY) == model.FIELD_MANAGER
