"""The attribution webhook: learns who writes a managed object, never refuses anyone.

The API server calls it (a MutatingWebhookConfiguration, failurePolicy Ignore, an
objectSelector on driftguard's labels, the operator's own identity excluded by a
matchCondition) for every write to a managed object. A create or an update is
stamped with a signed record of the person (core/attribution.py); a delete or a scale
cannot be, so its record is kept in memory and left signed in an Event beside the
object for the other replicas. Every answer allows the request: a failure inside
only costs the attribution, never the write.

kopf's own admission server routes each request to a handler by resource, registered
at start; the kinds a blueprint manages are open-ended, so this is a small aiohttp
app with one route, beside kopf.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import ssl
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from driftguard.core import attribution
from driftguard.core.attribution import Person, Signer
from driftguard.core.model import ObjectKey
from driftguard.kube import timestamps
from driftguard.kube.client import KubeCluster
from driftguard.kube.errors import ApiError
from driftguard.kube.records import AdmissionRecords
from driftguard.runtime.witness import Admitted, Witness
from driftguard.telemetry.logs import get as get_logger

PATH = "/attribution"
# The kinds whose scale subresource the API server may call about (the Scale names none).
SCALED_KINDS = {
    ("apps", "deployments"): "Deployment",
    ("apps", "statefulsets"): "StatefulSet",
    ("apps", "replicasets"): "ReplicaSet",
    ("", "replicationcontrollers"): "ReplicationController",
}
CERT_CHECK_S = 60.0

log = get_logger(__name__)


class AttributionWebhook:
    def __init__(self, witness: Witness, *, operator_user: str) -> None:
        self._witness = witness
        self._operator_user = operator_user

    async def review(self, review: dict[str, Any]) -> dict[str, Any]:
        """The AdmissionReview answer: always allowed, with a stamp where one fits."""
        request = review.get("request") or {}
        response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": True}
        try:
            patch = await self._attribute(request)
        except Exception as exc:
            log.warning("attribution_failed", error=repr(exc))
            patch = None
        if patch:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
        return {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": response,
        }

    async def _attribute(self, request: dict[str, Any]) -> list[dict[str, Any]] | None:
        user = request.get("userInfo") or {}
        username = str(user.get("username") or "")
        if request.get("dryRun") or not username or username == self._operator_user:
            return None
        operation = str(request.get("operation") or "")
        subresource = str(request.get("subResource") or "")
        person = Person(
            user=username,
            groups=tuple(str(g) for g in user.get("groups") or ()),
            operation=operation,
            subresource=subresource,
            manager=str((request.get("options") or {}).get("fieldManager") or ""),
            at=timestamps.precise(),
        )
        obj = request.get("object")
        if operation in ("CREATE", "UPDATE") and not subresource and isinstance(obj, dict):
            return self._stamp(obj, request.get("oldObject"), person)
        if operation == "DELETE" and not subresource:
            await self._admitted(request, request.get("oldObject") or {}, person, "deleted")
        elif operation == "UPDATE" and subresource == "scale" and isinstance(obj, dict):
            await self._admitted(request, obj, person, "scaled")
        return None

    def _stamp(
        self, obj: dict[str, Any], old: dict[str, Any] | None, person: Person
    ) -> list[dict[str, Any]] | None:
        signer = self._witness.signer
        if _token(obj) and _token(obj) == _token(old) and signer.stamped(obj) is not None:
            return None  # the stored content is as its stamp's person left it: theirs still
        # Any other stamp the request carries was not stored through this webhook: a copy,
        # or one asked of the webhook directly. The requester's own replaces it.
        token = signer.stamp(obj, person)
        annotations = (obj.get("metadata") or {}).get("annotations")
        if isinstance(annotations, dict):
            path = "/metadata/annotations/" + attribution.ANNOTATION.replace("/", "~1")
            return [{"op": "add", "path": path, "value": token}]
        return [
            {"op": "add", "path": "/metadata/annotations", "value": {attribution.ANNOTATION: token}}
        ]

    async def _admitted(
        self, request: dict[str, Any], obj: dict[str, Any], person: Person, verb: str
    ) -> None:
        resource = request.get("resource") or {}
        group = str(resource.get("group") or "")
        kind = str((request.get("kind") or {}).get("kind") or "")
        if person.subresource == "scale":
            kind = SCALED_KINDS.get((group, str(resource.get("resource") or "")), "")
            if not kind:
                return
        namespace = str(request.get("namespace") or "")
        name = str(request.get("name") or "")
        key = ObjectKey(group, "", kind, namespace, name)
        records = self._witness.records
        version, plural = str(resource.get("version") or ""), str(resource.get("resource") or "")
        if person.subresource and (
            records is None or not await records.is_managed(group, version, plural, namespace, name)
        ):
            return  # the scale of an object driftguard does not manage: nothing to keep
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        replicas = (obj.get("spec") or {}).get("replicas") if person.subresource else None
        detail = "" if replicas is None else str(replicas)
        self._witness.remember(key, Admitted(person, uid, detail, time.monotonic()))
        if records is None:
            return
        token = self._witness.signer.record(person, uid=uid, object_key=str(key), detail=detail)
        involved = {
            "apiVersion": f"{group}/{version}" if group else version,
            "kind": kind,
            "name": name,
            "namespace": namespace,
            "uid": uid,
        }
        by = attribution.describe(person.user, person.manager)
        message = f"{key} {verb} by {by}" + (f" to {detail} replicas" if detail else "")
        try:
            # Before the answer: the record is there when the watch tells of the change.
            await records.post(
                involved, message=message, token=token, namespace=namespace or "default"
            )
        except ApiError as exc:
            log.warning("attribution_record_failed", object=str(key), error=exc.describe())

    async def handle(self, request: web.Request) -> web.Response:
        try:
            review = await request.json()
        except ValueError:
            return web.json_response({"error": "an AdmissionReview is expected"}, status=400)
        return web.json_response(await self.review(review))


def _token(obj: dict[str, Any] | None) -> str:
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(attribution.ANNOTATION) or "")


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


async def serve(
    webhook: AttributionWebhook, *, port: int, cert: Path, key: Path, host: str = "0.0.0.0"
) -> web.AppRunner:
    """Serves the webhook over HTTPS; a renewed certificate is picked up within a minute."""
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post(PATH, webhook.handle)
    app.router.add_get("/healthz", _healthy)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = tls_context(cert, key)
    await web.TCPSite(runner, host, port, ssl_context=context).start()
    app["reload"] = asyncio.create_task(reload_certificate(context, cert, key, serving="webhook"))
    log.info("webhook_serving", port=port, path=PATH)
    return runner


async def reload_certificate(
    context: ssl.SSLContext, cert: Path, key: Path, *, serving: str
) -> None:
    """New handshakes use a renewed certificate (cert-manager, or the chart's rotation)."""
    seen = _mtime(cert)
    while True:
        await asyncio.sleep(CERT_CHECK_S)
        try:
            changed = _mtime(cert)
            if changed != seen:
                context.load_cert_chain(cert, key)
                seen = changed
                log.info("certificate_reloaded", serving=serving)
        except (OSError, ssl.SSLError) as exc:
            log.warning("certificate_unreadable", serving=serving, error=repr(exc))


async def start_webhook(
    *, port: int, cert_dir: str, key_file: str | None, cluster: KubeCluster, operator_user: str
) -> tuple[Witness, web.AppRunner]:
    """The witness the judges ask, and the webhook that tells it, serving."""
    if key_file:
        key = _read_key(Path(key_file))
    else:
        # One replica needs no shared key; a stamp it wrote is not believed after a restart.
        key = secrets.token_bytes(32)
        log.warning("attribution_key_generated", hint="replicas need --attribution-key-file")
    witness = Witness(Signer(key), AdmissionRecords(cluster))
    webhook = AttributionWebhook(witness, operator_user=operator_user)
    folder = Path(cert_dir)
    runner = await serve(webhook, port=port, cert=folder / "tls.crt", key=folder / "tls.key")
    return witness, runner


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def _read_key(path: Path) -> bytes:
    return path.read_bytes().strip()


async def _healthy(_: web.Request) -> web.Response:
    return web.Response(text="ok")
