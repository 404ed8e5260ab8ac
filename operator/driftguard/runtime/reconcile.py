"""One Environment kept in line: the table of contents of the loop.

- `fullpass.FullPass`: render -> watch -> list -> apply (Enforce) or dry-run (Observe) -> prune.
- `judging.EventJudge`: each watch event judged in memory; drift reverted or flagged.
- `report.Reporter`: every ChangeSet -> Events, log events, metrics, lastDrift, audit trail.
- `statuswriter.StatusWriter`: status written once a burst settles, only when it changed.
- `Resync` below: the safety net, a full check every resyncInterval.

They share one `tracking.Ledger`. The pass, the judge and the guard each return
ChangeSets; this Environment hands every one to its reporter, the one that reports.
Nothing here talks to the API server itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from driftguard.core import render
from driftguard.core.changes import Change, Outcome
from driftguard.core.conditions import Reason
from driftguard.core.declared import Declared
from driftguard.core.exception import Judged
from driftguard.core.model import ObjectKey
from driftguard.core.status import EnvironmentStatus
from driftguard.core.tenancy import Tenancy
from driftguard.core.tracking import MESSAGE_LIMIT, Ledger
from driftguard.kube import apply, audit, history
from driftguard.kube.cluster import Cluster, Resource
from driftguard.kube.errors import ApiError
from driftguard.kube.reports import PolicyReports
from driftguard.runtime import clusters, report
from driftguard.runtime.blueprints import Blueprints
from driftguard.runtime.clusters import Link
from driftguard.runtime.enforcement import Enforcement
from driftguard.runtime.fullpass import KIND_RETRY_S, FullPass, seconds_until
from driftguard.runtime.guard import Guard, PolicyInventory
from driftguard.runtime.guard import Settings as GuardSettings
from driftguard.runtime.judging import EventJudge
from driftguard.runtime.statuswriter import StatusWriter
from driftguard.runtime.subscriptions import Subscriptions
from driftguard.runtime.witness import Witness
from driftguard.telemetry import metrics

RETRY_FAILED_S = 60.0
"""A pass that the server refused is tried again this soon, even with a longer resync."""
# Full passes running at once, across Environments. The connection pool (64) is the bound
# on throughput either way; unbounded, 500 Environments created together each held every
# object's dry-run answer at once, and that burst left the heap fragmented for good
# (+74 MB at 5,000 objects, +450 MB at 50,000, against a restarted process).
PASSES_AT_ONCE = 8

NAMESPACE_MISSING = "NamespaceMissing"
"""Ready's reason while the target namespace is deleted: nothing to do until it is back."""


