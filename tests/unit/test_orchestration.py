"""The watcher and the loop through faults, on a fake of driftguard's own Cluster protocol.

Each test runs in milliseconds: the engine gets short backoffs and inactivity timeouts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from driftguard.core import model, plan
from driftguard.core.declared import Declared
from driftguard.kube.cluster import Resource
from driftguard.kube.watcher import Timing
from driftguard.runtime.engine import Engine
from driftguard.runtime.reconcile import PASSES_AT_ONCE
from driftguard.runtime.subscriptions import NAMED_WATCHES
from driftguard.telemetry import metrics

from .fakecluster import FakeCluster

FAST = Timing(
    backoff=0.01,
    backoff_cap=0.05,
    forbidden_retry=0.05,
    inactivity=0.3,
    quick_end=0.0,
    fight_backoff=0.2,
)
NS = "team-a"


def configmap(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def environment(name: str, resources: list[dict[str, Any]], **spec: Any) -> Declared:
    return Declared.of(
        {
            "metadata": {"name": name, "namespace": NS, "generation": 1, "uid": f"uid-{name}"},
            "spec": {"resources": resources, **spec},
        }
    )


async def until(predicate: Callable[[], Any], *, timeout: float = 3.0) -> Any:
    """Polls the event loop until `predicate()` holds; fails at the deadline."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {predicate.__doc__ or predicate}")
        await asyncio.sleep(0.005)
    return result


@pytest.fixture
async def fake() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
async def engine(fake: FakeCluster) -> AsyncIterator[Engine]:
    engine = Engine(fake, timing=FAST)
    yield engine
    await engine.close()


def value(fake: FakeCluster, name: str, key: str = "DB_VERSION") -> str:
    return str(fake.objects[(NS, name)]["data"][key])


def last_status(fake: FakeCluster) -> dict[str, Any]:
    return fake.statuses[-1] if fake.statuses else {}


def condition(fake: FakeCluster, type_: str) -> dict[str, Any]:
    found = [c for c in last_status(fake).get("conditions", []) if c["type"] == type_]
    return found[0] if found else {}


async def in_sync(
    engine: Engine, fake: FakeCluster, *resources: dict[str, Any], **spec: Any
) -> None:
    await engine.environment_changed(environment("web", list(resources), **spec))
    await until(lambda: condition(fake, "InSync").get("status") == "True")


async def test_edit_is_reverted_from_the_watch_event(engine: Engine, fake: FakeCluster) -> None:
    """With healthy watches, a manual edit is reverted from its watch event alone."""
    await in_sync(engine, fake, configmap("web", DB_VERSION="5.7"))
    lists = fake.lists

    fake.edit(NS, "web", "kubectl-patch", DB_VERSION="5.5")

    await until(lambda: value(fake, "web") == "5.7")
    assert fake.lists == lists  # judged in memory: no list, no get
    message = (
        "ConfigMap/team-a/web drifted at /data/DB_VERSION by kubectl-patch; "
        "reverted to the blueprint"
    )
    await until(lambda: ("DriftReverted", message) in fake.events)


async def test_dropped_stream_restarts_and_judges_what_changed_meanwhile(
    engine: Engine, fake: FakeCluster
) -> None:
    """A stream that breaks is restarted after a backoff, and an edit made in the gap is reverted."""
    await in_sync(engine, fake, configmap("web", DB_VERSION="5.7"))
    restarts = metrics.watch_restarts.labels("ConfigMap")._value.get()
    fake.stall()  # the edit below happens while no watch delivers
    fake.break_streams()
    await until(lambda: fake.open_streams == 0)
    fake.edit(NS, "web", "kubectl-patch", DB_VERSION="5.5")

    await until(lambda: value(fake, "web") == "5.7")
    await until(lambda: metrics.watch_restarts.labels("ConfigMap")._value.get() == restarts + 1)
    assert metrics.watches.labels("healthy")._value.get() >= 1


async def test_gone_relists_and_judges_every_object(engine: Engine, fake: FakeCluster) -> None:
    """A 410 Gone in the stream re-lists the scope and reverts what drifted unseen."""
    await in_sync(
        engine, fake, configmap("web", DB_VERSION="5.7"), configmap("db", DB_VERSION="5.7")
    )
    fake.stall()
    fake.edit(NS, "db", "kubectl-edit", DB_VERSION="5.5")
    lists = fake.lists

    fake.expire_streams()

    await until(lambda: value(fake, "db") == "5.7")
    assert fake.lists > lists
    assert value(fake, "web") == "5.7"


