"""A watch's stream: one response's lines read as they come, or in batches, as events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import aiohttp

from driftguard.core.model import Resource
from driftguard.kube.cluster import CONNECTED, WatchEvent
from driftguard.kube.errors import ApiError, naming_request

__all__ = ["events"]

Request = Callable[..., Awaitable[aiohttp.ClientResponse]]
"""connection.Connection.request: a request sent, its response not read yet."""


async def events(
    request: Request,
    resource: Resource,
    namespace: str | None,
    query: dict[str, str],
    *,
    accept: Callable[[bytes], bool] | None,
    batch_s: float,
) -> AsyncGenerator[WatchEvent, None]:
    """CONNECTED, then the events of the watch `query` asks for, until the server ends it.

    `accept(line)` may skip a raw event undecoded; `batch_s`: see `_batching`. Every
    failure, including a connection that breaks mid-stream, is an ApiError.
    """
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=30)
    with naming_request("watch", resource.kind, namespace):
        # Uncompressed: the server flushes each event on its own, so gzip saves
        # little and costs both ends a compressor per event.
        response = await request(
            "GET",
            resource.path(namespace),
            query=query,
            timeout=timeout,
            compressed=False,
            stream=True,
        )
        async with response:
            yield CONNECTED
            transport = _batching(response, batch_s)
            buffer = b""
            try:
                # Lines are split by hand: aiohttp's readline() refuses lines over
                # its buffer size, and an object in a watch can be up to 1.5 MiB.
                async for chunk in response.content.iter_any():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip() and (accept is None or accept(line)):
                            yield _watch_event(line, resource)
                    if transport is not None:
                        transport.pause_reading()
                        await asyncio.sleep(batch_s)
                        transport.resume_reading()
            except (aiohttp.ClientError, ConnectionError) as exc:
                # A server killed mid-stream: "Response payload is not completed".
                raise ApiError(0, "StreamBroken", str(exc) or type(exc).__name__) from exc


def _batching(response: aiohttp.ClientResponse, batch_s: float) -> asyncio.Transport | None:
    """The transport to pause between reads, set so that pausing it stops the socket.

    An event arrives as a TLS record of its own: read as it comes, each costs an event
    loop turn, a decryption and a parse (about 80 µs); read every 20 / 50 / 100 / 200 ms,
    a busy stream costs 24 / 14 / 9 / 6 µs an event. A paused SSL transport only stops
    handing decrypted data on, and keeps reading the socket until a quarter MiB is
    buffered: a high-water mark of one byte makes it stop the socket too.
    """
    connection = response.connection
    if batch_s <= 0 or connection is None or connection.transport is None:
        return None
    transport = connection.transport
    limits = getattr(transport, "set_read_buffer_limits", None)
    if limits is not None:
        limits(high=1, low=0)
    return transport


def _watch_event(line: bytes, resource: Resource) -> WatchEvent:
    raw = json.loads(line)
    obj: dict[str, Any] = raw.get("object") or {}
    if raw.get("type") == "ERROR":
        raise ApiError(int(obj.get("code", 0)), str(obj.get("reason")), str(obj.get("message")))
    obj.setdefault("apiVersion", resource.api_version)
    obj.setdefault("kind", resource.kind)
    return WatchEvent(str(raw.get("type")), obj)
