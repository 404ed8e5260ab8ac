"""Times the operator writes into objects, in the API's own format (RFC 3339, UTC)."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> str:
    """The current time as Kubernetes writes it (RFC 3339, seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
