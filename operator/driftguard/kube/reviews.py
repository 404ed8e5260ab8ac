"""Who may read /metrics: the API server decides, by TokenReview and SubjectAccessReview.

The way Kubernetes components and controller-runtime guard their metrics: the scraper's
bearer token is reviewed (authentication.k8s.io TokenReview), then the API server is asked
whether that user may `get` the non-resource URL `/metrics` (SubjectAccessReview). Grant
it with a ClusterRole (the chart's `<release>-metrics-reader`) bound to Prometheus'
ServiceAccount.

Each verdict is kept for a short while (TTL_S), keyed by the token's SHA-256 and never by
the token itself, so a scrape every 15 s costs two API requests a minute per scraper,
not per scrape. A token is never logged. An API error is no verdict and is not kept.
"""

from __future__ import annotations

import hashlib
import time
from enum import StrEnum
from typing import Any

from driftguard.kube.client import KubeCluster

TTL_S = 30.0
"""How long a verdict stands: a revoked binding or token stops working within this."""
MAX_KEPT = 1024
"""Verdicts kept at most; the oldest go first (a flood of bad tokens cannot grow memory)."""

TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


class Verdict(StrEnum):
    ALLOWED = "allowed"
    UNAUTHENTICATED = "unauthenticated"  # no token, or the API server does not know it: 401
    FORBIDDEN = "forbidden"  # a known user without the right: 403


class Reviewer:
    def __init__(self, cluster: KubeCluster, *, path: str = "/metrics", verb: str = "get") -> None:
        self._cluster = cluster
        self._path, self._verb = path, verb
        self._kept: dict[str, tuple[float, Verdict, str]] = {}

    async def review(self, token: str) -> tuple[Verdict, str]:
        """The verdict on this bearer token, and the user it names ("" if none)."""
        if not token:
            return Verdict.UNAUTHENTICATED, ""
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        kept = self._kept.get(key)
        if kept is not None and kept[0] > now:
            return kept[1], kept[2]
        verdict, user = await self._ask(token)  # an ApiError passes up, and is not kept
        self._kept.pop(key, None)
        if len(self._kept) >= MAX_KEPT:
            del self._kept[next(iter(self._kept))]
        self._kept[key] = (now + TTL_S, verdict, user)
        return verdict, user

    async def _ask(self, token: str) -> tuple[Verdict, str]:
        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        }
        answer = await self._post(TOKEN_REVIEWS, review)
        status = answer.get("status") or {}
        info = status.get("user") or {}
        if not status.get("authenticated") or not info.get("username"):
            return Verdict.UNAUTHENTICATED, ""
        user = str(info["username"])
        spec: dict[str, Any] = {
            "user": user,
            "groups": list(info.get("groups") or []),
            "nonResourceAttributes": {"path": self._path, "verb": self._verb},
        }
        if info.get("uid"):
            spec["uid"] = info["uid"]
        if info.get("extra"):
            spec["extra"] = info["extra"]
        access = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": spec,
        }
        answer = await self._post(ACCESS_REVIEWS, access)
        allowed = bool((answer.get("status") or {}).get("allowed"))
        return (Verdict.ALLOWED if allowed else Verdict.FORBIDDEN), user

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._cluster.connection.json("POST", path, body=body)
