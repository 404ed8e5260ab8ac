"""kopf decorators only: each one hands the Environment to the engine.

`on.event` stores nothing on the object, so driftguard writes no annotations
and GitOps tools see no diff. The one stateful handler, deletion with
deletionPolicy Delete, keeps kopf's progress in status and uses our finalizer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from driftguard.core import exception, model
from driftguard.core.blueprint import BLUEPRINT_PLURAL
from driftguard.core.declared import Declared
from driftguard.kube.client import KubeCluster
from driftguard.runtime import admission, membership, probes, standby
from driftguard.runtime.engine import Engine
from driftguard.runtime.guard import Settings as GuardSettings
from driftguard.telemetry.logs import get as get_logger

log = get_logger(__name__)

_RESOURCE = (model.GROUP, model.VERSION, model.PLURAL)

WATCH_GRACE_S = 120.0
"""How long a watch may stay down before the liveness probe fails."""


@kopf.on.startup()
async def on_startup(memo: kopf.Memo, **_: Any) -> None:
    cluster = await KubeCluster.connect()
    # Prevention lets the operator's own writes through: it must know its name.
    guard = GuardSettings(
        operator_user=await cluster.whoami(),
        break_glass_groups=tuple(memo.get("break_glass_groups") or ()),
    )
    witness = None
    webhook = memo.get("webhook")
    if webhook is not None:
        witness, memo.webhook_runner = await admission.start_webhook(
            port=webhook.port,
            cert_dir=webhook.cert_dir,
            key_file=webhook.key_file,
            cluster=cluster,
            operator_user=guard.operator_user,
        )
    memo.engine = Engine(
        cluster,
        witness=witness,
        namespaced=bool(memo.get("namespaced")),
        tenancy=memo.get("tenancy"),
        guard=guard,
        history_namespace=memo.get("history_namespace") or "driftguard-system",
        max_exception_s=memo.get("max_exception_s") or exception.DEFAULT_MAX_S,
        exception_approvers=memo.get("exception_approvers") or "",
        allow_exec=bool(memo.get("allow_kubeconfig_exec")),
    )
    memo.cluster = cluster
    if memo.get("sharding"):
        share = memo.sharding
        memo.shards, memo.membership = await membership.start(
            cluster,
            memo.engine,
            replica=share.replica,
            namespace=share.namespace,
            duration=share.duration,
        )
    health: probes.Probes = memo.probes
    if memo.get("peering"):
        memo.standby = asyncio.create_task(
            standby.follow(
                cluster,
                memo.engine,
                name=memo.peering,
                namespaces=memo.get("namespaces") or (),
                identity=memo.identity,
                priority=memo.priority,
                lifetime=memo.peering_lifetime,
                on_role=lambda outranked: health.role(standing_by=outranked),
            )
        )
    # Every Environment there now must be taken up before the replica is ready (what kopf
    # hands over before this list answers is remembered, probes.py).
    health.list_at_start(cluster, memo.get("namespaces") or ())
    health.started(memo.engine, lease=memo.get("shards"))


class NoDiffBase(kopf.DiffBaseStorage):
    """No last-handled state: to kopf, every event of an Environment holds the same essence.

    kopf keeps it for on.create/on.update handlers' diffs, and driftguard has none (deletion
    needs only the finalizer). Kept, it was a second copy of every spec in the Environment's
    status (`status.kopf.lastHandledConfiguration`), written once per generation, carried by
    every read, watch event and status write of it, and a deep copy of the whole body made
    at every event on every replica."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return {}

    def fetch(self, *, body: Any) -> Any:
        return {}

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


def configure_kopf(kopf_settings: kopf.OperatorSettings) -> None:
    kopf_settings.persistence.finalizer = f"{model.GROUP}/finalizer"
    kopf_settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf")
    kopf_settings.persistence.diffbase_storage = NoDiffBase()
    # driftguard posts its own Events, with the contract's reasons.
    kopf_settings.posting.enabled = False
    kopf_settings.posting.level = logging.WARNING
    kopf_settings.watching.server_timeout = 600
    kopf_settings.networking.request_timeout = 60


