"""conditions: Ready and InSync keep their transition time unless they really changed."""

from __future__ import annotations

import pytest

from driftguard.core import conditions
from driftguard.core.status import Condition

BEFORE = "2026-11-26T10:00:00Z"
NOW = "2026-11-26T11:00:00Z"


def in_sync(
    is_true: bool = True,
    reason: str = "InSync",
    message: str = "5 of 5 objects in sync",
    *,
    generation: int = 1,
    now: str = NOW,
) -> Condition:
    return conditions.make(
        conditions.IN_SYNC, is_true, reason, message, generation=generation, now=now
    )


@pytest.mark.parametrize(
    ("previous", "current", "expected_time"),
    [
        pytest.param([], in_sync(), NOW, id="new-condition"),
        pytest.param([in_sync(now=BEFORE)], in_sync(), BEFORE, id="unchanged-keeps-time"),
        pytest.param(
            [in_sync(now=BEFORE, generation=1)], in_sync(generation=2), BEFORE, id="generation-only"
        ),
        pytest.param([in_sync(now=BEFORE)], in_sync(is_true=False), NOW, id="status-changed"),
        pytest.param([in_sync(now=BEFORE)], in_sync(reason="Drifted"), NOW, id="reason-changed"),
        pytest.param([in_sync(now=BEFORE)], in_sync(message="4 of 5"), NOW, id="message-changed"),
        pytest.param(
            [conditions.make(conditions.READY, True, "Applied", "", generation=1, now=BEFORE)],
            in_sync(),
            NOW,
            id="other-type-unrelated",
        ),
    ],
)
def test_merge_transition_time(
    previous: list[Condition], current: Condition, expected_time: str
) -> None:
    """lastTransitionTime stays unless status, reason or message changed."""
    (merged,) = conditions.merge(previous, [current])
    assert merged.last_transition_time == expected_time


def test_merge_takes_current_values() -> None:
    """Apart from the kept time, the merged condition is the current one."""
    (merged,) = conditions.merge([in_sync(now=BEFORE, generation=1)], [in_sync(generation=7)])
    assert merged.observed_generation == 7
    assert merged.model_copy(update={"last_transition_time": NOW}) == in_sync(generation=7)


def test_merge_keeps_current_order_and_drops_stale_types() -> None:
    """The result lists the current conditions, in order; types no longer reported go."""
    ready = conditions.make(conditions.READY, True, "Applied", "", generation=1, now=NOW)
    stale = conditions.make("Progressing", True, "Progressing", "", generation=1, now=BEFORE)

    merged = conditions.merge([stale, in_sync(now=BEFORE)], [ready, in_sync()])

    assert [c.type for c in merged] == ["Ready", "InSync"]


def test_merge_does_not_mutate_inputs() -> None:
    """merge() returns new conditions and leaves both inputs as they were."""
    previous, current = [in_sync(now=BEFORE)], [in_sync()]

    conditions.merge(previous, current)

    assert (previous[0].last_transition_time, current[0].last_transition_time) == (BEFORE, NOW)


@pytest.mark.parametrize(("is_true", "status"), [(True, "True"), (False, "False")])
def test_make_status_string(is_true: bool, status: str) -> None:
    """make() writes status as the strings metav1.Condition uses."""
    assert in_sync(is_true).status == status


def test_condition_serialises_in_metav1_shape() -> None:
    """A condition dumps with camelCase keys as the API expects."""
    body = in_sync().model_dump(by_alias=True, exclude_none=True)
    assert body == {
        "type": "InSync",
        "status": "True",
        "reason": "InSync",
        "message": "5 of 5 objects in sync",
        "lastTransitionTime": NOW,
        "observedGeneration": 1,
    }
