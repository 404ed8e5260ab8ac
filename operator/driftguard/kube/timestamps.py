"""Times the operator writes into objects, in the API's own format (RFC 3339, UTC)."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> str:
    """The current time as Kubernetes writes it (RFC 3339, seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds_ago(moment: str) -> float:
    """How long ago an RFC 3339 time was; an unreadable one is infinitely old."""
    try:
        then = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    except ValueError:
        return float("inf")
    if then.tzinfo is None:
        return float("inf")
    return (datetime.now(UTC) - then).total_seconds()
