"""retries.retrying and its Throttle: Retry-After honoured, one log line per 429 episode.

No server and no real waiting: the Throttle sleeps on a fake clock, with no jitter
unless a test asks for it, and a quiet period of zero (its close runs on the next turn
of the event loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from driftguard.kube import retries
from driftguard.kube.client import KubeCluster
from driftguard.kube.errors import ApiError
from driftguard.kube.library import ApiClient, Configuration


class Clock:
    """A clock that moves only when the Throttle sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def throttle(clock: Clock, *, jitter: float = 0.0) -> retries.Throttle:
    return retries.Throttle(sleep=clock.sleep, clock=clock, jitter=lambda: jitter, quiet=0.0)


def refusing(*errors: ApiError) -> Callable[[], Any]:
    """A call that raises each error in turn, then answers "ok"."""
    pending = iter(errors)

    async def call() -> str:
        for error in pending:
            raise error
        return "ok"

    return call


def too_many(retry_after: float | None = 1.0) -> ApiError:
    return ApiError(429, "TooManyRequests", "Too many requests", retry_after=retry_after)


async def settle() -> None:
    """Lets the Throttle's close (scheduled with a zero quiet period) run."""
    for _ in range(3):
        await asyncio.sleep(0)


def events(logs: list[dict[str, Any]]) -> list[str]:
    return [entry["event"] for entry in logs if entry["event"].startswith("throttle")]


@pytest.fixture
def logs() -> Iterator[list[Any]]:
    with capture_logs() as captured:
        yield captured


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(3.0, 3.0), (0.0, 0.2), (None, 0.2), (600.0, retries.MAX_WAIT_S)],
    ids=["retry-after-longer-than-backoff", "zero", "absent", "capped"],
)
async def test_waits_at_least_retry_after_up_to_the_cap(
    clock: Clock, retry_after: float | None, expected: float
) -> None:
    """The first wait is the larger of Retry-After and the backoff, at most the cap."""
    answer = await retries.retrying(refusing(too_many(retry_after)), throttle=throttle(clock))

    assert answer == "ok"
    assert clock.sleeps == [pytest.approx(expected)]


async def test_jitter_only_lengthens_the_wait(clock: Clock) -> None:
    """Jitter adds up to 20 %, so a client never comes back before Retry-After."""
    await retries.retrying(refusing(too_many(2.0)), throttle=throttle(clock, jitter=1.0))

    assert clock.sleeps == [pytest.approx(2.4)]


async def test_backoff_doubles_when_the_server_asks_less(clock: Clock) -> None:
    """Without Retry-After, 5xx and 429 alike wait 0.2 s doubling."""
    errors = [ApiError(503, "ServiceUnavailable", "x"), too_many(None), too_many(None)]

    await retries.retrying(refusing(*errors), throttle=throttle(clock))

    assert clock.sleeps == [pytest.approx(0.2), pytest.approx(0.4), pytest.approx(0.8)]


async def test_a_429_is_retried_longer_than_other_transient_errors(clock: Clock) -> None:
    """Ten 429s in a row are waited out; five 500s are not."""
    patient = await retries.retrying(
        refusing(*[too_many(1.0)] * retries.THROTTLED_RETRIES), throttle=throttle(clock)
    )
    assert patient == "ok"

    with pytest.raises(ApiError) as raised:
        await retries.retrying(
            refusing(*[ApiError(500, "InternalError", "x")] * (retries.RETRIES + 1)),
            throttle=throttle(clock),
        )
    assert raised.value.status == 500


async def test_a_permanent_error_is_not_retried(clock: Clock) -> None:
    """A 422 is raised at once, without waiting."""
    with pytest.raises(ApiError):
        await retries.retrying(refusing(ApiError(422, "Invalid", "x")), throttle=throttle(clock))

    assert clock.sleeps == []


async def test_one_episode_logs_once_for_many_refused_requests(
    clock: Clock, logs: list[dict[str, Any]]
) -> None:
    """Twenty requests each refused three times log one `throttled` and one
    `throttle_cleared` counting all sixty 429s."""
    shared = throttle(clock)
    calls = [refusing(too_many(1.0), too_many(1.0), too_many(1.0)) for _ in range(20)]

    answers = await asyncio.gather(*(retries.retrying(call, throttle=shared) for call in calls))
    await settle()

    assert answers == ["ok"] * 20
    assert events(logs) == ["throttled", "throttle_cleared"]
    cleared = logs[-1]
    assert cleared["attempts"] == 60
    assert cleared["seconds"] > 0
    assert logs[0]["retry_after"] == 1.0
    assert not shared.is_throttled


async def test_episode_stays_open_while_a_request_still_waits(
    clock: Clock, logs: list[dict[str, Any]]
) -> None:
    """One request answered while another is still refused does not end the episode."""
    shared = throttle(clock)
    quick = retries.retrying(refusing(too_many(1.0)), throttle=shared)
    slow = retries.retrying(refusing(*[too_many(1.0)] * 4), throttle=shared)

    await asyncio.gather(quick, slow)
    await settle()

    assert events(logs) == ["throttled", "throttle_cleared"]
    assert logs[-1]["attempts"] == 5


async def test_two_episodes_apart_log_twice(clock: Clock, logs: list[dict[str, Any]]) -> None:
    """429s separated by a quiet period are two episodes, each logged begin and end."""
    shared = throttle(clock)

    await retries.retrying(refusing(too_many(1.0)), throttle=shared)
    await settle()
    await retries.retrying(refusing(too_many(1.0), too_many(1.0)), throttle=shared)
    await settle()

    assert events(logs) == ["throttled", "throttle_cleared"] * 2
    assert [entry["attempts"] for entry in logs if entry["event"] == "throttle_cleared"] == [1, 2]


async def test_giving_up_still_ends_the_episode(clock: Clock, logs: list[dict[str, Any]]) -> None:
    """A request refused past the limit raises, and the episode is closed, not left open."""
    shared = throttle(clock)

    with pytest.raises(ApiError):
        await retries.retrying(
            refusing(*[too_many(1.0)] * (retries.THROTTLED_RETRIES + 1)), throttle=shared
        )
    await settle()

    assert events(logs) == ["throttled", "throttle_cleared"]
    assert not shared.is_throttled


async def test_no_429_logs_nothing(clock: Clock, logs: list[dict[str, Any]]) -> None:
    """A 503 retried is no throttling episode."""
    await retries.retrying(refusing(ApiError(503, "x", "y")), throttle=throttle(clock))
    await settle()

    assert events(logs) == []


async def test_a_refused_discovery_is_retried_once_for_every_caller_waiting(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty passes wanting the same kind while discovery is refused: the one holding the
    lock waits Retry-After and asks again; the others do not each ask at once."""
    monkeypatch.setattr(retries.THROTTLE, "sleep", clock.sleep)
    asked: list[str] = []
    answers = iter([too_many(1.0)])

    async def discovery(method: str, path: str, **_: Any) -> dict[str, Any]:
        asked.append(path)
        for error in answers:
            raise error
        kinds = [{"name": "configmaps", "kind": "ConfigMap", "namespaced": True}]
        return {"resources": kinds}

    api = KubeCluster(ApiClient(Configuration()))
    monkeypatch.setattr(api, "_json", discovery)

    found = await asyncio.gather(*(api.resource("v1", "ConfigMap") for _ in range(20)))

    assert asked == ["/api/v1", "/api/v1"]
    assert clock.sleeps == [pytest.approx(1.0, abs=0.2)]
    assert {resource.plural for resource in found} == {"configmaps"}
