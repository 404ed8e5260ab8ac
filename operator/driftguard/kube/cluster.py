"""The Cluster protocol: what the rest of the operator asks of an API server.

Its vocabulary too: a `Resource` (a kind's path), the objects every part reads
(ServiceAccounts, Environments), a watch's events. The real client is `client.KubeCluster`;
unit tests use a fake of this protocol.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from driftguard.core import model
from driftguard.core.model import Resource

__all__ = [
    "CONNECTED",
    "ENVIRONMENTS",
    "SERVICEACCOUNTS",
    "USER_AGENT",
    "Cluster",
    "Gate",
    "Resource",
    "WatchEvent",
]

USER_AGENT = "driftguard/0.1.0"
"""What every request says it is from (the daemon adds its version and replica)."""


SERVICEACCOUNTS = Resource("", "v1", "ServiceAccount", "serviceaccounts", namespaced=True)
ENVIRONMENTS = Resource(model.GROUP, model.VERSION, model.KIND, model.PLURAL, namespaced=True)


Gate = Callable[[str | None, tuple[str, str] | None], bool]
"""(namespace written to, or the Environment whose status or Event it is) -> allowed now."""


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str  # CONNECTED (the server accepted the watch), ADDED, MODIFIED, DELETED, BOOKMARK
    object: dict[str, Any]


CONNECTED = WatchEvent("CONNECTED", {})


class Cluster(Protocol):
    """What reconcile and apply need from the API server."""

    async def resource(self, api_version: str, kind: str) -> Resource: ...

    async def apply(
        self, resource: Resource, manifest: dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]: ...

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def list_objects(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        selector: str = "",
        limit: int = 0,
        shard: str = "",
        name: str = "",
        metadata_only: bool = False,
    ) -> tuple[list[dict[str, Any]], str]:
        """`metadata_only`: each item its metadata alone (PartialObjectMetadata), for a
        caller that needs only names: the server encodes, and this client decodes, far less."""
        ...

    async def delete(
        self, resource: Resource, namespace: str, name: str, uid: str, *, dry_run: bool = False
    ) -> None: ...

    def as_user(self, user: str) -> Cluster:
        """The same client, every request impersonating `user` ("" for the client itself)."""
        ...

    async def whoami(self) -> str:
        """The username the API server knows this client as."""
        ...

    async def json_patch(
        self, resource: Resource, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]: ...

    async def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], *, resource: Resource = ...
    ) -> None: ...

    async def probe(
        self, resource: Resource, namespace: str, name: str, patch: dict[str, Any]
    ) -> list[str]:
        """A server-side dry-run merge patch (never stored): the warnings admission gave;
        an ApiError when admission refused it."""
        ...

    async def post_event(
        self, env: dict[str, Any], *, reason: str, message: str, warning: bool = False
    ) -> None: ...

    def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        selector: str,
        resource_version: str,
        timeout_seconds: int = 600,
        accept: Callable[[bytes], bool] | None = None,
        shard: str = "",
        batch_s: float = 0.0,
        name: str = "",
    ) -> AsyncGenerator[WatchEvent, None]: ...
