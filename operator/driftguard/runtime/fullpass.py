"""A full pass over one Environment: render, watch, list, preflight, apply or dry-run, prune.

`FullPass` runs the steps; `ObjectSync` does one object (conflict, adoption, apply
or dry-run). The pass learns what each object must look like (the server's answer
to our apply or dry-run apply), so that watch events can be judged in memory
afterwards. An invalid blueprint, a refused read or a refused dry-run stops the
pass before anything is written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from driftguard.core import diff, model, plan, render, tracking
from driftguard.core.changes import Change, ChangeSet, Outcome
from driftguard.core.conditions import Reason
from driftguard.core.declared import Declared
from driftguard.core.exception import Judged
from driftguard.core.model import InvalidSpecError, Mode, ObjectKey, State
from driftguard.core.status import AppliedBlueprint
from driftguard.core.tenancy import RefusedError, Tenancy, user_of
from driftguard.core.tracking import Ledger, Tracked
from driftguard.kube import apply, sources
from driftguard.kube.cluster import SERVICEACCOUNTS, Cluster, Resource
from driftguard.kube.errors import ApiError, UnknownKindError
from driftguard.kube.retries import retrying
from driftguard.runtime import exceptions, witness
from driftguard.runtime.blueprints import Blueprints
from driftguard.runtime.report import Reporter
from driftguard.runtime.subscriptions import Names, Scopes, Subscriptions
from driftguard.runtime.witness import Witness

PARALLEL_APPLIES = 16
KIND_RETRY_S = 5.0
"""A kind the server does not serve (its CRD not there yet) is looked up this often."""

Live = dict[ObjectKey, tuple[Resource, dict[str, Any]]]
Desired = dict[ObjectKey, dict[str, Any]]
Victims = list[tuple[Resource, dict[str, Any]]]


class FullPass:
    """One Environment's full pass; the Ledger holds what it learns."""

    def __init__(
        self,
        cluster: Cluster,
        ledger: Ledger,
        reporter: Reporter,
        *,
        subscriptions: Subscriptions,
        tenancy: Tenancy,
        blueprints: Blueprints | None = None,
        witness: Witness | None = None,
        exceptions: Callable[[], list[Judged]] = list,
    ) -> None:
        """`blueprints`: spec.blueprintRef's lookup; `witness`: who is behind the drift
        (None: attribution off); `exceptions`: its DriftExceptions, asked each pass."""
        # The operator in the cluster it acts in, and its watches there: a remote cluster's
        # when the spec names one (set by the Environment before a pass).
        self.operator, self._exceptions = cluster, exceptions
        self._blueprints = blueprints
        self.made_resources: list[dict[str, Any]] | None = None
        """The objects last made from a Blueprint (None: the spec's own)."""
        self._made_from: AppliedBlueprint | None = None
        self.cluster = cluster  # who the Environment acts as: see _act_as
        self.identity = ""
        self._ledger = ledger
        self._reporter = reporter
        self.subscriptions = subscriptions
        self._tenancy = tenancy
        self._objects = ObjectSync(lambda: self.cluster, ledger)
        self._witness = witness

    async def run(
        self, declared: Declared, *, own: set[tuple[Resource, str | None]] | None = None
    ) -> ChangeSet:
        """One pass; `own`: kinds watched as the operator (the Environment's policy).

        Returns what it did, for the Environment to report; only the notices about
        the Environment itself (applied, invalid, suspended) go to the reporter here."""
        ledger = self._ledger
        generation = declared.generation
        ledger.applied_generation = generation
        try:
            spec, resources, desired = await self._render(declared)
            await self._act_as(spec)
        except InvalidSpecError as exc:
            is_refused = isinstance(exc, RefusedError)
            return self._invalid(
                Reason.FORBIDDEN if is_refused else Reason.INVALID_SPEC, exc, generation
            )
        is_new = (
            generation != ledger.status.observed_generation
            or not ledger.status.revision
            or self._made_from != ledger.status.blueprint
        )
        ledger.spec = exceptions.widened(ledger, self._reporter, spec, self._exceptions())
        self._pause(spec)
        scopes = {(resource, key.namespace or None) for key, resource in resources.items()}
        try:
            live = await self._see(scopes, resources, own or set())
        except ApiError as exc:
            return self._refused(ChangeSet.of(apply.refused_kind(exc)), generation)
        victims = tracking.victims(ledger, desired, live.values())
        preflight: dict[ObjectKey, dict[str, Any]] = {}
        if is_new and ledger.mode is Mode.ENFORCE:
            preflight, refused = await self._preflight(resources, desired, victims)
            if refused:
                return self._refused(refused, generation)
        done, released = await self._write(resources, desired, live, victims, is_new, preflight)
        self._conclude(done, generation, is_new)
        return done + released

    async def _see(self, scopes: Scopes, resources: dict[ObjectKey, Resource], own: Scopes) -> Live:
        """Watches, then one list per scope. Without its watches no drift could be seen.

        Observe never labels what it reports on: its objects are watched unlabelled too.
        """
        unlabelled: Names = {}
        if self._ledger.mode is Mode.OBSERVE:
            for key, resource in resources.items():
                unlabelled.setdefault((resource, key.namespace or None), set()).add(key.name)
        owner = self._ledger.owner
        refused = await self.subscriptions.need(
            (owner.namespace, owner.name), self._ledger, scopes, unlabelled, self.identity, own
        )
        live = await self.list_live(scopes)  # a refused list names the namespace
        for error in refused:
            raise error
        return live

    async def _preflight(
        self, resources: dict[ObjectKey, Resource], desired: Desired, victims: Victims
    ) -> tuple[dict[ObjectKey, dict[str, Any]], ChangeSet]:
        """All or nothing: every write of the new revision is dry-run first."""
        manifests = [(resources[key], manifest) for key, manifest in desired.items()]
        answers, refused = await apply.preflight(self.cluster, manifests)
        refused += await apply.prune(self.cluster, victims, dry_run=True)
        return answers, ChangeSet.of(change for change in refused if change.is_failure)

    async def _write(
        self,
        resources: dict[ObjectKey, Resource],
        desired: Desired,
        live: Live,
        victims: Victims,
        is_new: bool,
        preflight: dict[ObjectKey, dict[str, Any]],
    ) -> tuple[ChangeSet, ChangeSet]:
        """Applies (or dry-runs) every object and prunes: what counts for the revision; and
        what the blueprint left that stays in place."""
        retired = self._retire(desired)
        limit = asyncio.Semaphore(PARALLEL_APPLIES)

        async def bounded(key: ObjectKey) -> ChangeSet:
            async with limit:
                found = live.get(key)
                done = ChangeSet.of(
                    await self._objects.sync(
                        key, resources[key], desired[key], found, is_new, preflight
                    )
                )
                return await witness.attribute(self._witness, key, done, found and found[1])

        synced = await asyncio.gather(*(bounded(key) for key in desired))
        pruned = await apply.prune(self.cluster, victims)
        gone = {change.key for change in pruned}
        released = [Change(key, Outcome.RELEASED) for key in retired if key not in gone]
        return ChangeSet.of(*synced, pruned), ChangeSet.of(released)

    async def _act_as(self, spec: model.EnvironmentSpec) -> None:
        """Impersonates the Environment's ServiceAccount, which must exist; else acts as itself."""
        namespace = self._ledger.owner.namespace
        self.identity = self._tenancy.identity(spec, namespace)
        self.cluster = self.operator.as_user(self.identity)
        await ensure_account(self.operator, self._tenancy, spec, namespace)

    def _pause(self, spec: model.EnvironmentSpec) -> None:
        """spec.suspendUntil ahead pauses enforcement; its start and its end are Events."""
        until = spec.suspend_until if spec.suspend_until and _is_ahead(spec.suspend_until) else None
        if until != self._ledger.paused_until:
            if until:
                self._reporter.paused(until)
            else:
                self._reporter.resumed()
        self._ledger.paused_until = until

    def _invalid(self, reason: str, exc: InvalidSpecError, generation: int | None) -> ChangeSet:
        self._ledger.status.observed_generation = generation
        self._ledger.ready = (False, reason, str(exc)[: tracking.MESSAGE_LIMIT])
        if reason == Reason.FORBIDDEN:
            owner = self._ledger.owner
            key = ObjectKey(model.GROUP, model.VERSION, model.KIND, owner.namespace, owner.name)
            return ChangeSet.of(Change(key, Outcome.FORBIDDEN, message=str(exc)))
        self._reporter.invalid(str(exc))
        return ChangeSet()

    def _refused(self, refused: ChangeSet, generation: int | None) -> ChangeSet:
        self._conclude(refused, generation, is_new=False)
        return refused

    async def _render(
        self, declared: Declared
    ) -> tuple[model.EnvironmentSpec, dict[ObjectKey, Resource], dict[ObjectKey, dict[str, Any]]]:
        self._ledger.is_waiting_for_kind = False
        if declared.error is not None:  # the Environment as written, then its objects
            raise InvalidSpecError(str(declared.error))
        assert declared.spec is not None
        self._made_from, self.made_resources = None, None
        if declared.spec.blueprint_ref is None or self._blueprints is None:
            return await self._render_made(declared.spec)
        body, self._made_from = await sources.declared(
            declared.body, lookup=self._blueprints.lookup, pinned=self._blueprints.pinned
        )
        made_from = self._made_from
        if made_from is None:
            return await self._render_made(declared.spec)
        try:
            # A second spec, not the same one twice: the Blueprint's objects in its resources.
            spec = model.parse_spec(body.get("spec") or {})
            self.made_resources = spec.resources
            return await self._render_made(spec)
        except InvalidSpecError as exc:
            # Its objects come from the Blueprint: say so, the index is the Blueprint's.
            where = f"Blueprint {made_from.name!r} revision {made_from.revision}: "
            raise type(exc)(where + str(exc).replace("spec.resources", "its resources")) from exc

    async def _render_made(
        self, spec: model.EnvironmentSpec
    ) -> tuple[model.EnvironmentSpec, dict[ObjectKey, Resource], dict[ObjectKey, dict[str, Any]]]:
        kinds: dict[tuple[str, str], Resource] = {}
        for index, manifest in enumerate(spec.resources):
            wanted = (manifest["apiVersion"], manifest["kind"])
            if wanted in kinds:
                continue
            try:
                kinds[wanted] = await self.cluster.resource(*wanted)
            except UnknownKindError as exc:
                self._ledger.is_waiting_for_kind = True
                raise InvalidSpecError(
                    f"spec.resources[{index}]: {exc} (a CRD not installed yet?); "
                    f"looked up again every {KIND_RETRY_S:.0f}s"
                ) from exc

        def is_namespaced(api_version: str, kind: str) -> bool:
            return kinds[(api_version, kind)].namespaced

        desired = render.manifests(spec, self._ledger.owner, is_namespaced=is_namespaced)
        problems = plan.misplaced_bounds(spec.allowed_changes, desired)
        if problems:
            raise InvalidSpecError("; ".join(problems))
        # After rendering: a blueprint at odds with itself is InvalidSpec, not Forbidden.
        self._tenancy.confine(spec, self._ledger.owner.namespace, is_namespaced=is_namespaced)
        resources = {key: kinds[(key.api_version, key.kind)] for key in desired}
        return spec, resources, desired

    async def list_live(self, scopes: set[tuple[Resource, str | None]]) -> Live:
        """driftguard's objects as they are: the blueprint's kinds and the last inventory's.

        Other Environments' objects come too: seeing them here finds a conflict
        without a GET per new object.
        """
        scopes = set(scopes)
        for api_version, kind, namespace in self._ledger.inventory:
            try:
                resource = await self.cluster.resource(api_version, kind)
            except (UnknownKindError, ApiError):
                continue  # a kind that is gone has nothing left to prune
            scopes.add((resource, namespace or None))
        found: Live = {}
        for resource, namespace in scopes:
            items, _ = await retrying(
                lambda r=resource, n=namespace: self.cluster.list_objects(  # type: ignore[misc]
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

    def _conclude(self, changes: ChangeSet, generation: int | None, is_new: bool) -> None:
        if tracking.conclude(self._ledger, changes, generation, is_new=is_new):
            self._reporter.applied(self._ledger.status.revision, changes)
        if self._ledger.ready[0]:
            self._ledger.status.blueprint = self._made_from


class ObjectSync:
    """One object in a full pass: conflict, adoption, then apply (Enforce) or dry-run (Observe)."""

    def __init__(self, cluster: Callable[[], Cluster], ledger: Ledger) -> None:
        self._cluster = cluster  # the Environment's identity, which a pass may change
        self._ledger = ledger

    async def sync(
        self,
        key: ObjectKey,
        resource: Resource,
        manifest: dict[str, Any],
        found: tuple[Resource, dict[str, Any]] | None,
        is_new: bool,
        preflight: dict[ObjectKey, dict[str, Any]],
    ) -> Change | ChangeSet:
        tracked = self._ledger.tracked.get(key) or Tracked(key, resource, manifest)
        tracked.resource, tracked.desired = resource, manifest
        self._ledger.tracked[key] = tracked
        live = found[1] if found else None
        try:
            if self._ledger.mode is Mode.OBSERVE:
                if live is None:
                    # What Observe reports on may carry no label, so the list missed it.
                    live = await retrying(
                        lambda: self._cluster().get(resource, key.namespace, key.name)
                    )
                return await self._observe(tracked, live)
            other = render.owner_of(live) if live else None
            if other is not None and other != self._ledger.owner:
                return self._conflict(tracked, f"{key} is managed by Environment {other}")
            if live is None and await _exists(self._cluster(), tracked, preflight):
                if not self._ledger.spec or not self._ledger.spec.adopt:
                    message = (
                        f"{key} exists, not managed by driftguard; set spec.adopt to take it over"
                    )
                    return self._conflict(tracked, message)
                tracked.desired = render.adopted(manifest)
                change = ChangeSet.of(await self._enforce(tracked, None, is_new=True))
                return change if change.failures else Change(key, Outcome.ADOPTED)
            if live is not None and apply.is_adopted(live):
                tracked.desired = render.adopted(manifest)  # the mark stays while it is ours
            return await self._enforce(tracked, live, is_new, preflight.get(key))
        except ApiError as exc:
            tracked.state, tracked.message = State.ERROR, exc.describe()
            return apply.failure(key, exc)

    def _conflict(self, tracked: Tracked, message: str) -> Change:
        message = f"{message}; not applied"
        tracked.state, tracked.message = State.CONFLICT, message
        return Change(tracked.key, Outcome.CONFLICT, message=message)

    async def _enforce(
        self,
        tracked: Tracked,
        live: dict[str, Any] | None,
        is_new: bool,
        dry_run: dict[str, Any] | None = None,
    ) -> Change | ChangeSet:
        assert self._ledger.spec is not None
        rules = plan.allowed_for(tracked.key, self._ledger.spec.allowed_changes)
        tolerated = plan.tolerate(rules, tracked.desired, live)[0] if live else frozenset()
        manifest = apply.strip(tracked.desired, tolerated)
        owned = diff.expect_if_owned(live, manifest) if not is_new and live is not None else None
        if owned is not None and live is not None:
            # Same blueprint, and every field we set is still ours: nothing to write.
            tracked.learn(live, mode=Mode.ENFORCE, expectation=owned)
            return self._judged(tracked, live, Outcome.UNCHANGED)
        if live is not None and dry_run is not None and not tolerated and _same(dry_run, live):
            # The preflight's dry-run changed nothing, ownership included: a no-op apply.
            tracked.learn(dry_run, mode=Mode.ENFORCE)
            return self._judged(tracked, live, Outcome.UNCHANGED)
        stored = await apply.put(self._cluster(), tracked.resource, manifest)
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
        if not drift.is_drifted:
            tracking.assess(self._ledger, tracked, stored, time.monotonic())
            return Change(tracked.key, Outcome.CONFIGURED)  # e.g. a field taken, value unchanged
        return tracking.reverted(
            self._ledger,
            tracked,
            stored=stored,
            live=live,
            pointers=drift.pointers,
            changed_by=drift.changed_by,
            at=time.monotonic(),
        )

    async def _observe(self, tracked: Tracked, live: dict[str, Any] | None) -> Change:
        # driftguard's own labels are the mark of an apply; Observe applies nothing,
        # so an object it merely watches need not carry them.
        wanted = render.without_owner_labels(tracked.desired)
        stored = await apply.put(self._cluster(), tracked.resource, wanted, dry_run=True)
        tracked.learn(stored, mode=Mode.OBSERVE)
        return self._judged(tracked, live, Outcome.UNCHANGED)

    def _judged(self, tracked: Tracked, live: dict[str, Any] | None, outcome: Outcome) -> Change:
        """Judges the object as a watch event would; drift found now is the pass's outcome."""
        _, news = tracking.assess(self._ledger, tracked, live, time.monotonic())
        return (
            news.changes[0]
            if news and outcome is Outcome.UNCHANGED
            else Change(tracked.key, outcome)
        )


def _is_ahead(moment: str) -> bool:
    return seconds_until(moment) > 0


def seconds_until(moment: str) -> float:
    """Seconds from now to an RFC 3339 time (negative once it has passed)."""
    when: datetime = datetime.fromisoformat(moment.upper())
    delta: float = (when - datetime.now(UTC)).total_seconds()
    return delta


async def ensure_account(
    cluster: Cluster, tenancy: Tenancy, spec: model.EnvironmentSpec, namespace: str
) -> None:
    """Raises RefusedError unless the ServiceAccount to act as may be, exists and can be
    impersonated (no ServiceAccount: nothing to check)."""
    tenancy.refuse_protected(spec, namespace)  # before any request as it, or about it
    name = tenancy.service_account(spec)
    if name is None:
        return
    try:
        account = await retrying(lambda: cluster.get(SERVICEACCOUNTS, namespace, name))
    except ApiError as exc:
        raise RefusedError(f"spec.serviceAccountName: {exc.describe()}") from exc
    if account is None:
        raise RefusedError(
            f"spec.serviceAccountName: ServiceAccount {namespace}/{name} does not exist; "
            "nothing is applied until it does"
        )
    # Tried first (a SelfSubjectReview as it), so that a refusal says what to grant: refused
    # mid-pass, the API server names the request impersonated
    # ("impersonate-on:serviceaccount:list"), not the fix.
    try:
        await retrying(cluster.as_user(user_of(namespace, name)).whoami)
    except ApiError as exc:
        if exc.status != HTTPStatus.FORBIDDEN:
            raise RefusedError(f"spec.serviceAccountName: {exc.describe()}") from exc
        raise RefusedError(
            f"spec.serviceAccountName: the operator may not impersonate ServiceAccount "
            f"{namespace}/{name}; it may act only as the names of the chart's "
            "tenancy.defaultServiceAccount and tenancy.serviceAccounts, in the namespaces where "
            "its impersonation ClusterRole is bound (tenancy.namespaces, or a RoleBinding the "
            "platform team makes there; docs/security.md)"
        ) from exc


def _same(dry_run: dict[str, Any], live: dict[str, Any]) -> bool:
    """The object a dry-run apply answered is the live one: values and field ownership.

    A dry-run keeps the resourceVersion even when it would change the object, so the
    objects are compared, managedFields' timestamps aside.
    """

    def comparable(obj: dict[str, Any]) -> dict[str, Any]:
        meta = dict(obj.get("metadata") or {})
        meta["managedFields"] = [
            {k: v for k, v in entry.items() if k != "time"}
            for entry in meta.get("managedFields") or []
        ]
        return {**obj, "metadata": meta}

    return comparable(dry_run) == comparable(live)


async def _exists(
    cluster: Cluster, tracked: Tracked, preflight: dict[ObjectKey, dict[str, Any]]
) -> bool:
    """Whether an object driftguard does not manage already holds this name."""
    if tracked.key in preflight:
        return bool(tracking.rv(preflight[tracked.key]))  # a dry-run create has no version
    key = tracked.key
    found = await retrying(lambda: cluster.get(tracked.resource, key.namespace, key.name))
    return found is not None