async def test_stalled_connection_is_noticed_by_the_inactivity_timeout(
    engine: Engine, fake: FakeCluster
) -> None:
    """A half-open watch that delivers nothing is dropped after the inactivity timeout."""
    await in_sync(engine, fake, configmap("web", DB_VERSION="5.7"))
    fake.stall()
    fake.edit(NS, "web", "kubectl-patch", DB_VERSION="5.5")
    await asyncio.sleep(0)  # the stalled watch saw nothing
    assert value(fake, "web") == "5.5"

    await until(lambda: value(fake, "web") == "5.7", timeout=3 * FAST.inactivity + 1)


async def test_server_ending_the_stream_resumes_without_a_list(
    engine: Engine, fake: FakeCluster
) -> None:
    """The server's own timeout ends a stream; the watch resumes from its version, no re-list."""
    await in_sync(engine, fake, configmap("web", DB_VERSION="5.7"))
    lists = fake.lists
    calls = fake.watch_calls
    fake.end_streams()
    await until(lambda: fake.watch_calls > calls)

    fake.edit(NS, "web", "kubectl-patch", DB_VERSION="5.5")

    await until(lambda: value(fake, "web") == "5.7")
    assert fake.lists == lists


async def test_a_burst_of_events_settles_into_few_status_writes(
    engine: Engine, fake: FakeCluster
) -> None:
    """Twenty edits in one burst (Observe) end in one status naming all twenty, in few writes."""
    names = [f"cm-{i:02d}" for i in range(20)]
    for name in names:
        fake.create(NS, name, "kubectl-create", DB_VERSION="5.7")
    await in_sync(engine, fake, *(configmap(n, DB_VERSION="5.7") for n in names), mode="Observe")
    writes = len(fake.statuses)

    for name in names:
        fake.edit(NS, name, "kubectl-patch", DB_VERSION="5.5")

    await until(lambda: last_status(fake).get("summary", {}).get("drifted") == 20)
    assert len(fake.statuses) - writes <= 3
    assert all(value(fake, name) == "5.5" for name in names)  # Observe changes nothing


async def test_observe_watches_its_few_unlabelled_objects_by_name(
    engine: Engine, fake: FakeCluster
) -> None:
    """Observe over objects it never labelled: one watch each, filtered by name on the server,
    none of the namespace whole; a change to one of them is flagged, and so is one made while
    the watches were away (410 Gone: each lists its object again)."""
    for name in ("web", "db", "other"):
        fake.create(NS, name, "kubectl-create", DB_VERSION="5.7")
    await in_sync(
        engine,
        fake,
        configmap("web", DB_VERSION="5.7"),
        configmap("db", DB_VERSION="5.7"),
        mode="Observe",
    )
    unlabelled = {(ns, name) for ns, selector, name in fake.watched if not selector}
    assert unlabelled == {(NS, "web"), (NS, "db")}  # not (NS, ""): the namespace whole

    fake.edit(NS, "db", "kubectl-patch", DB_VERSION="5.5")

    await until(lambda: last_status(fake).get("summary", {}).get("drifted") == 1)
    assert value(fake, "db") == "5.5"  # Observe changes nothing
    flagged = [m for reason, m in fake.events if reason == "DriftDetected"]
    assert any("ConfigMap/team-a/db" in m and "kubectl-patch" in m for m in flagged)

    fake.stall()
    fake.edit(NS, "web", "kubectl-edit", DB_VERSION="5.5")
    fake.expire_streams()

    await until(lambda: last_status(fake).get("summary", {}).get("drifted") == 2)


async def test_observe_watches_many_unlabelled_objects_through_their_namespace(
    engine: Engine, fake: FakeCluster
) -> None:
    """Past NAMED_WATCHES objects in an Environment, one unfiltered watch of the namespace."""
    names = [f"cm-{i:02d}" for i in range(NAMED_WATCHES + 1)]
    for name in names:
        fake.create(NS, name, "kubectl-create", DB_VERSION="5.7")
    await in_sync(engine, fake, *(configmap(n, DB_VERSION="5.7") for n in names), mode="Observe")
    unlabelled = {(ns, name) for ns, selector, name in fake.watched if not selector}
    assert unlabelled == {(NS, "")}

    fake.edit(NS, names[-1], "kubectl-patch", DB_VERSION="5.5")

    await until(lambda: last_status(fake).get("summary", {}).get("drifted") == 1)


