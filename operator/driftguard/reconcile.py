"""One Environment kept in line: read -> render -> diff -> plan -> apply -> status.

A full pass applies (Enforce) or dry-runs (Observe) the whole blueprint, prunes
and learns what each object must look like. After that, every watch event on a
managed object is judged alone against that expectation, in memory, and only
drift costs a request. Status is written once things settle, and only when it
changed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from driftguard import apply, diff, metrics, model, plan, render, tracking
from driftguard.cluster import ApiError, Cluster, Resource, UnknownKindError
from driftguard.conditions import Reason
from driftguard.logs import get as get_logger
from driftguard.model import EnvironmentSpec, InvalidSpecError, Mode, ObjectKey, State
from driftguard.tracking import Tracked

log = get_logger(__name__)

PARALLEL_APPLIES = 16

Post = Callable[[dict[str, Any], str, str, bool], None]
EnsureWatch = Callable[[Resource, str | None, render.Owner | None], Awaitable[None]]


class Runner:
    """The live state of one Environment and the loop that keeps it."""

    def __init__(
        self, cluster: Cluster, body: dict[str, Any], *, post: Post, ensure_watch: EnsureWatch
    ) -> None:
        meta = body["metadata"]
        self.owner = render.Owner(name=meta["name"], namespace=meta["namespace"])
        self.cluster = cluster
        self.body = body
        self._post = post
        self._ensure_watch = ensure_watch
        self.spec: EnvironmentSpec | None = None
        self.tracked: dict[ObjectKey, Tracked] = {}
        self.status = model.EnvironmentStatus.model_validate(body.get("status") or {})
        self._written = self.status.to_body()
        self._ready: tuple[bool, str, str] = (False, Reason.PROGRESSING, "first pass pending")
        self._pending: dict[ObjectKey, tuple[dict[str, Any] | None, float]] = {}
        self._active: dict[ObjectKey, asyncio.Task[None]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._pass_lock = asyncio.Lock()
        self._flush: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._status_lock = asyncio.Lock()
        self._resync: asyncio.Task[None] | None = None
        self._applied_generation: int | None = None
        self._stopped = False

    # -- the Environment ----------------------------------------------------

    @property
    def mode(self) -> Mode:
        if self.spec is None or self.spec.suspend:
            return Mode.OBSERVE
        return self.spec.mode

    async def update(self, body: dict[str, Any]) -> None:
        """A new version of the Environment: a full pass if its spec changed."""
        self.body = body
        if body["metadata"].get("generation") != self._applied_generation:
            await self.full_pass()

    async def full_pass(self) -> None:
        async with self._pass_lock:
            self._idle.clear()
            started = time.monotonic()
            try:
                await self._pass()
            finally:
                self._idle.set()
                metrics.reconcile_duration.observe(time.monotonic() - started)
        for key in list(self._pending):
            self._kick(key)
        await self.flush_status()
        self._schedule_resync()

    async def _pass(self) -> None:
        generation = self.body["metadata"].get("generation")
        try:
            spec, resources, desired = await self._render()
        except InvalidSpecError as exc:
            self._applied_generation = self.status.observed_generation = generation
            self._fail(Reason.INVALID_SPEC, str(exc))
            return
        is_new = generation != self.status.observed_generation or not self.status.revision
        self.spec, self._applied_generation = spec, generation
        for resource, namespace in {(r, k.namespace or None) for k, r in resources.items()}:
            observer = self.owner if self.mode is Mode.OBSERVE else None
            await self._ensure_watch(resource, namespace, observer)
        live = await self._list_live(resources)
        self._retire(desired)
        limit = asyncio.Semaphore(PARALLEL_APPLIES)

        async def bounded(key: ObjectKey) -> apply.Change:
            async with limit:
                return await self._sync(key, resources[key], desired[key], live.get(key), is_new)

        changes = await asyncio.gather(*(bounded(key) for key in desired))
        changes += await self._prune(desired, live)
        self._conclude(changes, generation, is_new)

    async def _render(
        self,
    ) -> tuple[EnvironmentSpec, dict[ObjectKey, Resource], dict[ObjectKey, dict[str, Any]]]:
        spec = model.parse_spec(self.body.get("spec") or {})
        kinds: dict[tuple[str, str], Resource] = {}
        for index, manifest in enumerate(spec.resources):
            wanted = (manifest["apiVersion"], manifest["kind"])
            if wanted in kinds:
                continue
            try:
                kinds[wanted] = await apply.retrying(lambda w=wanted: self.cluster.resource(*w))  # type: ignore[misc]
            except UnknownKindError as exc:
                raise InvalidSpecError(f"spec.resources[{index}]: {exc}") from exc
        desired = render.manifests(
            spec, self.owner, is_namespaced=lambda av, kind: kinds[(av, kind)].namespaced
        )
        resources = {key: kinds[(key.api_version, key.kind)] for key in desired}
        return spec, resources, desired

    async def _list_live(
        self, resources: dict[ObjectKey, Resource]
    ) -> dict[ObjectKey, tuple[Resource, dict[str, Any]]]:
        """driftguard's objects as they are, by kind: the blueprint's kinds and the last
        inventory's. Other Environments' objects come too: seeing them here finds a
        conflict without a GET per new object."""
        scopes = {(r, k.namespace or None) for k, r in resources.items()}
        for entry in self.status.resources:
            try:
                resource = await self.cluster.resource(entry.api_version, entry.kind)
            except (UnknownKindError, ApiError):
                continue  # a kind that is gone has nothing left to prune
            scopes.add((resource, entry.namespace or None))
        found: dict[ObjectKey, tuple[Resource, dict[str, Any]]] = {}
        for resource, namespace in scopes:
            items, _ = await apply.retrying(
                lambda r=resource, n=namespace: self.cluster.list_objects(  # type: ignore[misc]
                    r, namespace=n, selector=model.MANAGED_SELECTOR
                )
            )
            found.update({model.ObjectKey.of(item): (resource, item) for item in items})
        return found

    def _is_mine(self, obj: dict[str, Any]) -> bool:
        return render.owner_of(obj) == self.owner

    def _retire(self, desired: dict[ObjectKey, dict[str, Any]]) -> None:
        for key in [key for key in self.tracked if key not in desired]:
            del self.tracked[key]

    # -- one object in a full pass ------------------------------------------

    async def _sync(
        self,
        key: ObjectKey,
        resource: Resource,
        manifest: dict[str, Any],
        found: tuple[Resource, dict[str, Any]] | None,
        is_new: bool,
    ) -> apply.Change:
        tracked = self.tracked.get(key) or Tracked(key, resource, manifest)
        tracked.resource, tracked.desired = resource, manifest
        self.tracked[key] = tracked
        live = found[1] if found else None
        try:
            if live is None and self.mode is Mode.OBSERVE:
                # What Observe reports on may carry no label, so the list missed it.
                live = await apply.retrying(
                    lambda: self.cluster.get(resource, key.namespace, key.name)
                )
            other = render.owner_of(live) if live else None
            if other is not None and other != self.owner:
                return self._conflict(tracked, other)
            if self.mode is Mode.ENFORCE:
                return await self._enforce(tracked, live, is_new)
            return await self._observe(tracked, live)
        except ApiError as exc:
            tracked.state, tracked.message = State.ERROR, exc.message
            message = f"{key}: {exc.message}"
            return apply.Change(key, apply.Outcome.FAILED, message, is_forbidden=exc.is_forbidden)

    async def _enforce(
        self, tracked: Tracked, live: dict[str, Any] | None, is_new: bool
    ) -> apply.Change:
        assert self.spec is not None
        rules = plan.allowed_for(tracked.key, self.spec.allowed_changes)
        tolerated = plan.tolerate(rules, tracked.desired, live)[0] if live else frozenset()
        manifest = apply.strip(tracked.desired, tolerated)
        if not is_new and live is not None and diff.is_owned_whole(live, manifest):
            # Same blueprint, and every field we set is still ours: nothing to write.
            self._learn(tracked, live)
            self._judge(tracked, live, time.monotonic())
            return apply.Change(tracked.key, apply.Outcome.UNCHANGED)
        stored = await apply.put(self.cluster, tracked.resource, manifest)
        self._learn(tracked, stored)
        self._judge(tracked, stored, time.monotonic())
        if live is None:
            return apply.Change(tracked.key, apply.Outcome.CREATED)
        if tracking.rv(stored) == tracking.rv(live):
            return apply.Change(tracked.key, apply.Outcome.UNCHANGED)
        if is_new:
            return apply.Change(tracked.key, apply.Outcome.CONFIGURED)
        # The same blueprint changed the object: it had drifted while nobody watched.
        assert tracked.expectation is not None
        drift = diff.compute(tracked.expectation, live)
        if drift.is_drifted:
            self._record_drift(tracked, drift.changes, reverted=True)
        return apply.Change(tracked.key, apply.Outcome.REVERTED)

    async def _observe(self, tracked: Tracked, live: dict[str, Any] | None) -> apply.Change:
        # driftguard's own labels are the mark of an apply; Observe applies nothing,
        # so an object it merely watches need not carry them.
        wanted = render.without_owner_labels(tracked.desired)
        stored = await apply.put(self.cluster, tracked.resource, wanted, dry_run=True)
        self._learn(tracked, stored)
        self._judge(tracked, live, time.monotonic())
        outcome = (
            apply.Outcome.FLAGGED if tracked.pointers or live is None else apply.Outcome.UNCHANGED
        )
        return apply.Change(tracked.key, outcome)

    def _learn(self, tracked: Tracked, stored: dict[str, Any]) -> None:
        tracked.expectation = diff.expect(stored)
        if self.mode is Mode.ENFORCE:
            tracked.written_rv = tracking.rv(stored)
        tracked.message = None

    def _conflict(self, tracked: Tracked, other: render.Owner) -> apply.Change:
        message = f"{tracked.key} is managed by Environment {other}; not applied"
        tracked.state, tracked.message = State.CONFLICT, message
        self.post("Conflict", message, warning=True)
        return apply.Change(tracked.key, apply.Outcome.SKIPPED, message)

    async def _prune(
        self,
        desired: dict[ObjectKey, dict[str, Any]],
        live: dict[ObjectKey, tuple[Resource, dict[str, Any]]],
    ) -> list[apply.Change]:
        assert self.spec is not None
        if not self.spec.prune or self.mode is not Mode.ENFORCE:
            return []
        victims = [
            found for key, found in live.items() if key not in desired and self._is_mine(found[1])
        ]
        changes = await apply.prune(self.cluster, victims)
        for change in changes:
            if change.outcome is apply.Outcome.PRUNED:
                self.post("Pruned", change.message)
                log.info("pruned", environment=str(self.owner), object=str(change.key))
        return changes

    def _conclude(self, changes: list[apply.Change], generation: int | None, is_new: bool) -> None:
        failed = [change for change in changes if change.outcome is apply.Outcome.FAILED]
        self.status.observed_generation = generation
        if failed:
            forbidden = any(change.is_forbidden for change in failed)
            reason = Reason.FORBIDDEN if forbidden else Reason.APPLY_FAILED
            self._fail(reason, "; ".join(change.message for change in failed))
            return
        if is_new and self.mode is Mode.ENFORCE:
            self.status.revision += 1
            counts = _count(changes)
            self.post("Applied", f"revision {self.status.revision} applied: {counts}")
            log.info("applied", environment=str(self.owner), revision=self.status.revision)
        self._ready = (True, Reason.APPLIED, f"revision {self.status.revision} applied")
        if self.spec is not None and self.spec.suspend:
            self._ready = (True, Reason.SUSPENDED, "suspended: drift is reported, not reverted")
        elif self.mode is Mode.OBSERVE:
            message = "Observe: the blueprint is checked with dry-run applies, nothing is changed"
            self._ready = (True, Reason.OBSERVING, message)

    def _fail(self, reason: str, message: str) -> None:
        self._ready = (False, reason, message[: tracking.MESSAGE_LIMIT])
        self.post(reason, message, warning=True)
        metrics.reconcile_errors.labels(self.owner.namespace, self.owner.name, reason).inc()
        log.warning("reconcile_failed", environment=str(self.owner), reason=reason)

    # -- watch events ---------------------------------------------------------

    def observe(self, key: ObjectKey, live: dict[str, Any] | None, received: float) -> None:
        """A watch saw a managed object change (live) or go (None)."""
        tracked = self.tracked.get(key)
        if tracked is None or (live is not None and tracked.is_stale(live)):
            return
        self._pending[key] = (live, received)
        self._kick(key)

    def _kick(self, key: ObjectKey) -> None:
        if key not in self._active and not self._stopped:
            self._active[key] = asyncio.create_task(self._settle(key))

    async def _settle(self, key: ObjectKey) -> None:
        try:
            await self._idle.wait()
            while key in self._pending and self._idle.is_set():
                live, received = self._pending.pop(key)
                await self._evaluate(key, live, received)
        finally:
            self._active.pop(key, None)
            self._status_soon()

    async def _evaluate(self, key: ObjectKey, live: dict[str, Any] | None, received: float) -> None:
        tracked = self.tracked.get(key)
        if tracked is None or tracked.expectation is None or self.spec is None:
            return
        if live is None:
            # A label change takes an object out of the watch's selector too.
            live = await apply.retrying(
                lambda: self.cluster.get(tracked.resource, key.namespace, key.name)
            )
        elif tracked.is_stale(live):
            return
        verdict = self._judge(tracked, live, received)
        if verdict.action in (plan.Action.REVERT, plan.Action.RECREATE):
            await self._revert(tracked, verdict, received)

    def _judge(
        self, tracked: Tracked, live: dict[str, Any] | None, received: float
    ) -> plan.Verdict:
        assert self.spec is not None
        assert tracked.expectation is not None
        drift = diff.compute(tracked.expectation, live) if live else diff.Drift()
        verdict = plan.decide(
            key=tracked.key,
            mode=self.mode,
            desired=tracked.desired,
            live=live,
            drift=drift,
            rules=self.spec.allowed_changes,
            recent_reverts=tracked.recent_reverts(received),
        )
        tracked.tolerated = verdict.tolerated
        is_news = verdict.state != tracked.state or tuple(verdict.pointers) != tracked.pointers
        if verdict.state is State.FIGHTING and is_news:
            self.post("Fighting", tracking.fighting_message(tracked.key, verdict), warning=True)
        if verdict.action is plan.Action.FLAG and is_news:
            self._record_drift(tracked, verdict.drifted, reverted=False, missing=live is None)
        tracked.state, tracked.pointers = verdict.state, tuple(verdict.pointers)
        if verdict.drifted:
            tracked.changed_by = verdict.changed_by or tracked.changed_by
        return verdict

    async def _revert(self, tracked: Tracked, verdict: plan.Verdict, received: float) -> None:
        manifest = apply.strip(tracked.desired, verdict.tolerated)
        try:
            if verdict.action is plan.Action.RECREATE:
                stored = await apply.put(self.cluster, tracked.resource, manifest)
            else:
                stored = await apply.revert(
                    self.cluster, tracked.resource, manifest, verdict.drifted
                )
        except ApiError as exc:
            tracked.state, tracked.message = State.ERROR, exc.message
            self.post("ApplyFailed", f"revert {tracked.key}: {exc.message}", warning=True)
            return
        metrics.revert_latency.labels(tracked.key.kind).observe(time.monotonic() - received)
        self._learn(tracked, stored)
        tracked.reverts += 1
        tracked.recent.append(received)
        self._record_drift(
            tracked, verdict.drifted, reverted=True, missing=verdict.state is State.MISSING
        )
        self._judge(tracked, stored, received)

    def _record_drift(
        self,
        tracked: Tracked,
        changes: Iterable[diff.FieldChange],
        *,
        reverted: bool,
        missing: bool = False,
    ) -> None:
        changes = tuple(changes)
        pointers = sorted({change.pointer for change in changes})
        manager = diff.Drift(changes).changed_by
        when = tracking.now()
        tracked.last_drift_time = when
        tracked.changed_by = manager or tracked.changed_by
        what = "was deleted" if missing else f"drifted at {', '.join(pointers)}"
        by = f" by {manager}" if manager else ""
        labels = (self.owner.namespace, self.owner.name, tracked.key.kind)
        metrics.drift_detected.labels(*labels).inc()
        self.post("DriftDetected", f"{tracked.key} {what}{by}", warning=not reverted)
        if reverted:
            metrics.drift_reverted.labels(*labels).inc()
            self.post("DriftReverted", f"{tracked.key} {what}{by}; reverted to the blueprint")
        self.status.last_drift = model.LastDrift(
            time=when, object=str(tracked.key), paths=pointers or ["/"], changed_by=manager
        )
        log.info(
            "drift_reverted" if reverted else "drift_detected",
            environment=str(self.owner),
            object=str(tracked.key),
            paths=pointers,
            changed_by=manager,
        )

    # -- status ---------------------------------------------------------------

    def post(self, reason: str, message: str, *, warning: bool = False) -> None:
        self._post(self.body, reason, message, warning)

    def _status_soon(self) -> None:
        if self._flush is None and not self._stopped:
            loop = asyncio.get_running_loop()
            # A short delay lets a burst of events settle into one status write.
            self._flush = loop.call_later(0.02, self._start_flush)

    def _start_flush(self) -> None:
        # The task is kept: the event loop holds tasks only weakly.
        self._flushing = asyncio.create_task(self.flush_status())

    async def flush_status(self) -> None:
        """Writes status if it changed since the last write; one write per settled burst."""
        self._flush = None
        if self._active and self._idle.is_set():
            return  # the last evaluation to finish flushes
        async with self._status_lock:  # writes in order, never two at once
            await self._write_status()

    async def _write_status(self) -> None:
        if self._stopped:
            return
        status = self.build_status()
        self._export_metrics(status.summary)  # also after a restart that writes nothing
        body = status.to_body()
        if body == self._written:
            return
        try:
            await apply.retrying(
                lambda: self.cluster.patch_status(self.owner.namespace, self.owner.name, body)
            )
        except ApiError as exc:
            if not exc.is_not_found:
                log.warning("status_failed", environment=str(self.owner), error=exc.message)
            return
        self._written, self.status = body, status

    def build_status(self) -> model.EnvironmentStatus:
        return tracking.summarize(self.status, self.tracked.values(), self._ready)

    def _export_metrics(self, summary: model.Summary) -> None:
        labels = (self.owner.namespace, self.owner.name)
        metrics.managed_resources.labels(*labels).set(summary.managed)
        metrics.drifted_resources.labels(*labels).set(summary.drifted + summary.missing)
        is_in_sync = summary.drifted + summary.missing == 0 and self._ready[0]
        metrics.environment_in_sync.labels(*labels).set(1 if is_in_sync else 0)

    # -- life cycle -----------------------------------------------------------

    def _schedule_resync(self) -> None:
        if self._resync is None and self.spec is not None and not self._stopped:
            self._resync = asyncio.create_task(self._resync_loop())

    async def _resync_loop(self) -> None:
        while not self._stopped and self.spec is not None:
            await asyncio.sleep(self.spec.resync_seconds)
            await self.resync()

    async def resync(self) -> None:
        """The safety net: re-read every managed object and judge it as a watch event would."""
        resources = {key: t.resource for key, t in self.tracked.items()}
        try:
            live = await self._list_live(resources)
        except ApiError as exc:
            log.warning("resync_failed", environment=str(self.owner), error=exc.message)
            return
        received = time.monotonic()
        for key in list(self.tracked):
            found = live.get(key)
            if found is not None and not self._is_mine(found[1]):
                found = None  # judged as gone; the GET that follows finds what it is
            self.observe(key, found[1] if found else None, received)

    def stop(self) -> None:
        self._stopped = True
        for task in [*self._active.values(), self._resync]:
            if task is not None:
                task.cancel()
        kinds = {key.kind for key in self.tracked}
        metrics.forget(self.owner.namespace, self.owner.name, kinds=kinds)


def _count(changes: list[apply.Change]) -> str:
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.outcome.value] = counts.get(change.outcome.value, 0) + 1
    return ", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items()))
