"""`driftguard exception create|list|end|approve`: DriftExceptions from the command line.

create writes one (the API server's schema and the operator judge it, as for kubectl);
list shows them with their phase, end and creator; end stops one before its time (the
operator then reverts what it held) and records who ended it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from driftguard.cli import inspection
from driftguard.cli.views import Refused, session, table
from driftguard.core import exception, model
from driftguard.core.attribution import APPROVAL_ANNOTATION
from driftguard.kube.client import KubeCluster
from driftguard.kube.cluster import ENVIRONMENTS

PATH = f"/apis/{model.GROUP}/{model.VERSION}"
FIELD_MANAGER = "driftguard-cli"


def manifest(
    environment: str,
    namespace: str,
    *,
    paths: list[str],
    reason: str,
    duration: str | None = None,
    until: str | None = None,
    obj: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """The DriftException `create` writes; its name, when none is given, is the server's."""
    change: dict[str, Any] = {"paths": paths}
    if obj:
        kind, _, object_name = obj.partition("/")
        if not kind or not object_name:
            raise Refused(f"--object {obj!r}: give KIND/NAME, e.g. Deployment/web")
        change |= {"kind": kind, "name": object_name}
    for field, value in (("minimum", minimum), ("maximum", maximum)):
        if value is not None:
            change[field] = value
    if (duration is None) == (until is None):
        raise Refused("give its end: --for DURATION (e.g. 4h) or --until RFC3339, one of them")
    if duration is not None and not exception.is_duration(duration):
        raise Refused(f"--for {duration!r}: a duration such as 30m or 4h")
    metadata: dict[str, Any] = {"namespace": namespace}
    metadata |= {"name": name} if name else {"generateName": f"{environment}-"}
    spec: dict[str, Any] = {
        "environmentRef": {"name": environment},
        "changes": [change],
        "reason": reason,
    }
    spec |= {"duration": duration} if duration else {"expiresAt": until}
    return {
        "apiVersion": f"{model.GROUP}/{model.VERSION}",
        "kind": exception.KIND,
        "metadata": metadata,
        "spec": spec,
    }


def exception_rows(items: list[dict[str, Any]], *, with_namespace: bool) -> list[list[str]]:
    header = ["NAME", "ENVIRONMENT", "PHASE", "EXPIRES", "CREATED BY", "REASON"]
    out = [["NAMESPACE", *header] if with_namespace else header]
    for item in items:
        meta, spec, status = item["metadata"], item.get("spec") or {}, item.get("status") or {}
        row = [
            meta["name"],
            str((spec.get("environmentRef") or {}).get("name") or "-"),
            str(status.get("phase") or "Pending"),
            str(status.get("expiresAt") or spec.get("expiresAt") or "-"),
            str(status.get("createdBy") or "-"),
            str(spec.get("reason") or "-"),
        ]
        out.append([meta["namespace"], *row] if with_namespace else row)
    return out


def create(environment: str, *, namespace: str | None, **fields: Any) -> int:
    ns = namespace or inspection.current_namespace()

    async def work(cluster: KubeCluster) -> int:
        body = manifest(environment, ns, **fields)
        if await cluster.get(ENVIRONMENTS, ns, environment) is None:
            raise Refused(f"Environment {ns}/{environment} not found")
        made = await cluster.connection.json(
            "POST",
            f"{PATH}/namespaces/{quote(ns)}/{exception.PLURAL}",
            body=body,
            query={"fieldManager": FIELD_MANAGER},
        )
        end = body["spec"].get("duration") or body["spec"].get("expiresAt")
        print(f"driftexception/{made['metadata']['name']} created in {ns}: for {end}")
        return 0

    return asyncio.run(session(work))


def show(*, namespace: str | None, all_namespaces: bool, output: str) -> int:
    async def work(cluster: KubeCluster) -> int:
        where = (
            ""
            if all_namespaces
            else f"/namespaces/{quote(namespace or inspection.current_namespace())}"
        )
        listed = await cluster.connection.json("GET", f"{PATH}{where}/{exception.PLURAL}")
        items = sorted(
            listed.get("items") or [],
            key=lambda i: (i["metadata"]["namespace"], i["metadata"]["name"]),
        )
        if output == "json":
            print(json.dumps(items, indent=2))
        elif not items:
            print("no DriftExceptions")
        else:
            sys.stdout.write(table(exception_rows(items, with_namespace=all_namespaces)))
        return 0

    return asyncio.run(session(work))


def end(name: str, *, namespace: str | None) -> int:
    async def annotations(cluster: KubeCluster) -> dict[str, str]:
        return {exception.ANNOTATION_ENDED: await cluster.whoami() or "unknown"}

    done = "ended: its drift is reverted (Enforce) or flagged now"
    return _annotate(name, namespace, annotations, done)


def approve(name: str, *, namespace: str | None) -> int:
    """A new approval value each time: the webhook stamps it with the approver."""

    async def annotations(cluster: KubeCluster) -> dict[str, str]:
        return {APPROVAL_ANNOTATION: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}

    return _annotate(name, namespace, annotations, "approved: in force once the operator sees who")


def _annotate(
    name: str,
    namespace: str | None,
    annotations: Callable[[KubeCluster], Awaitable[dict[str, str]]],
    done: str,
) -> int:
    ns = namespace or inspection.current_namespace()

    async def work(cluster: KubeCluster) -> int:
        patch = {"metadata": {"annotations": await annotations(cluster)}}
        await cluster.connection.json(
            "PATCH",
            f"{PATH}/namespaces/{quote(ns)}/{exception.PLURAL}/{quote(name)}",
            body=patch,
            content_type="application/merge-patch+json",
            query={"fieldManager": FIELD_MANAGER},
        )
        print(f"driftexception/{name} {done}")
        return 0

    return asyncio.run(session(work))