@kopf.on.cleanup()
async def on_cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.probes.close()
    if memo.get("standby") is not None:
        memo.standby.cancel()
    if memo.get("membership") is not None:
        await memo.membership.leave()  # stop acting, and let the others take over at once
        memo.shards.close()
    await memo.engine.close()
    if memo.get("webhook_runner") is not None:
        await memo.webhook_runner.cleanup()
    await memo.cluster.close()


@kopf.on.event(*_RESOURCE)
async def on_environment_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    # The edge: the spec is parsed here, once per generation; nothing below reads it raw.
    body = dict(event.get("object") or {})
    shards = memo.get("shards")
    if shards is not None and not shards.wants(body):
        declared = Declared.unparsed(body)  # another replica's: kept slim, never parsed here
    else:
        declared = Declared.of(body, like=_seen(memo, body))
    try:
        await _environment_event(event, memo, declared)
    finally:  # dealt with, whatever came of it: readiness no longer waits for it
        memo.probes.taken_up(declared.ident)


async def _environment_event(event: kopf.RawEvent, memo: kopf.Memo, declared: Declared) -> None:
    shards = memo.get("shards")
    if event.get("type") == "DELETED":
        ident = declared.ident
        is_mine = shards is None or ident in memo.engine.environments or shards.owns(declared)
        if shards is not None:
            shards.environment_deleted(ident)
        memo.engine.forget(ident)
        if is_mine and _leaves_something(declared):
            await _delete_unfinalized(memo, declared)
        return
    if shards is not None:  # replicas share the work: only this one's share is acted on
        await shards.environment_changed(declared)
        return
    await memo.engine.environment_changed(declared)


@kopf.on.event(model.GROUP, model.VERSION, BLUEPRINT_PLURAL)
async def on_blueprint_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    body = event.get("object") or {}
    if event.get("type") == "DELETED":
        await memo.engine.blueprint_deleted(body.get("metadata", {}).get("name", ""))
        return
    await memo.engine.blueprint_changed(body)


@kopf.on.event(model.GROUP, model.VERSION, exception.PLURAL)
async def on_exception_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    body = dict(event.get("object") or {})
    await memo.engine.exception_changed(body, deleted=event.get("type") == "DELETED")


def _seen(memo: kopf.Memo, body: dict[str, Any]) -> Declared | None:
    """The Environment as this replica last received it, if it keeps it."""
    meta = body.get("metadata") or {}
    ident = (str(meta.get("namespace")), str(meta.get("name")))
    shards = memo.get("shards")
    if shards is not None and (kept := shards.seen(ident)) is not None:
        return kept  # type: ignore[no-any-return]
    environment = memo.engine.environments.get(ident)
    return environment.declared if environment is not None else None


async def _delete_unfinalized(memo: kopf.Memo, body: Declared) -> None:
    """An Environment deleted before kopf put its finalizer on (right after its creation,
    while the first pass still ran) never reaches `delete_objects` below: clean up now.
    After a normal deletion this finds nothing left to delete."""
    try:
        await memo.engine.delete_objects(body)
    except RuntimeError as exc:
        log.warning("delete_objects_failed", error=str(exc))


def _leaves_something(declared: Declared) -> bool:
    """Objects to delete (deletionPolicy Delete) or an admission policy to remove."""
    return declared.deletes_objects or not declared.is_prevention_off


def _deletion_leaves_something(spec: Mapping[str, Any], **_: Any) -> bool:
    # kopf asks this twice at every event of every Environment (is there a handler for it,
    # must it keep a finalizer): read from the raw spec, as for one not parsed, never a
    # parse of the whole blueprint (at 500 Environments, 1,000 parses at each start).
    return _leaves_something(Declared.unparsed({"metadata": {}, "spec": dict(spec)}))


@kopf.on.delete(*_RESOURCE, when=_deletion_leaves_something)
async def delete_objects(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    raw = {"metadata": dict(body.metadata), "spec": dict(body.spec), "status": dict(body.status)}
    declared = Declared.of(raw)
    shards = memo.get("shards")
    if shards is not None and not shards.owns(declared):
        # Every replica's kopf sees the deletion; the one whose share it is deletes, and
        # removes the finalizer. Here kopf retries (and logs it) until the object is gone.
        raise kopf.TemporaryError(
            "another replica's share: that replica deletes its objects", delay=5
        )
    await memo.engine.delete_objects(declared)