class Environment:
    """The live state of one Environment and the parts that keep it."""

    def __init__(
        self,
        cluster: Cluster,
        declared: Declared,
        *,
        events: report.Poster,
        subscriptions: Subscriptions,
        tenancy: Tenancy,
        guard: GuardSettings,
        inventory: PolicyInventory,
        blueprints: Blueprints | None = None,
        passes: asyncio.Semaphore | None = None,
        witness: Witness | None = None,
        exceptions: Callable[[], list[Judged]] | None = None,
        bind: Callable[[Declared], Awaitable[Link]] | None = None,
    ) -> None:
        """`passes`: shared by the Environments whose full passes may not all run at once;
        `bind`: the cluster it acts in, asked before each pass (None: `cluster`)."""
        body = declared.body
        owner = render.Owner(name=declared.name, namespace=declared.namespace)
        status = EnvironmentStatus.model_validate(body.get("status") or {})
        self.ledger = Ledger(owner=owner, status=status)
        self.declared = declared.kept()  # its status read whole just above
        body = self.declared.body
        # History and the audit trail are the operator's records, written as the operator in
        # this cluster (home), whichever cluster the objects are in.
        self.home = cluster
        self.witness = witness
        self.audit = audit.AuditTrail(cluster, body)
        self.reporter = report.Reporter(self.ledger, events, body, self.audit)
        self.passes = FullPass(
            cluster,
            self.ledger,
            self.reporter,
            subscriptions=subscriptions,
            tenancy=tenancy,
            blueprints=blueprints,
            witness=witness,
            exceptions=exceptions or list,
        )
        # Objects are read and written as the Environment's identity; status as the operator.
        self.judge = EventJudge(
            lambda: self.passes.cluster,
            self.ledger,
            operator=lambda: self.passes.operator,
            witness=witness,
        )
        self._judged = asyncio.create_task(self._report_judged())
        self.guard = Guard(cluster, self.ledger, guard, inventory)
        self.reports = PolicyReports(cluster, self.ledger, body)
        self.status = StatusWriter(
            cluster, self.ledger, judge=self.judge, reporter=self.reporter, reports=self.reports
        )
        self.status.received(body)
        self.enforcement = Enforcement(
            self.ledger, lambda: self.guard.cluster, self.reporter, on_change=self.status.soon
        )
        self.resync = Resync(self)
        self._pass_lock = asyncio.Lock()
        self._passes = passes or asyncio.Semaphore(1)
        self.is_namespace_missing = False
        self._bind = bind
        self.link: Link | None = None
        self._link_generation = 0

    @property
    def owner(self) -> render.Owner:
        return self.ledger.owner

    @property
    def body(self) -> dict[str, Any]:
        return self.declared.body

    async def update(self, declared: Declared) -> None:
        """A new version of the Environment: a full pass if its spec changed."""
        self.declared = declared.kept()
        self.audit.update(self.declared.body)
        self.reports.update(self.declared.body)
        self.reporter.body = self.declared.body
        self.status.received(self.declared.body)
        if declared.generation != self.ledger.applied_generation:
            await self.full_pass()

    def follows(self, revision: int | None) -> bool:
        """Whether a Blueprint's new revision changes this Environment (not when pinned away)."""
        pinned = self.declared.pinned_revision
        used = self.ledger.status.blueprint
        is_ready = self.ledger.ready[0]
        return pinned is None or not is_ready or (used is not None and used.revision != pinned)

    @property
    def blueprint(self) -> str | None:
        """The name of the Blueprint this Environment is made from, if any."""
        return self.declared.blueprint

    async def full_pass(self) -> None:
        if self.is_namespace_missing:
            return  # the Namespace watch starts one when it is back
        if not await self._bound():
            return
        async with self._pass_lock, self._passes:
            self.judge.pause()
            started = time.monotonic()
            try:
                own = await self._own_scopes()
                revision = self.ledger.status.revision
                # Before the pass, which may count the first error; kinds once it knows them.
                metrics.prime(self.owner.namespace, self.owner.name, kinds=())
                self.reporter.record(await self.passes.run(self.declared, own=own))
                if self.ledger.status.revision != revision:
                    await remember(self)
                kinds = {key.kind for key in self.ledger.tracked}
                metrics.prime(self.owner.namespace, self.owner.name, kinds=kinds)
                used = self.ledger.status.blueprint
                metrics.set_info(
                    self.owner.namespace,
                    self.owner.name,
                    used.name if used else "",
                    used.revision if used else self.ledger.status.revision,
                    self.link.label if self.link is not None else "",
                )
                self.report(await self.guard.sync(self.passes.identity))
                self.enforcement.expect(self.guard.expected())
                if self.is_namespace_missing:  # went while the pass ran
                    self.ledger.ready = self._namespace_missing()
            finally:
                self.judge.resume()
                metrics.reconcile_duration.observe(time.monotonic() - started)
        await self.status.flush()
        self.resync.schedule()

    async def _bound(self) -> bool:
        """Acts in the cluster its spec names from now on; False (and Ready=False, saying
        why) when that cluster cannot be used now. An invalid spec needs no cluster."""
        if self._bind is None or self.declared.spec is None:
            return True
        try:
            link = await self._bind(self.declared)
        except clusters.UnusableError as problem:
            self.unusable(problem)
            await self.status.flush()
            self.resync.schedule()
            return False
        if link is not self.link or link.generation != self._link_generation:
            self.link, self._link_generation = link, link.generation
            self.passes.operator, self.passes.subscriptions = link.cluster, link.subscriptions
            self.passes.cluster = link.cluster.as_user(self.passes.identity)
            self.guard.use(link.cluster, link.inventory, link.operator_user)
        return True

    def unusable(self, problem: clusters.UnusableError) -> None:
        """Its cluster does not answer, or its kubeconfig cannot be used: nothing is
        checked or written there until it can."""
        if self.ledger.ready[1] != problem.reason:
            self.reporter.unusable(problem.reason, problem.message)
        self.ledger.ready = (False, problem.reason, problem.message[:MESSAGE_LIMIT])
        self.status.soon()

    async def _own_scopes(self) -> set[tuple[Resource, str | None]]:
        """The policy kinds, watched as the operator while prevention may be on."""
        if self.declared.is_prevention_off and not self.ledger.policies:
            return set()
        try:
            return {(resource, None) for resource in await self.guard.kinds()}
        except (ApiError, LookupError):
            return set()  # a server without admission policies: the pass says the rest

    def observe(self, key: ObjectKey, live: dict[str, Any] | None, received: float) -> None:
        """A watch saw a managed object change (live) or go (None)."""
        self.judge.observe(key, live, received)

    def relisted(
        self,
        resource: Resource,
        namespace: str | None,
        items: Iterable[dict[str, Any]],
        received: float,
        name: str = "",
    ) -> None:
        """After a gap in a watch: judge every object of that scope (kind, namespace if
        any, name if any) as it is now."""
        found = {ObjectKey.of(item): item for item in items}
        for key, tracked in [*self.ledger.tracked.items(), *self.ledger.policies.items()]:
            if tracked.resource != resource or namespace not in (None, key.namespace or None):
                continue
            if name and key.name != name:
                continue
            live = found.get(key)
            if live is not None and not self.ledger.is_mine(live):
                live = None  # judged as gone; the GET that follows finds what it is
            self.judge.observe(key, live, received)

    def refused(self, error: ApiError) -> None:
        """RBAC refuses a watch this Environment needs: it cannot see drift there."""
        if not self._pass_lock.locked():  # a running pass reports it itself
            self.report([apply.refused_kind(error)])

    async def _report_judged(self) -> None:
        """Reports each watch event's judgement, in order, as it ends."""
        while True:
            self.report(await self.judge.results.get())

    def report(self, records: Iterable[Change]) -> None:
        """Every record goes to the reporter; a refusal also makes the Environment not Ready."""
        records = list(records)
        self.reporter.record(records)
        for change in records:
            if change.is_failure and not self.is_namespace_missing:
                is_forbidden = change.outcome is Outcome.FORBIDDEN
                reason = Reason.FORBIDDEN if is_forbidden else Reason.APPLY_FAILED
                self.ledger.ready = (False, reason, change.message[:MESSAGE_LIMIT])
        self.status.soon()

    @property
    def target_namespace(self) -> str:
        return self.declared.target_namespace

    def namespace_gone(self) -> None:
        """The target namespace is deleted: say so, and wait for it instead of failing."""
        self.is_namespace_missing = True
        self.ledger.ready = self._namespace_missing()
        self.status.soon()

    async def namespace_back(self) -> None:
        """The target namespace exists again: apply everything now, not at the resync."""
        self.is_namespace_missing = False
        await self.full_pass()

    def _namespace_missing(self) -> tuple[bool, str, str]:
        message = (
            f"target namespace {self.target_namespace} does not exist: the blueprint is "
            "applied again as soon as it is created"
        )
        return (False, NAMESPACE_MISSING, message)

    def stop(self) -> None:
        self.audit.stop()
        self.reports.stop()
        self.judge.stop()
        self.enforcement.stop()
        self._judged.cancel()
        self.reporter.body = None  # no Events about an Environment let go
        self.resync.stop()
        self.status.stop()
        kinds = {key.kind for key in self.ledger.tracked}
        metrics.forget(self.owner.namespace, self.owner.name, kinds=kinds)


