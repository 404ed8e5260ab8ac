"""A full pass over one Environment: render, watch, list, apply or dry-run, prune.

It learns what each object must look like (the server's answer to our apply or
dry-run apply), so that watch events can be judged in memory afterwards. An
invalid blueprint or a refused read stops the pass before anything is written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from driftguard import apply, diff, model, plan, render, tracking
from driftguard.changes import Change, Outcome
from driftguard.cluster import ApiError, Cluster, Resource, UnknownKindError
from driftguard.conditions import Reason
from driftguard.model import InvalidSpecError, Mode, ObjectKey, State
from driftguard.report import Reporter
from driftguard.tracking import Ledger, Tracked

PARALLEL_APPLIES = 16

Live = dict[ObjectKey, tuple[Resource, dict[str, Any]]]
NeedWatches = Callable[[set[tuple[Resource, str | None]], bool], Awaitable[list[ApiError]]]
"""Makes sure these (kind, namespace) scopes are watched (True: unlabelled objects too);
answers why RBAC refuses any of those watches."""


class FullPass:
    """One Environment's full pass; the Ledger holds what it learns."""

    def __init__(
        self, cluster: Cluster, ledger: Ledger, reporter: Reporter, *, need_watches: NeedWatches
    ) -> None:
        self._cluster = cluster
        self._ledger = ledger
        self._reporter = reporter
        self._need_watches = need_watches

    async def run(self, body: dict[str, Any]) -> None:
        ledger = self._ledger
        generation = body["metadata"].get("generation")
        ledger.applied_generation = generation
        try:
            spec, resources, desired = await self._render(body)
        except InvalidSpecError as exc:
            ledger.status.observed_generation = generation
            ledger.ready = (False, Reason.INVALID_SPEC, str(exc)[: tracking.MESSAGE_LIMIT])
            self._reporter.invalid(str(exc))
            return
        is_new = generation != ledger.status.observed_generation or not ledger.status.revision
        ledger.spec = spec
        scopes = {(resource, key.namespace or None) for key, resource in resources.items()}
        try:
            # Without its watches no drift could be seen: nothing is applied.
            for error in await self._need_watches(scopes, ledger.mode is Mode.OBSERVE):
                raise error
            live = await self.list_live(scopes)
        except ApiError as exc:
            refused = [apply.refusal(exc)]
            self._reporter.record(refused)
            self._conclude(refused, generation, is_new=False)
            return
        retired = self._retire(desired)
        limit = asyncio.Semaphore(PARALLEL_APPLIES)

        async def bounded(key: ObjectKey) -> Change:
            async with limit:
                return await self._sync(key, resources[key], desired[key], live.get(key), is_new)

        changes = list(await asyncio.gather(*(bounded(key) for key in desired)))
        pruned = await self._prune(desired, live)
        gone = {change.key for change in pruned if change.outcome is Outcome.PRUNED}
        released = [Change(key, Outcome.RELEASED) for key in retired if key not in gone]
        self._reporter.record([*changes, *pruned, *released])
        self._conclude([*changes, *pruned], generation, is_new)

    async def _render(
        self, body: dict[str, Any]
    ) -> tuple[model.EnvironmentSpec, dict[ObjectKey, Resource], dict[ObjectKey, dict[str, Any]]]:
        spec = model.parse_spec(body.get("spec") or {})
        kinds: dict[tuple[str, str], Resource] = {}
        for index, manifest in enumerate(spec.resources):
            wanted = (manifest["apiVersion"], manifest["kind"])
            if wanted in kinds:
                continue
            try:
                kinds[wanted] = await apply.retrying(lambda w=wanted: self._cluster.resource(*w))  # type: ignore[misc]
            except UnknownKindError as exc:
                raise InvalidSpecError(f"spec.resources[{index}]: {exc}") from exc
        desired = render.manifests(
            spec, self._ledger.owner, is_namespaced=lambda av, kind: kinds[(av, kind)].namespaced
        )
        resources = {key: kinds[(key.api_version, key.kind)] for key in desired}
        return spec, resources, desired

    async def list_live(self, scopes: set[tuple[Resource, str | None]]) -> Live:
        """driftguard's objects as they are: the blueprint's kinds and the last inventory's.

        Other Environments' objects come too: seeing them here finds a conflict
        without a GET per new object.
        """
        scopes = set(scopes)
        for entry in self._ledger.status.resources:
            try:
                resource = await self._cluster.resource(entry.api_version, entry.kind)
            except (UnknownKindError, ApiError):
                continue  # a kind that is gone has nothing left to prune
            scopes.add((resource, entry.namespace or None))
        found: Live = {}
        for resource, namespace in scopes:
            items, _ = await apply.retrying(
                lambda r=resource, n=namespace: self._cluster.list_objects(  # type: ignore[misc]
                    r, namespace=n, selector=model.MANAGED_SELECTOR
                )
            )
            found.update({ObjectKey.of(item): (resource, item) for item in items})
        return found

    def _retire(self, desired: dict[ObjectKey, dict[str, Any]]) -> list[ObjectKey]:
        retired = [key for key in self._ledger.tracked if key not in desired]
        for key in retired:
            del self._ledger.tracked[key]
        return retired

    async def _sync(
        self,
        key: ObjectKey,
        resource: Resource,
        manifest: dict[str, Any],
        found: tuple[Resource, dict[str, Any]] | None,
        is_new: bool,
    ) -> Change:
        tracked = self._ledger.tracked.get(key) or Tracked(key, resource, manifest)
        tracked.resource, tracked.desired = resource, manifest
        self._ledger.tracked[key] = tracked
        live = found[1] if found else None
        try:
            if live is None and self._ledger.mode is Mode.OBSERVE:
                # What Observe reports on may carry no label, so the list missed it.
                live = await apply.retrying(
                    lambda: self._cluster.get(resource, key.namespace, key.name)
                )
            other = render.owner_of(live) if live else None
            if other is not None and other != self._ledger.owner:
                message = f"{key} is managed by Environment {other}; not applied"
                tracked.state, tracked.message = State.CONFLICT, message
                return Change(key, Outcome.CONFLICT, message=message)
            if self._ledger.mode is Mode.ENFORCE:
                return await self._enforce(tracked, live, is_new)
            return await self._observe(tracked, live)
        except ApiError as exc:
            tracked.state, tracked.message = State.ERROR, exc.describe()
            return apply.failure(key, exc)

    async def _enforce(self, tracked: Tracked, live: dict[str, Any] | None, is_new: bool) -> Change:
        assert self._ledger.spec is not None
        rules = plan.allowed_for(tracked.key, self._ledger.spec.allowed_changes)
        tolerated = plan.tolerate(rules, tracked.desired, live)[0] if live else frozenset()
        manifest = apply.strip(tracked.desired, tolerated)
        if not is_new and live is not None and diff.is_owned_whole(live, manifest):
            # Same blueprint, and every field we set is still ours: nothing to write.
            tracked.learn(live, mode=Mode.ENFORCE)
            return self._judged(tracked, live, Outcome.UNCHANGED)
        stored = await apply.put(self._cluster, tracked.resource, manifest)
        tracked.learn(stored, mode=Mode.ENFORCE)
        if live is None:
            return self._judged(tracked, stored, Outcome.CREATED)
        if tracking.rv(stored) == tracking.rv(live):
            return self._judged(tracked, stored, Outcome.UNCHANGED)
        if is_new:
            return self._judged(tracked, stored, Outcome.CONFIGURED)
        # The same blueprint changed the object: it had drifted while nobody watched.
        assert tracked.expectation is not None
        drift = diff.compute(tracked.expectation, live)
        tracking.judge(self._ledger, tracked, stored, time.monotonic())
        if not drift.is_drifted:
            return Change(tracked.key, Outcome.CONFIGURED)  # e.g. a field taken, value unchanged
        return Change(tracked.key, Outcome.REVERTED, tuple(drift.pointers), drift.changed_by)

    async def _observe(self, tracked: Tracked, live: dict[str, Any] | None) -> Change:
        # driftguard's own labels are the mark of an apply; Observe applies nothing,
        # so an object it merely watches need not carry them.
        wanted = render.without_owner_labels(tracked.desired)
        stored = await apply.put(self._cluster, tracked.resource, wanted, dry_run=True)
        tracked.learn(stored, mode=Mode.OBSERVE)
        return self._judged(tracked, live, Outcome.UNCHANGED)

    def _judged(self, tracked: Tracked, live: dict[str, Any] | None, outcome: Outcome) -> Change:
        """Judges the object as a watch event would; drift found now is the pass's outcome."""
        _, news = tracking.judge(self._ledger, tracked, live, time.monotonic())
        return news[0] if news and outcome is Outcome.UNCHANGED else Change(tracked.key, outcome)

    async def _prune(self, desired: dict[ObjectKey, dict[str, Any]], live: Live) -> list[Change]:
        spec = self._ledger.spec
        if spec is None or not spec.prune or self._ledger.mode is not Mode.ENFORCE:
            return []
        victims = [
            found
            for key, found in live.items()
            if key not in desired and self._ledger.is_mine(found[1])
        ]
        return await apply.prune(self._cluster, victims)

    def _conclude(self, changes: Iterable[Change], generation: int | None, is_new: bool) -> None:
        ledger = self._ledger
        changes = list(changes)
        failed = [change for change in changes if change.is_failure]
        ledger.status.observed_generation = generation
        if failed:
            is_forbidden = any(change.outcome is Outcome.FORBIDDEN for change in failed)
            reason = Reason.FORBIDDEN if is_forbidden else Reason.APPLY_FAILED
            message = "; ".join(change.message for change in failed)
            ledger.ready = (False, reason, message[: tracking.MESSAGE_LIMIT])
            return
        if is_new and ledger.mode is Mode.ENFORCE:
            ledger.status.revision += 1
            self._reporter.applied(ledger.status.revision, changes)
        ledger.ready = (True, Reason.APPLIED, f"revision {ledger.status.revision} applied")
        if ledger.spec is not None and ledger.spec.suspend:
            ledger.ready = (True, Reason.SUSPENDED, "suspended: drift is reported, not reverted")
        elif ledger.mode is Mode.OBSERVE:
            message = "Observe: the blueprint is checked with dry-run applies, nothing is changed"
            ledger.ready = (True, Reason.OBSERVING, message)
