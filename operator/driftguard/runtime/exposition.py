"""/metrics, served over HTTPS to scrapers the API server vouches for (or plain, if asked).

Secure (the default, `--metrics-secure`): TLS with the certificate in `--metrics-cert-dir`
(tls.crt and tls.key, e.g. a TLS Secret; reloaded when it changes), else one made at start
(`selfsigned.py`); each scrape's bearer token is judged by `kube/reviews.py`: no token or an
unknown one is 401, a user who may not `get /metrics` is 403. `--metrics-insecure` serves
plain HTTP to anyone, as before, for a Prometheus that scrapes by annotations.

The exposition is prometheus_client's, with its content negotiation (OpenMetrics or text)
and gzip.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import socket
import ssl
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import prometheus_client
from aiohttp import web
from prometheus_client import exposition

from driftguard.kube.client import KubeCluster
from driftguard.kube.errors import ApiError
from driftguard.kube.reviews import Reviewer, Verdict
from driftguard.runtime import admission, selfsigned
from driftguard.telemetry.logs import get as get_logger

log = get_logger(__name__)

PATH = "/metrics"


def _exposition(request: web.Request) -> web.Response:
    encoder, content_type = exposition.choose_encoder(request.headers.get("Accept", ""))
    body = encoder(prometheus_client.REGISTRY)
    headers = {"Content-Type": content_type}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    return web.Response(body=body, headers=headers)


def _bearer(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def reviewed_app(reviewer: Reviewer) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        try:
            verdict, user = await reviewer.review(_bearer(request))
        except ApiError as exc:
            log.warning("metrics_review_failed", error=exc.describe())
            return web.Response(status=503, text="the API server could not review the token\n")
        if verdict is Verdict.UNAUTHENTICATED:
            return web.Response(
                status=401, text="Unauthorized\n", headers={"WWW-Authenticate": "Bearer"}
            )
        if verdict is Verdict.FORBIDDEN:
            return web.Response(
                status=403, text=f'Forbidden: {user} may not get the URL "{PATH}"\n'
            )
        return _exposition(request)

    app = web.Application()
    app.router.add_get(PATH, metrics)
    return app


def _open() -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        return _exposition(request)

    app = web.Application()
    app.router.add_get(PATH, metrics)
    return app


def _made_certificate() -> tuple[Path, Path]:
    """A key and self-signed certificate, written where only this process reads them."""
    key = selfsigned.new_key()
    hosts = sorted({socket.gethostname(), "localhost", "127.0.0.1"})
    der = selfsigned.certificate(
        key, common_name="driftguard-metrics", hosts=hosts, now=datetime.now(UTC)
    )
    folder = Path(tempfile.mkdtemp(prefix="driftguard-metrics-"))
    cert, private = folder / "tls.crt", folder / "tls.key"
    cert.write_text(selfsigned.pem("CERTIFICATE", der))
    descriptor = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as sink:
        sink.write(selfsigned.pem("RSA PRIVATE KEY", selfsigned.private_key(key)))
    return cert, private


async def serve_metrics(
    *, port: int, secure: bool, cert_dir: str | None, cluster: KubeCluster | None
) -> web.AppRunner:
    """Starts /metrics on every address; secure needs `cluster` to ask the API server."""
    context: ssl.SSLContext | None = None
    if secure:
        assert cluster is not None, "secure metrics review tokens through the API server"
        mounted = Path(cert_dir) if cert_dir else None
        if mounted is not None and (mounted / "tls.crt").is_file():
            cert, key = mounted / "tls.crt", mounted / "tls.key"
            source = "mounted"
        else:
            # A key takes a second of pure-Python arithmetic: off the event loop.
            cert, key = await asyncio.to_thread(_made_certificate)
            source = "self-signed"
        context = admission.tls_context(cert, key)
        app = reviewed_app(Reviewer(cluster))
        if source == "mounted":
            app["reload"] = asyncio.create_task(
                admission.reload_certificate(context, cert, key, serving="metrics")
            )
    else:
        app = _open()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, None, port, ssl_context=context).start()
    log.info("metrics_serving", port=port, secure=secure, certificate=source if secure else "")
    return runner
