"""Times the operator writes into objects, in the API's own format (RFC 3339, UTC)."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> str:
    """The current time as Kubernetes writes it (RFC 3339, seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339(seconds: float) -> str:
    """Seconds since the epoch as Kubernetes writes a time."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def precise() -> str:
    """The current time with milliseconds: when a person's write was admitted, for the
    time-to-detect figure (Kubernetes' own times are whole seconds)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch(moment: str | None) -> float | None:
    """An RFC 3339 time as seconds since the epoch; None when unreadable."""
    if not moment:
        return None
    try:
        then = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    except ValueError:
        return None
    return then.timestamp() if then.tzinfo is not None else None


def seconds_ago(moment: str) -> float:
    """How long ago an RFC 3339 time was; an unreadable one is infinitely old."""
    try:
        then = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    except ValueError:
        return float("inf")
    if then.tzinfo is None:
        return float("inf")
    return (datetime.now(UTC) - then).total_seconds()
