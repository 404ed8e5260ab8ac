"""The board's web server (aiohttp): pages, the grid's live stream, two static files.

It serves GET only and reads as its kubeconfig's user. Bound to loopback, it answers only
requests whose Host is that loopback address: a web page elsewhere cannot rebind a name of
its own to 127.0.0.1 and read the cluster through the viewer's credentials. Every response
carries a Content-Security-Policy without inline script, so even an escaping mistake could
not run a value from the cluster as code.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import threading
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from importlib import resources

from aiohttp import web

from driftguard.cli import inspection
from driftguard.cli.board import details, grid, live, pages
from driftguard.kube.client import KubeCluster
from driftguard.kube.errors import ApiError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BOARD: web.AppKey[live.Board] = web.AppKey("board", live.Board)
CLUSTER: web.AppKey[KubeCluster] = web.AppKey("cluster", KubeCluster)
CONTEXT: web.AppKey[pages.Context] = web.AppKey("context", pages.Context)
HOSTS: web.AppKey[set[str]] = web.AppKey("hosts", set)
STATIC = {"board.css": "text/css", "board.js": "text/javascript"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MAX_COMPARED = 20
"""Environments one compare reads: each costs a get of every object it declares."""
ROWS_PER_EVENT = 50
"""More changed rows than this at once (a burst): the page fetches the whole grid instead."""
KEEPALIVE_S = 15.0


@web.middleware
async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    hosts = request.app[HOSTS]
    if hosts and request.host not in hosts:
        return web.Response(status=421, text="misdirected request: unknown Host\n")
    response = await handler(request)
    response.headers.update(SECURITY_HEADERS)
    return response


def _html(text: str, *, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


async def on_grid(request: web.Request) -> web.Response:
    board = request.app[BOARD]
    await board.wait_listed(5.0)
    return _html(pages.grid_page(board, request.app[CONTEXT]))


async def on_grid_part(request: web.Request) -> web.Response:
    return _html(pages.grid_fragment(request.app[BOARD], request.app[CONTEXT]))


async def on_environment(request: web.Request) -> web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    context = request.app[CONTEXT]
    try:
        view = await details.environment_view(request.app[CLUSTER], namespace, name)
    except LookupError:
        message = f"Environment {namespace}/{name} does not exist, or you may not read it."
        return _html(pages.message_page(context, title="Not found", message=message), status=404)
    except ApiError as exc:
        status = 403 if exc.is_forbidden else 502
        page = pages.message_page(context, title="Cannot read it", message=exc.describe())
        return _html(page, status=status)
    read_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _html(pages.environment_page(view, context, read_at=read_at))


async def on_compare(request: web.Request) -> web.Response:
    board, context = request.app[BOARD], request.app[CONTEXT]
    await board.wait_listed(5.0)
    groups = grid.groups(board.snapshot())
    blueprint = request.query.get("blueprint", "")
    everything = request.query.get("all") == "1"
    chosen = list(dict.fromkeys(request.query.getall("env", [])))
    if blueprint:
        rows = next((g.rows for g in groups if g.blueprint == blueprint), ())
        chosen = [f"{r.namespace}/{r.name}" for r in rows]
    view = None
    if blueprint and not chosen:
        view = details.CompareView(
            [], error=f"no Environment you may see uses Blueprint {blueprint}"
        )
    elif len(chosen) > MAX_COMPARED:
        view = details.CompareView(chosen, error=f"pick at most {MAX_COMPARED} Environments")
    elif chosen:
        targets = [_target(text) for text in chosen]
        if any(t is None for t in targets):
            view = details.CompareView(chosen, error="name each Environment as NAMESPACE/NAME")
        else:
            picked = [t for t in targets if t is not None]
            view = await details.compare_view(request.app[CLUSTER], picked, everything=everything)
    page = pages.compare_page(
        context,
        groups=groups,
        chosen=chosen,
        everything=everything,
        blueprint=blueprint,
        view=view,
    )
    return _html(page)


def _target(text: str) -> tuple[str, str] | None:
    namespace, _, name = text.partition("/")
    return (namespace, name) if namespace and name and "/" not in name else None


async def on_static(request: web.Request) -> web.Response:
    name = request.match_info["file"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    body = (resources.files("driftguard.cli.board") / "static" / name).read_bytes()
    return web.Response(body=body, content_type=STATIC[name], charset="utf-8")


async def on_healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def on_favicon(request: web.Request) -> web.Response:
    return web.Response(status=204)  # browsers ask; a 404 would only fill their console


async def on_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `row` (one row's new markup), `refresh` (fetch the grid again)."""
    board = request.app[BOARD]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    response.headers.update(SECURITY_HEADERS)
    await response.prepare(request)
    queue = board.listen()
    try:
        await response.write(b"retry: 1000\nevent: hello\ndata: {}\n\n")
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE_S):
                    keys = {await queue.get()}
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            while not queue.empty():
                keys.add(queue.get_nowait())
            await response.write(_messages(board, keys))
    except (ConnectionResetError, ConnectionError):
        pass  # the page went away
    finally:
        board.unlisten(queue)
    return response