async def test_a_fight_backs_off_and_says_with_whom(engine: Engine, fake: FakeCluster) -> None:
    """A rival past the fight limit is Fighting, named in an Event, and still reverted after a backoff."""
    await in_sync(engine, fake, configmap("web", DB_VERSION="5.7"))

    for _ in range(plan.FIGHT_LIMIT):
        fake.edit(NS, "web", "rival", DB_VERSION="5.5")
        await until(lambda: value(fake, "web") == "5.7")
    fake.edit(NS, "web", "rival", DB_VERSION="5.5")
    edited = time.monotonic()

    await until(lambda: any(reason == "Fighting" for reason, _ in fake.events))
    assert value(fake, "web") == "5.5"  # not at once: the backoff first
    await until(lambda: value(fake, "web") == "5.7", timeout=2)
    assert time.monotonic() - edited >= FAST.fight_backoff
    fighting = [message for reason, message in fake.events if reason == "Fighting"]
    assert "with rival" in fighting[0]
    await until(lambda: last_status(fake)["resources"][0]["reverts"] == plan.FIGHT_LIMIT + 1)


async def test_a_persistent_rival_cannot_spin_the_operator(
    engine: Engine, fake: FakeCluster
) -> None:
    """A rival that rewrites at once after every revert gets ever longer backoffs, not a hot loop."""
    await in_sync(engine, fake, configmap("web", DB_VERSION="5.7"))
    applies = fake.applied[NS, "web"]
    deadline = time.monotonic() + 1.5

    while time.monotonic() < deadline:  # the rival: an autoscaler that never gives up
        if value(fake, "web") == "5.7":
            fake.edit(NS, "web", "rival", DB_VERSION="5.5")
        await asyncio.sleep(0.005)

    # 5 reverts reach the limit; then 0.2 s, 0.4 s, 0.8 s backoffs fit at most 3 more.
    reverts = fake.applied[NS, "web"] - applies  # not the audit trail's flushes
    assert plan.FIGHT_LIMIT < reverts <= plan.FIGHT_LIMIT + 3  # it kept reverting, slowly


async def test_forbidden_list_is_a_state_not_an_exception(
    engine: Engine, fake: FakeCluster
) -> None:
    """A list RBAC refuses makes Ready False/Forbidden naming verb, kind and namespace; nothing applied."""
    fake.forbidden.add("list")

    await engine.environment_changed(environment("web", [configmap("web", DB_VERSION="5.7")]))

    ready = await until(
        lambda: condition(fake, "Ready").get("reason") == "Forbidden" and condition(fake, "Ready")
    )
    assert ready["status"] == "False"
    assert "cannot list ConfigMap" in ready["message"]
    assert fake.applies == 0
    await until(lambda: any(reason == "Forbidden" for reason, _ in fake.events))


async def test_forbidden_watch_is_reported_and_recovers(engine: Engine, fake: FakeCluster) -> None:
    """A watch RBAC refuses sets Forbidden; once allowed, a new pass applies and Ready returns."""
    fake.forbidden.add("watch")

    await engine.environment_changed(environment("web", [configmap("web", DB_VERSION="5.7")]))
    await until(lambda: condition(fake, "Ready").get("reason") == "Forbidden")
    assert "cannot watch ConfigMap" in condition(fake, "Ready")["message"]
    assert fake.applies == 0
    assert engine.watches.lost_for(0) == []  # RBAC is not a liveness failure

    fake.forbidden.clear()

    await until(lambda: condition(fake, "Ready").get("status") == "True", timeout=5)
    assert value(fake, "web") == "5.7"


async def test_a_watch_refused_as_the_server_comes_back_ends_in_restored(
    engine: Engine, fake: FakeCluster
) -> None:
    """Lost, then refused (a restarted API server answers 403 until its RBAC cache is filled),
    then back: one outage, counted as one restart; the refusal is no liveness failure."""
    await in_sync(engine, fake, configmap("web", DB_VERSION="5.7"))
    restarts = metrics.watch_restarts.labels("ConfigMap")._value.get()
    fake.unreachable = True
    fake.break_streams()
    await until(lambda: engine.watches.lost_for(0))

    fake.forbidden.add("list")
    fake.unreachable = False
    await until(lambda: metrics.watches.labels("forbidden")._value.get() >= 1)
    assert engine.watches.lost_for(0) == []
    fake.forbidden.clear()

    await until(lambda: metrics.watch_restarts.labels("ConfigMap")._value.get() == restarts + 1)
    await until(lambda: metrics.watches.labels("forbidden")._value.get() == 0)


async def test_lost_watch_is_reported_for_liveness(engine: Engine, fake: FakeCluster) -> None:
    """A watch that stays down is what the liveness probe reports, until it is back."""
    await in_sync(engine, fake, configmap("web", DB_VERSION="5.7"))
    fake.unreachable = True
    fake.break_streams()

    await until(lambda: engine.watches.lost_for(0.05))
    assert metrics.watches.labels("lost")._value.get() >= 1

    fake.unreachable = False
    await until(lambda: not engine.watches.lost_for(0))


