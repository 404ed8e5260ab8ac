"""Discovery: which kinds the API server serves, asked once per group version."""

from __future__ import annotations

import asyncio
import time
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
        # Per group version, when its last lookup that got an answer began, and whether the
        # server serves it. A kind not found is asked again (its CRD may come any time), but
        # callers queued behind a lookup that began after they asked take its answer: 500
        # Policy Reports at a start asked one after another for the same unserved group.
        self._looked: dict[str, tuple[float, bool]] = {}

    async def resource(self, api_version: str, kind: str, get: Get) -> Resource:
        known = self._kinds.get((api_version, kind))
        if known is not None:
            return known
        asked = time.monotonic()
        # Retried under the lock: a refused discovery is waited out once, by one caller,
        # not requested again at once by every pass queued behind it.
        async with self._lock:
            looked = self._looked.get(api_version)
            if (api_version, kind) not in self._kinds and (looked is None or looked[0] < asked):
                await retrying(lambda: self._discover(api_version, get))
                looked = self._looked[api_version]
        try:
            return self._kinds[(api_version, kind)]
        except KeyError:
            if looked is not None and not looked[1]:
                raise UnknownKindError(
                    f"kind {kind}: the server does not serve {api_version}"
                ) from None
            raise UnknownKindError(f"the server has no kind {kind} in {api_version}") from None

    async def _discover(self, api_version: str, get: Get) -> None:
        group, _, version = api_version.rpartition("/")
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        began = time.monotonic()
        try:
            listing = await get(path)
        except ApiError as exc:
            if exc.is_not_found:
                self._looked[api_version] = (began, False)
                return
            raise
        self._looked[api_version] = (began, True)
        for entry in listing.get("resources", []):
            if "/" in entry["name"]:
                continue  # a subresource such as deployments/scale
            found = Resource(group, version, entry["kind"], entry["name"], entry["namespaced"])
            self._kinds[(api_version, entry["kind"])] = found