def _messages(board: live.Board, keys: set[live.Key]) -> bytes:
    if live.REFRESH in keys or len(keys) > ROWS_PER_EVENT:
        return b"event: refresh\ndata: {}\n\n"
    out = []
    for key in sorted(keys):
        env = board.environments.get(key)
        if env is None:
            continue
        row = grid.row_of(env)
        data = json.dumps({"id": row.dom_id, "html": pages.row_fragment(row)})
        out.append(f"event: row\ndata: {data}\n\n")
    return "".join(out).encode()


def application(
    board: live.Board, cluster: KubeCluster, context: pages.Context, *, hosts: set[str]
) -> web.Application:
    """The board's routes; `hosts`: the Host headers answered (empty: any)."""
    app = web.Application(middlewares=[guarded])
    app[BOARD], app[CLUSTER], app[CONTEXT], app[HOSTS] = board, cluster, context, hosts
    app.router.add_get("/", on_grid)
    app.router.add_get("/grid", on_grid_part)
    app.router.add_get("/events", on_events)
    app.router.add_get("/compare", on_compare)
    app.router.add_get("/env/{namespace}/{name}", on_environment)
    app.router.add_get("/static/{file}", on_static)
    app.router.add_get("/healthz", on_healthz)
    app.router.add_get("/favicon.ico", on_favicon)
    return app


def loopback_hosts(address: str, port: int) -> set[str]:
    """The Host headers a loopback server answers; empty for any other address."""
    try:
        is_loopback = ipaddress.ip_address(address).is_loopback
    except ValueError:
        is_loopback = address == "localhost"
    if not is_loopback:
        return set()
    return {f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]", address)}


async def run_board(
    *,
    port: int,
    address: str,
    scopes: Sequence[str | None],
    announce: Callable[[str], None],
) -> int:
    """Serves until cancelled; `announce` is told the URL once it listens."""
    cluster = await inspection._connect()
    if cluster is None:
        return 2
    board = live.Board(scopes)
    follows = [asyncio.create_task(board.follow(cluster, scope)) for scope in board.scopes]
    viewer = ""
    with contextlib.suppress(ApiError):  # a SelfSubjectReview refused: the header says less
        viewer = await cluster.whoami()
    context = pages.Context(viewer=viewer, scopes=board.scopes)
    app = application(board, cluster, context, hosts=set())
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, address, port).start()
        bound = int(runner.addresses[0][1])
        app[HOSTS].update(loopback_hosts(address, bound))
        host = f"[{address}]" if ":" in address else address
        announce(f"http://{host}:{bound}/")
        await asyncio.Event().wait()
    finally:
        for task in follows:
            task.cancel()
        await runner.cleanup()
        await cluster.close()
    return 0


def serve_board(*, port: int, address: str, namespaces: Sequence[str], all_namespaces: bool) -> int:
    """`driftguard board`: serve until Ctrl-C."""
    scopes: list[str | None] = (
        [None] if all_namespaces else list(namespaces or [inspection.current_namespace()])
    )

    def announce(url: str) -> None:
        print(
            f"driftguard board: {url} (read-only, as your kubeconfig; Ctrl-C stops it)", flush=True
        )

    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_board(port=port, address=address, scopes=scopes, announce=announce))
    return 0


def serve_beside(
    *, port: int, address: str, scopes: Sequence[str | None], announce: Callable[[str], None]
) -> threading.Thread:
    """The board in a thread of its own (its own event loop and client): the operator's."""

    def run() -> None:
        asyncio.run(run_board(port=port, address=address, scopes=scopes, announce=announce))

    thread = threading.Thread(target=run, name="driftguard-board", daemon=True)
    thread.start()
    return thread
