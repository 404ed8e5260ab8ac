"""Discovery: a kind not served is asked again later, but callers asking at once share one answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from driftguard.kube.discovery import Discovery
from driftguard.kube.errors import ApiError, UnknownKindError

REPORTS = "openreports.io/v1alpha1"


class Server:
    """Serves the core group always; the reports group once its CRD is installed."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.has_reports = False

    async def get(self, path: str) -> dict[str, Any]:
        self.asked.append(path)
        await asyncio.sleep(0)  # an answer takes a turn of the loop, as over the wire
        if path == "/api/v1":
            return {"resources": [{"name": "configmaps", "kind": "ConfigMap", "namespaced": True}]}
        if path == f"/apis/{REPORTS}" and self.has_reports:
            return {"resources": [{"name": "reports", "kind": "Report", "namespaced": True}]}
        raise ApiError(404, "NotFound", "the server could not find the requested resource")


async def test_callers_asking_at_once_for_an_unserved_group_share_one_answer() -> None:
    """500 Policy Reports at a start: not 500 GETs one after another under the lock."""
    server, discovery = Server(), Discovery()

    answers = await asyncio.gather(
        *(discovery.resource(REPORTS, "Report", server.get) for _ in range(50)),
        return_exceptions=True,
    )

    assert all(isinstance(answer, UnknownKindError) for answer in answers)
    assert "does not serve openreports.io/v1alpha1" in str(answers[0])
    assert 1 <= len(server.asked) <= 2


async def test_a_kind_not_served_is_asked_again_by_a_later_caller() -> None:
    """A CRD installed after a lookup said no is found by the next one: no answer is kept."""
    server, discovery = Server(), Discovery()
    with pytest.raises(UnknownKindError):
        await discovery.resource(REPORTS, "Report", server.get)

    server.has_reports = True
    found = await discovery.resource(REPORTS, "Report", server.get)

    assert (found.plural, len(server.asked)) == ("reports", 2)


async def test_a_kind_missing_from_a_served_group_is_named() -> None:
    """The group's listing is kept: its other kinds need no second GET."""
    server, discovery = Server(), Discovery()

    with pytest.raises(UnknownKindError, match="no kind Widget in v1"):
        await discovery.resource("v1", "Widget", server.get)
    found = await discovery.resource("v1", "ConfigMap", server.get)

    assert (found.plural, server.asked) == ("configmaps", ["/api/v1"])
