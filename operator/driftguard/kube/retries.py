"""Transient failures retried (tenacity), and the process's episodes of 429s (`Throttle`)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import tenacity

from driftguard.kube.errors import ApiError
from driftguard.telemetry.logs import get as get_logger

__all__ = ["THROTTLE", "Throttle", "retrying"]

T = TypeVar("T")

log = get_logger(__name__)

RETRIES = 4
# A 429 is the server asking for patience, not a failure: wait longer before giving up.
THROTTLED_RETRIES = 10
BACKOFF_S = 0.2
MAX_WAIT_S = 60.0
JITTER = 0.2
# 429s this close together are one episode: one `throttled` line, one `throttle_cleared`.
QUIET_S = 2.0

_BACKOFF = tenacity.wait_exponential(multiplier=BACKOFF_S, max=MAX_WAIT_S)  # 0.2, 0.4, 0.8 s...


class Throttle:
    """The process's episodes of 429s, logged once when one begins and once when it ends.

    Every request refused with 429 waits at least the server's Retry-After (plus up to
    20 % jitter, so that refused clients do not all come back in the same instant), capped
    at a minute. An episode ends once no request waits any longer and none has been
    refused for QUIET_S; `throttle_cleared` then says how many 429s it took and how long.
    """

    def __init__(
        self,
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        quiet: float = QUIET_S,
    ) -> None:
        self.sleep = sleep
        self._clock = clock
        self._jitter = jitter
        self._quiet = quiet
        self._began: float | None = None
        self._last_ok = 0.0
        self._refusals = 0
        self._waiting = 0
        self._closer: asyncio.TimerHandle | None = None

    @property
    def is_throttled(self) -> bool:
        return self._began is not None

    def wait(self, state: tenacity.RetryCallState) -> float:
        """Seconds to wait before the next attempt: the backoff or Retry-After, jittered."""
        wait = min(max(_BACKOFF(state), _failure(state).retry_after or 0.0), MAX_WAIT_S)
        return float(wait * (1 + JITTER * self._jitter()))

    def refused(self, exc: ApiError, *, is_new: bool) -> None:
        """One 429 arrived (`is_new`: to a request not already waiting); the first of an
        episode is logged."""
        if self._closer is not None:
            self._closer.cancel()
            self._closer = None
        if self._began is None:
            self._began, self._refusals = self._clock(), 0
            log.warning(
                "throttled",
                request=exc.verb or None,
                kind=exc.kind or None,
                retry_after=exc.retry_after,
                message=exc.message,
            )
        self._refusals += 1
        self._waiting += is_new

    def resumed(self, *, succeeded: bool) -> None:
        """A request that was refused is done waiting (answered, or given up on)."""
        self._waiting -= 1
        if succeeded:
            self._last_ok = self._clock()
        if self._waiting == 0 and self._began is not None:
            self._closer = asyncio.get_running_loop().call_later(self._quiet, self._clear)

    def _clear(self) -> None:
        self._closer = None
        if self._waiting or self._began is None:
            return
        log.info(
            "throttle_cleared",
            attempts=self._refusals,
            seconds=round(max(self._last_ok - self._began, 0.0), 3),
        )
        self._began = None


THROTTLE = Throttle()


async def retrying(call: Callable[[], Awaitable[T]], *, throttle: Throttle | None = None) -> T:
    """Retries transient failures (timeouts, 429, 5xx) with exponential backoff.

    A 429 waits at least as long as its Retry-After says, and counts toward the
    process's throttling episode (`Throttle`) instead of logging each refusal.
    """
    try:
        # Nearly every request is answered at once: that costs no retry machinery
        # (tenacity's set-up is about 24 us a call, 100 times the call itself).
        return await call()
    except ApiError as exc:
        if not exc.is_transient:
            raise
        first: ApiError | None = exc
    throttle = throttle or THROTTLE
    request = _Request(throttle)
    retry = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(_is_transient),
        stop=_is_out_of_tries,
        wait=throttle.wait,
        before_sleep=request.refused,
        sleep=throttle.sleep,
        reraise=True,  # the last ApiError itself, not a tenacity.RetryError
    )

    async def attempt() -> T:
        nonlocal first
        if first is not None:  # tenacity's first attempt is the one that just failed
            failed, first = first, None
            raise failed
        # tenacity awaits only what a coroutine function returns; `call` is mostly a lambda.
        return await call()

    try:
        result: T = await retry(attempt)
    except BaseException:
        request.resumed(succeeded=False)
        raise
    request.resumed(succeeded=True)
    return result


class _Request:
    """One call's part in a throttling episode: it counts from its first 429 until it is
    answered or given up on."""

    def __init__(self, throttle: Throttle) -> None:
        self._throttle = throttle
        self._throttled = False

    def refused(self, state: tenacity.RetryCallState) -> None:
        """Before each wait: a 429 joins (or begins) the episode."""
        exc = _failure(state)
        if exc.is_throttled:
            self._throttle.refused(exc, is_new=not self._throttled)
            self._throttled = True

    def resumed(self, *, succeeded: bool) -> None:
        if self._throttled:
            self._throttle.resumed(succeeded=succeeded)
            self._throttled = False


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.is_transient


def _is_out_of_tries(state: tenacity.RetryCallState) -> bool:
    """RETRIES retries of a failure, THROTTLED_RETRIES of a 429 (counting every try)."""
    limit = THROTTLED_RETRIES if _failure(state).is_throttled else RETRIES
    return state.attempt_number > limit


def _failure(state: tenacity.RetryCallState) -> ApiError:
    """The ApiError of a failed attempt (only those are retried)."""
    exc = state.outcome.exception() if state.outcome is not None else None
    assert isinstance(exc, ApiError), exc
    return exc
