"""kopf decorators only: each one hands the Environment to the engine.

`on.event` stores nothing on the object, so driftguard writes no annotations
and GitOps tools see no diff. The one stateful handler, deletion with
deletionPolicy Delete, keeps kopf's progress in status and uses our finalizer.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from driftguard import model
from driftguard.cluster import KubeCluster
from driftguard.engine import Engine

_RESOURCE = (model.GROUP, model.VERSION, model.PLURAL)


@kopf.on.startup()
async def start(memo: kopf.Memo, **_: Any) -> None:
    cluster = await KubeCluster.connect()
    memo.engine = Engine(cluster, namespaced=bool(memo.get("namespaced")))
    memo.cluster = cluster


def configure(kopf_settings: kopf.OperatorSettings) -> None:
    kopf_settings.persistence.finalizer = f"{model.GROUP}/finalizer"
    kopf_settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf")
    kopf_settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(
        field="status.kopf.lastHandledConfiguration"
    )
    # driftguard posts its own Events, with the contract's reasons.
    kopf_settings.posting.enabled = False
    kopf_settings.posting.level = logging.WARNING
    kopf_settings.watching.server_timeout = 600
    kopf_settings.networking.request_timeout = 60


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await memo.engine.close()
    await memo.cluster.close()


@kopf.on.event(*_RESOURCE)
async def environment(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    body = event.get("object") or {}
    if event.get("type") == "DELETED":
        meta = body.get("metadata", {})
        memo.engine.forget((meta.get("namespace"), meta.get("name")))
        return
    await memo.engine.environment_changed(body)


def _deletes_objects(spec: kopf.Spec, **_: Any) -> bool:
    return bool(spec.get("deletionPolicy") == model.DeletionPolicy.DELETE)


@kopf.on.delete(*_RESOURCE, when=_deletes_objects)
async def delete_objects(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    raw = {"metadata": dict(body.metadata), "spec": dict(body.spec), "status": dict(body.status)}
    await memo.engine.delete_objects(raw)
