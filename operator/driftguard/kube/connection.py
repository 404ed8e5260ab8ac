"""The client's two aiohttp sessions, and one identity's requests over them.

Configured by kubernetes_asyncio (kubeconfig, in-cluster, tokens), raw JSON in and out.
Every failure to reach the server, and every refusal, is an ApiError.
"""

from __future__ import annotations

import json
import os
from asyncio import sslproto
from typing import Any

import aiohttp

from driftguard.kube import cluster
from driftguard.kube.errors import ApiError
from driftguard.kube.library import ApiClient, Configuration, RESTClientObject
from driftguard.kube.library import config as kconfig

__all__ = ["Connection", "sessions"]

SSL_READ_BUFFER = 64 * 1024
"""asyncio gives every TLS connection a read buffer of 256 KiB, allocated and zero-filled at
once: with the 64 pooled connections and the watches, 17 MB of every replica's memory (seen
with tracemalloc). A TLS record holds at most 16 KiB, so a smaller buffer costs a few more
reads of a large list, nothing else."""
sslproto.SSLProtocol.max_size = min(sslproto.SSLProtocol.max_size, SSL_READ_BUFFER)

_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")


async def sessions(
    *,
    kubeconfig: str | None = None,
    config: dict[str, Any] | None = None,
    context: str | None = None,
    pool: int = 64,
) -> tuple[ApiClient, RESTClientObject]:
    """The requests' session (at most `pool` connections) and the watches' (unbounded).

    Uses `config` (a parsed kubeconfig: a remote cluster's), else the given kubeconfig file
    or $KUBECONFIG (its `context` when given), else the in-cluster config, else ~/.kube.
    """
    configuration = Configuration()
    if context is not None:
        await kconfig.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    elif config is not None:
        try:
            await kconfig.load_kube_config_from_dict(config, client_configuration=configuration)
        except (kconfig.ConfigException, ValueError, TypeError) as exc:
            raise ApiError(0, "InvalidKubeconfig", str(exc) or type(exc).__name__) from exc
    elif kubeconfig is not None:
        await kconfig.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    elif os.environ.get("KUBECONFIG"):
        # An explicit --kubeconfig (or $KUBECONFIG) wins over a Pod's own identity;
        # the library reads the variable itself, colon-separated lists included.
        await kconfig.load_kube_config(client_configuration=configuration)
    else:
        try:
            kconfig.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except kconfig.ConfigException:
            await kconfig.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = pool
    api = ApiClient(configuration)
    api.user_agent = cluster.USER_AGENT
    streams = RESTClientObject(configuration, maxsize=0)  # 0: no limit
    if not any(os.environ.get(name) for name in _PROXY_VARIABLES):
        # kubernetes_asyncio opens its session with trust_env=True, so aiohttp looks
        # for ~/.netrc in a thread before every request: about 0.8 ms each, a third
        # of the operator's CPU while applying. Without proxy variables it serves
        # nothing (a kubeconfig's proxy-url is passed explicitly, not via env).
        api.rest_client.pool_manager._trust_env = False
        streams.pool_manager._trust_env = False
    return api, streams


class Connection:
    """Requests as one identity ("" the client's own; else impersonated): over the api's
    bounded pool, or, for a stream, over `streams`."""

    def __init__(
        self,
        api: ApiClient,
        *,
        user: str = "",
        streams: RESTClientObject | None = None,
    ) -> None:
        self.api = api
        self.user = user
        self.connect_s: float | None = None  # how soon connecting gives up (a remote's: soon)
        # Watches hold their connection for minutes: they get a pool of their own, without
        # a limit, so that however many there are, requests never wait behind them.
        self.streams = streams or api.rest_client
        self._host: str = api.configuration.host or ""

    async def close(self) -> None:
        if self.streams is not self.api.rest_client:
            await self.streams.close()
        await self.api.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout: aiohttp.ClientTimeout | None = None,
        compressed: bool = True,
        stream: bool = False,
    ) -> aiohttp.ClientResponse:
        headers = {"Content-Type": content_type, "Accept": accept}
        if not compressed:
            headers["Accept-Encoding"] = "identity"
        headers.update(self.api.default_headers)
        if self.user:
            headers["Impersonate-User"] = self.user
        await self.api.update_params_for_auth(headers, [], ["BearerToken"])
        try:
            client = self.streams if stream else self.api.rest_client
            response: aiohttp.ClientResponse = await client.request(
                method,
                self._host + path,
                query_params=query,
                headers=headers,
                body=body,
                _preload_content=False,
                _request_timeout=timeout or aiohttp.ClientTimeout(total=60, connect=self.connect_s),
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(0, "Unreachable", str(exc) or type(exc).__name__) from exc
        if response.status >= 400:
            raise await _error(response)
        return response

    async def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self.request(method, path, **kwargs)
        async with response:
            data: dict[str, Any] = await response.json(loads=json.loads)
            return data

    async def warnings(self, method: str, path: str, **kwargs: Any) -> list[str]:
        """The request's Warning headers (admission's warnings, deprecations), as text."""
        response = await self.request(method, path, **kwargs)
        async with response:
            await response.read()
            return [_warning_text(value) for value in response.headers.getall("Warning", [])]


def _warning_text(header: str) -> str:
    """The text of one Warning header (RFC 9110: `299 - "text"`), unquoted."""
    parts = header.split(" ", 2)
    text = parts[2] if len(parts) == 3 and parts[0] == "299" else header
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return text


async def _error(response: aiohttp.ClientResponse) -> ApiError:
    async with response:
        text = await response.text()
    wait = _retry_after(response.headers.get("Retry-After"))
    try:
        status = json.loads(text)
        reason, message = str(status.get("reason")), str(status.get("message"))
    except ValueError:
        reason, message = response.reason or "", text[:500]
    return ApiError(response.status, reason, message, retry_after=wait)


def _retry_after(header: str | None) -> float | None:
    """Retry-After in seconds; the API server sends whole seconds (RFC 9110 also allows
    an HTTP date, which it never sends: that, or garbage, counts as absent)."""
    if header is None:
        return None
    try:
        seconds = float(header.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
