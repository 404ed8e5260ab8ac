"""standby.is_outranked: kopf's peering rule, read from the peering object's status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from driftguard.runtime import standby

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def peer(priority: int, *, seen_ago: float = 1.0, lifetime: int = 10) -> dict[str, Any]:
    seen = (NOW - timedelta(seconds=seen_ago)).isoformat()
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen}


@pytest.mark.parametrize(
    ("peers", "expected"),
    [
        ({}, False),
        ({"me": peer(5)}, False),
        ({"me": peer(5), "other": peer(3)}, False),
        ({"me": peer(5), "other": peer(7)}, True),
        ({"me": peer(5), "other": peer(5)}, True),
        ({"me": peer(5), "other": peer(7, seen_ago=11)}, False),
        ({"me": peer(5), "other": {"priority": "x", "lastseen": "never"}}, False),
        ({"me": peer(5), "other": None}, False),
    ],
    ids=[
        "alone-no-peers",
        "only-itself",
        "lower-peer",
        "higher-peer",
        "same-priority-pauses-both",
        "higher-peer-dead",
        "garbage-ignored",
        "removed-peer",
    ],
)
def test_outranked_by_a_live_peer_of_higher_or_same_priority(
    peers: dict[str, Any], expected: bool
) -> None:
    """A live peer of a higher or the same priority outranks; a dead one does not."""
    assert standby.is_outranked(peers, identity="me", priority=5, now=NOW) is expected
