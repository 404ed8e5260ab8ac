"""Discovery: which kinds the API server serves, asked once per group version."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from driftguard.core.model import Resource
from driftguard.kube.errors import ApiError, UnknownKindError
from driftguard.kube.retries import retrying

__all__ = ["Discovery"]

Get = Callable[[str], Awaitable[dict[str, Any]]]
"""A GET of an API path, as the identity asking (discovery is the same for every one)."""


class Discovery:
    """The kinds found so far, shared by every identity's view of the client."""

    def __init__(self) -> None:
        self._kinds: dict[tuple[str, str], Resource] = {}
        self._lock = asyncio.Lock()

    async def resource(self, api_version: str, kind: str, get: Get) -> Resource:
        known = self._kinds.get((api_version, kind))
        if known is not None:
            return known
        # Retried under the lock: a refused discovery is waited out once, by one caller,
        # not requested again at once by every pass queued behind it.
        async with self._lock:
            if (api_version, kind) not in self._kinds:
                try:
                    await retrying(lambda: self._discover(api_version, get))
                except UnknownKindError as exc:
                    raise UnknownKindError(f"kind {kind}: {exc}") from exc
        try:
            return self._kinds[(api_version, kind)]
        except KeyError:
            raise UnknownKindError(f"the server has no kind {kind} in {api_version}") from None

    async def _discover(self, api_version: str, get: Get) -> None:
        group, _, version = api_version.rpartition("/")
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            listing = await get(path)
        except ApiError as exc:
            if exc.is_not_found:
                raise UnknownKindError(f"the server does not serve {api_version}") from exc
            raise
        for entry in listing.get("resources", []):
            if "/" in entry["name"]:
                continue  # a subresource such as deployments/scale
            found = Resource(group, version, entry["kind"], entry["name"], entry["namespaced"])
            self._kinds[(api_version, entry["kind"])] = found