async def remember(environment: Environment) -> None:
    """Keeps the revision just applied; the history is a record, never a reason to fail."""
    spec = environment.ledger.spec
    made = environment.passes.made_resources
    try:
        await history.record(
            environment.home,
            environment.body,
            environment.ledger.status.revision,
            resolved=made if environment.ledger.status.blueprint is not None else None,
            blueprint=environment.ledger.status.blueprint,
            limit=spec.revision_history_limit if spec is not None else 10,
            applied_by=_applied_by(environment),
        )
    except ApiError as exc:
        environment.reporter.history_failed(exc.describe())


def _applied_by(environment: Environment) -> str | None:
    """The person whose write this spec is, if the webhook stamped it."""
    if environment.witness is None:
        return None
    person = environment.witness.signer.stamped(environment.body)
    return person.user if person is not None else None


class Resync:
    """The safety net: every resyncInterval, judge every object again from a fresh list.

    An Environment that is not Ready (the server refused a pass) gets a whole
    new pass instead, and sooner: RBAC may have been granted since.
    """

    def __init__(self, environment: Environment) -> None:
        self._environment = environment
        self._task: asyncio.Task[None] | None = None
        self._paused_until: str | None = None
        self._exceptions_until: str | None = None
        self._period: float | None = None

    def schedule(self) -> None:
        ledger = self._environment.ledger
        period = ledger.spec.resync_seconds if ledger.spec is not None else None
        is_changed = (
            self._paused_until != ledger.paused_until
            or self._exceptions_until != ledger.exceptions_until
            or self._period != period
        )
        if is_changed and self._task is not None:
            # A suspension or an exception began or changed (wake at its end), or a new
            # resyncInterval: the old sleep (up to the old interval) must not delay the new one.
            self._task.cancel()
            self._task = None
        self._paused_until, self._period = ledger.paused_until, period
        self._exceptions_until = ledger.exceptions_until
        if self._task is None and (ledger.spec is not None or ledger.is_waiting_for_kind):
            self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        ledger = self._environment.ledger
        while ledger.spec is not None or ledger.is_waiting_for_kind:
            is_ready, reason, _ = ledger.ready
            period = ledger.spec.resync_seconds if ledger.spec is not None else KIND_RETRY_S
            if not is_ready and reason != Reason.INVALID_SPEC:
                period = min(period, RETRY_FAILED_S)
            if ledger.is_waiting_for_kind:
                period = min(period, KIND_RETRY_S)
            for end in (ledger.paused_until, ledger.exceptions_until):
                if end:
                    # A suspension or an exception ends by itself: a full pass then
                    # reverts what drifted meanwhile, or what the exception held.
                    period = min(period, max(seconds_until(end), 0.0) + 0.05)
            await asyncio.sleep(period)
            await self.run()

    async def run(self) -> None:
        environment = self._environment
        is_ready, reason, _ = environment.ledger.ready
        ledger = environment.ledger
        is_due = any(
            end and seconds_until(end) <= 0
            for end in (ledger.paused_until, ledger.exceptions_until)
        )
        is_failed = not is_ready and reason != Reason.INVALID_SPEC
        link = environment.link
        if link is not None and link.problem is not None:
            is_failed = True  # the pass says why it cannot act; it binds again if it can
        if is_due or is_failed or environment.ledger.is_waiting_for_kind:
            await environment.full_pass()
            return
        tracked = environment.ledger.tracked
        scopes = {(t.resource, key.namespace or None) for key, t in tracked.items()}
        try:
            live = await environment.passes.list_live(scopes)
        except ApiError as exc:
            environment.report([apply.refused_kind(exc)])
            return
        received = time.monotonic()
        for key in list(environment.ledger.tracked):  # policies: re-applied by each pass
            found = live.get(key)
            obj = found[1] if found is not None else None
            if obj is not None and not environment.ledger.is_mine(obj):
                obj = None  # judged as gone; the GET that follows finds what it is
            environment.observe(key, obj, received)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
