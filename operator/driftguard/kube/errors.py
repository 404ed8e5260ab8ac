"""What the API server's refusals become: nothing from the client library escapes kube/."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["ApiError", "UnknownKindError", "naming_request"]


class ApiError(Exception):
    """The API server refused a request."""

    def __init__(
        self, status: int, reason: str, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        # Seconds the server asked us to wait (its Retry-After header on a 429 or 503).
        self.retry_after = retry_after
        # What was refused, filled in where the request is made: a person reading
        # "Forbidden" needs the verb, the kind and the namespace to fix their RBAC.
        self.verb = ""
        self.kind = ""
        self.namespace: str | None = None

    def describe(self) -> str:
        """`cannot list RoleBinding in namespace team-a: <the server's message>`."""
        if not self.verb:
            return self.message
        where = f" in namespace {self.namespace}" if self.namespace else " (all namespaces)"
        return f"cannot {self.verb} {self.kind}{where}: {self.message}"

    @property
    def is_transient(self) -> bool:
        return self.status in (0, 429) or self.status >= 500

    @property
    def is_throttled(self) -> bool:
        """429 Too Many Requests: API Priority and Fairness or max-requests-inflight refused."""
        return self.status == 429

    @property
    def is_forbidden(self) -> bool:
        return self.status in (401, 403)

    @property
    def is_not_found(self) -> bool:
        return self.status == 404

    @property
    def is_gone(self) -> bool:
        return self.status == 410


class UnknownKindError(LookupError):
    """The server serves no such apiVersion and kind."""


@contextlib.contextmanager
def naming_request(verb: str, kind: str, namespace: str | None) -> Iterator[None]:
    """Names the request on any ApiError raised inside."""
    try:
        yield
    except ApiError as exc:
        if not exc.verb:
            exc.verb, exc.kind, exc.namespace = verb, kind, namespace
        raise