async def test_environments_created_together_pass_a_few_at_a_time(fake: FakeCluster) -> None:
    """Twenty Environments arriving at once are all brought in sync, but no more than
    PASSES_AT_ONCE of them apply at the same moment: a burst holds a few passes' answers
    in memory, not every pass's."""
    applying: dict[str, int] = {}
    most = 0
    plain_apply = fake.apply

    async def apply(
        resource: Resource, manifest: dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        nonlocal most
        owner = manifest["metadata"]["labels"][model.LABEL_ENVIRONMENT]
        applying[owner] = applying.get(owner, 0) + 1
        most = max(most, len(applying))
        try:
            await asyncio.sleep(0.002)
            return await plain_apply(resource, manifest, dry_run=dry_run)
        finally:
            applying[owner] -= 1
            if not applying[owner]:
                del applying[owner]

    fake.apply = apply  # type: ignore[method-assign]
    engine = Engine(fake, timing=FAST)
    names = [f"env-{i:02d}" for i in range(20)]
    try:
        await asyncio.gather(
            *(
                engine.environment_changed(
                    environment(name, [configmap(f"{name}-{j}", v=str(j)) for j in range(5)])
                )
                for name in names
            )
        )
        await until(lambda: all((NS, f"{name}-4") in fake.objects for name in names))
    finally:
        await engine.close()

    assert 1 < most <= PASSES_AT_ONCE, most


def test_a_refused_watch_is_asked_again_soon_then_once_a_minute() -> None:
    """An API server just restarted answers 403 until its RBAC cache is filled: the first
    retries come within a second or two; a refusal that lasts is asked about at most once
    a minute, never more seldom."""
    timing = Timing()
    waits = [timing.delay(failures, cap=timing.forbidden_retry) for failures in range(1, 12)]
    assert waits[0] <= 0.5
    assert waits[1] <= 1.0
    assert all(30.0 <= wait <= 60.0 for wait in waits[8:])


async def test_an_edit_seen_while_a_new_replica_first_passes_is_reverted(
    engine: Engine, fake: FakeCluster
) -> None:
    """A replica that takes over (a restart, a rollout, a failover) learns its objects in
    its first pass. An edit that its watch delivers after the pass listed the objects, but
    before the pass had a record of them, is judged once the pass is done, not dropped."""
    await in_sync(engine, fake, configmap("web", DB_VERSION="5.7"))
    status = last_status(fake)
    await engine.close()
    plain_list = fake.list_objects
    edited = False

    async def list_objects(resource: Resource, **options: Any) -> tuple[list[Any], str]:
        nonlocal edited
        found = await plain_list(resource, **options)
        if not options.get("limit") and not edited:  # the pass's own list, not the watch's
            edited = True
            fake.edit(NS, "web", "kubectl-patch", DB_VERSION="5.5")
        return found

    fake.list_objects = list_objects  # type: ignore[method-assign]
    successor = Engine(fake, timing=FAST)
    try:
        declared = environment("web", [configmap("web", DB_VERSION="5.7")])
        await successor.environment_changed(Declared.of({**declared.body, "status": status}))
        assert edited
        await until(lambda: value(fake, "web") == "5.7")
    finally:
        await successor.close()


async def test_a_successor_keeps_the_status_it_receives_as_an_inventory_only(
    engine: Engine, fake: FakeCluster
) -> None:
    """A restart that changes nothing writes no status, so no write comes to drop the
    entries it received: the ledger keeps only which kinds and namespaces they name, and
    that still leads the pass to what a later generation leaves behind (pruned)."""
    await in_sync(engine, fake, configmap("web", DB_VERSION="5.7"), configmap("old", v="1"))
    status = last_status(fake)
    await engine.close()
    writes = len(fake.statuses)
    successor = Engine(fake, timing=FAST)
    try:
        declared = environment("web", [configmap("web", DB_VERSION="5.7"), configmap("old", v="1")])
        await successor.environment_changed(Declared.of({**declared.body, "status": status}))
        kept = successor.environments[(NS, "web")].ledger
        assert kept.ready[0], kept.ready
        assert len(fake.statuses) == writes  # in sync as received: nothing to write
        assert kept.status.resources == []
        assert kept.inventory == {("v1", "ConfigMap", NS)}

        emptied = Declared.of(
            {
                "metadata": {**declared.body["metadata"], "generation": 2},
                "spec": {"resources": []},
            }
        )
        await successor.environment_changed(emptied)
        await until(lambda: not fake.objects)
    finally:
        await successor.close()
