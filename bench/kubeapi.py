"""A small async Kubernetes client for the benchmark: raw JSON requests and watch streams.

It rides on kubernetes_asyncio's kubeconfig loader and aiohttp session (no generated models:
decoding them would cost the load generators and observers CPU the operator needs). Transient
answers (429 while a CRD's storage initialises, 5xx, connection errors) are retried briefly.
It knows nothing about driftguard.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client as kclient
from kubernetes_asyncio import config as kconfig

from driftguard.kube.errors import ApiError  # the same error shape: status 0 is unreachable

JSON = "application/json"
MERGE = "application/merge-patch+json"
APPLY = "application/apply-patch+yaml"

_RETRIES = 8


class Kube:
    """One identity's connection pool to the API server."""

    def __init__(self, api: kclient.ApiClient) -> None:
        self._api = api
        self._host: str = api.configuration.host or ""

    @classmethod
    async def connect(cls, kubeconfig: Path, *, user_agent: str, pool: int = 64) -> Kube:
        configuration = kclient.Configuration()
        await kconfig.load_kube_config(
            config_file=str(kubeconfig), client_configuration=configuration
        )
        configuration.connection_pool_maxsize = pool
        api = kclient.ApiClient(configuration)
        api.user_agent = user_agent
        # kubernetes_asyncio opens its aiohttp session with trust_env=True, so every request
        # first looks for ~/.netrc in a worker thread and scans the proxy variables: about
        # 0.5 ms of CPU and 0.8 ms of latency per request here. The floor must not pay it.
        api.rest_client.pool_manager._trust_env = False
        return cls(api)

    async def close(self) -> None:
        await self._api.close()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None,
        body: Any,
        content_type: str,
        timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        headers = {"Content-Type": content_type, "Accept": JSON}
        headers.update(self._api.default_headers)
        try:
            response: aiohttp.ClientResponse = await self._api.rest_client.request(
                method,
                self._host + path,
                query_params=query,
                headers=headers,
                body=body,
                _preload_content=False,
                _request_timeout=timeout,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(0, "Unreachable", str(exc) or type(exc).__name__) from exc
        if response.status >= 400:
            async with response:
                text = await response.text()
            try:
                status = json.loads(text)
                raise ApiError(
                    response.status, str(status.get("reason")), str(status.get("message"))
                )
            except ValueError:
                raise ApiError(response.status, response.reason or "", text[:300]) from None
        return response

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
        timeout: float = 60.0,
        retries: int = _RETRIES,
    ) -> dict[str, Any]:
        """Send one request, retrying transient failures with a short backoff; return the JSON."""
        delay = 0.1
        for attempt in range(retries + 1):
            try:
                response = await self._send(
                    method,
                    path,
                    query=query,
                    body=body,
                    content_type=content_type,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                )
                async with response:
                    data: dict[str, Any] = await response.json(loads=json.loads)
                    return data
            except ApiError as exc:
                if not exc.is_transient or attempt == retries:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    async def watch(
        self, path: str, *, query: dict[str, str]
    ) -> AsyncIterator[tuple[float, str, dict[str, Any]]]:
        """Yield (monotonic arrival time, event type, object) from one watch request."""
        params = {"watch": "1", "allowWatchBookmarks": "true", "timeoutSeconds": "300", **query}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=30)
        response = await self._send(
            "GET", path, query=params, body=None, content_type=JSON, timeout=timeout
        )
        async with response:
            buffer = b""
            async for chunk in response.content.iter_any():
                arrived = time.monotonic()
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        raise ApiError(
                            int(obj.get("code", 0)), str(obj.get("reason")), str(obj.get("message"))
                        )
                    yield arrived, str(event.get("type")), obj


def rv(obj: dict[str, Any]) -> int:
    """The object's resourceVersion as an integer (etcd revisions are; 0 when absent)."""
    text = str(obj.get("metadata", {}).get("resourceVersion") or "0")
    return int(text) if text.isdigit() else 0


def cm_path(namespace: str | None, name: str | None = None) -> str:
    base = f"/api/v1/namespaces/{namespace}/configmaps" if namespace else "/api/v1/configmaps"
    return f"{base}/{name}" if name else base


def deploy_path(namespace: str | None, name: str | None = None) -> str:
    base = (
        f"/apis/apps/v1/namespaces/{namespace}/deployments"
        if namespace
        else "/apis/apps/v1/deployments"
    )
    return f"{base}/{name}" if name else base


def env_path(namespace: str | None, name: str | None = None) -> str:
    group = "/apis/driftguard.io/v1alpha1"
    base = f"{group}/namespaces/{namespace}/environments" if namespace else f"{group}/environments"
    return f"{base}/{name}" if name else base


async def gather_limited(limit: int, coros: list[Any]) -> list[Any]:
    """Run coroutines with at most ``limit`` in flight; results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))
