"""Passes: a semaphore of full passes that hands freed memory back once a burst settles."""

from __future__ import annotations

import asyncio

import pytest

from driftguard.runtime.memory import Passes, rss_mb


def _counting() -> tuple[list[int], Passes]:
    calls: list[int] = []
    passes = Passes(2, trim=lambda: calls.append(1), quiet_s=0.05, every_s=0.3)
    return calls, passes


async def _until(check, timeout: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not reached"
        await asyncio.sleep(0.01)


async def test_at_most_at_once_run_together() -> None:
    _, passes = _counting()
    running, most = 0, 0

    async def one() -> None:
        nonlocal running, most
        async with passes:
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.02)
            running -= 1

    await asyncio.gather(*(one() for _ in range(7)))
    assert most == 2


async def test_trims_once_after_a_burst_settles_never_during_it() -> None:
    calls, passes = _counting()
    release = asyncio.Event()

    async def one() -> None:
        async with passes:
            await release.wait()

    burst = [asyncio.create_task(one()) for _ in range(5)]  # 2 running, 3 waiting
    await asyncio.sleep(0.2)  # longer than quiet_s: busy all along, no trim
    assert calls == []
    release.set()
    await asyncio.gather(*burst)
    await _until(lambda: calls == [1])
    await asyncio.sleep(0.1)
    assert calls == [1]  # once for the whole burst


async def test_a_pass_starting_in_the_quiet_moment_puts_the_trim_off() -> None:
    calls, passes = _counting()
    async with passes:
        pass
    await asyncio.sleep(0.02)  # within quiet_s
    async with passes:
        await asyncio.sleep(0.1)  # the first burst's timer would have fired meanwhile
        assert calls == []
    await _until(lambda: calls == [1])


async def test_trims_no_more_often_than_every_s() -> None:
    calls, passes = _counting()
    async with passes:
        pass
    await _until(lambda: len(calls) == 1)
    started = asyncio.get_running_loop().time()
    async with passes:
        pass
    await _until(lambda: len(calls) == 2)
    assert asyncio.get_running_loop().time() - started >= 0.25  # every_s after the first


async def test_a_cancelled_wait_frees_nothing_it_did_not_take() -> None:
    passes = Passes(1, trim=lambda: None, quiet_s=0.05)
    holder = asyncio.Event()

    async def hold() -> None:
        async with passes:
            await holder.wait()

    first = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    waiting = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    holder.set()
    await first
    async with passes:  # the one slot is free again, not taken twice nor lost
        pass


def test_rss_is_read_from_proc() -> None:
    assert rss_mb() > 1


def test_a_long_collection_is_logged_with_how_long_it_took(capsys) -> None:  # type: ignore[no-untyped-def]
    from driftguard.runtime.memory import Collections
    from driftguard.telemetry import logs

    logs.configure(level="INFO")
    watcher = Collections(long_s=0.0)  # every collection counts as long here
    watcher("start", {"generation": 2})
    watcher("stop", {"generation": 2, "collected": 3})
    quiet = Collections(long_s=60.0)
    quiet("start", {"generation": 0})
    quiet("stop", {"generation": 0, "collected": 0})
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if "gc_pause" in line]
    assert len(lines) == 1, lines
    assert '"generation": 2' in lines[0]
    assert '"collected": 3' in lines[0]
