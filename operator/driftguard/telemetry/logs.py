"""Logging through structlog: JSON lines off a terminal, readable lines on one.

kopf and the client libraries log through the standard library; their records
go through the same renderer so an operator's output has one shape.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def _kopf_object(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """kopf tags its per-object records with `k8s_ref`; name the Environment like ours do."""
    record = event.get("_record")
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, dict) and ref.get("name"):
        event.setdefault("environment", f"{ref.get('namespace')}/{ref['name']}")
    return event


_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    _kopf_object,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure(*, level: str = "INFO", json: bool | None = None) -> None:
    """Routes structlog and stdlib logging to stderr through one renderer."""
    is_json = not sys.stderr.isatty() if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if is_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The clients log every request at DEBUG/INFO; they would drown the drift events.
    for noisy in ("aiohttp", "kubernetes_asyncio", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if logging.getLevelName(level) > logging.DEBUG:
        # kopf logs every handler call as a success; driftguard's own events say more.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)


def get(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
