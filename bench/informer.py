"""An independent observer: list + watch one collection and answer "when did X first hold?".

It keeps, per object, only a small projection (``extract``) of its last few versions with the
moment each arrived, so a waiter registered after the event it waits for (a revert can beat
the manual write's own response) still gets the true arrival time. Arrival is stamped when
the bytes come off the socket, before any decoding of later events.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubeapi import ApiError, Kube, rv

Key = tuple[str, str]
_HISTORY = 16


@dataclass(frozen=True)
class Seen:
    """One version of one object: its resourceVersion, arrival time and projection."""

    rv: int
    at: float
    value: Any


KeyCheck = Callable[[Seen], bool]
AllCheck = Callable[[dict[Key, Any]], bool]


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata", {})
    return (str(meta.get("namespace", "")), str(meta["name"]))


class Informer:
    """Watches ``path`` (optionally label-selected) in the background."""

    def __init__(
        self, kube: Kube, path: str, *, extract: Callable[[dict[str, Any]], Any], selector: str = ""
    ) -> None:
        self._kube = kube
        self._path = path
        self._extract = extract
        self._selector = selector
        self.latest: dict[Key, Any] = {}
        self._history: dict[Key, deque[Seen]] = {}
        self._key_waiters: dict[Key, list[tuple[KeyCheck, asyncio.Future[float]]]] = {}
        self._all_waiters: list[tuple[AllCheck, asyncio.Future[float]]] = []
        self.synced = asyncio.Event()
        self.events = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Informer:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.synced.wait(), timeout=60)
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _query(self) -> dict[str, str]:
        return {"labelSelector": self._selector} if self._selector else {}

    async def _run(self) -> None:
        version = ""
        while True:
            try:
                if not version:
                    listing = await self._kube.request("GET", self._path, query=self._query())
                    arrived = time.monotonic()
                    self.latest.clear()
                    for item in listing.get("items", []):
                        self._record("ADDED", item, arrived)
                    version = str(listing["metadata"]["resourceVersion"])
                    self.synced.set()
                query = {**self._query(), "resourceVersion": version}
                async for arrived, kind, obj in self._kube.watch(self._path, query=query):
                    version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                    if kind != "BOOKMARK":
                        self._record(kind, obj, arrived)
            except ApiError as exc:
                if exc.status == 410:
                    version = ""
                    continue
                await asyncio.sleep(0.2)
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.2)

    def _record(self, kind: str, obj: dict[str, Any], arrived: float) -> None:
        self.events += 1
        key = key_of(obj)
        value = None if kind == "DELETED" else self._extract(obj)
        if value is None:
            self.latest.pop(key, None)
        else:
            self.latest[key] = value
        seen = Seen(rv(obj), arrived, value)
        self._history.setdefault(key, deque(maxlen=_HISTORY)).append(seen)
        for predicate, future in self._key_waiters.get(key, ()):
            if not future.done() and predicate(seen):
                future.set_result(arrived)
        for check, future in self._all_waiters:
            if not future.done() and check(self.latest):
                future.set_result(arrived)

    async def first(
        self, key: Key, predicate: Callable[[Seen], bool], *, timeout: float
    ) -> float | None:
        """When the first version of ``key`` satisfying ``predicate`` arrived; None at timeout."""
        for seen in self._history.get(key, ()):
            if predicate(seen):
                return seen.at
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._key_waiters.setdefault(key, []).append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            self._key_waiters[key].remove(entry)
            if not self._key_waiters[key]:
                del self._key_waiters[key]

    async def until(
        self, check: Callable[[dict[Key, Any]], bool], *, timeout: float
    ) -> float | None:
        """When the event after which ``check(latest)`` first held arrived; None at timeout."""
        if check(self.latest):
            return time.monotonic()
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        entry = (check, future)
        self._all_waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            self._all_waiters.remove(entry)
