"""What the API server enforces of an Environment's prevention: confirmed, never assumed.

The API server's policy cache follows the policy objects a moment behind them: right
after `prevention: Off` the deleted policy may still refuse the person's next write, and
right after `Deny` the new one may not refuse it yet. So status, Events and the CLI move
to a prevention state only once a probe shows the API server enforcing it: a server-side
dry-run merge patch (never stored), as the operator, of one guarded object carrying the
probe marker that every version of the policy refuses, or warns about, whoever sends it
(`core/prevention.py`). It is retried with a short backoff until the answer matches.
One probe run per change of what the policy objects ask, never one per event; the
operator needs nothing beyond the patch it has on managed kinds, and impersonates no one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from driftguard.core import prevention
from driftguard.core.model import Prevention, State
from driftguard.core.prevention import Enforced
from driftguard.core.tracking import Ledger, Tracked
from driftguard.kube.cluster import Cluster
from driftguard.kube.errors import ApiError
from driftguard.runtime.report import Reporter
from driftguard.telemetry.logs import get as get_logger

log = get_logger(__name__)

FIRST_PROBE_S = 0.1
PROBE_BACKOFF_CAP_S = 2.0
"""Probes double their wait from FIRST_PROBE_S up to this, until the answer matches."""


_STATES = {state.value for state in Prevention}


class Enforcement:
    """Confirms, for one Environment, what its policy objects ask the API server to enforce."""

    def __init__(
        self,
        ledger: Ledger,
        operator: Callable[[], Cluster],
        reporter: Reporter,
        *,
        on_change: Callable[[], None],
    ) -> None:
        self._ledger = ledger
        self._operator = operator  # exempt from the policy, except for the probe
        self._reporter = reporter
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self._last_error = ""  # a probe that cannot be made is logged once, not each retry
        # The state last reported, kept across restarts in the status (its version unknown).
        for condition in ledger.status.conditions:
            if condition.type == "Prevention" and condition.reason in _STATES:
                ledger.enforced = Enforced(Prevention(condition.reason))

    def expect(self, wanted: Enforced) -> None:
        """The policy objects now ask for `wanted`: confirm it, unless it is known already."""
        ledger = self._ledger
        if wanted == ledger.enforcing:
            return  # being confirmed
        self._cancel()
        known = ledger.enforced or Enforced(Prevention.OFF)
        if wanted == known or (wanted.action is Prevention.OFF and known.action is Prevention.OFF):
            if ledger.enforcing is not None:
                ledger.enforcing = None
                self._on_change()
            return
        ledger.enforcing = wanted
        self._on_change()
        self._task = asyncio.create_task(self._confirm(wanted), name="prevention probe")

    def stop(self) -> None:
        self._cancel()

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _confirm(self, wanted: Enforced) -> None:
        began, delay, tries = time.monotonic(), FIRST_PROBE_S, 0
        while True:
            targets = self._targets()
            tries += 1
            if not targets or await self._answers(wanted, targets):
                break  # nothing to guard is nothing enforced: Off at once
            await asyncio.sleep(delay)
            delay = min(delay * 2, PROBE_BACKOFF_CAP_S)
        seconds = round(time.monotonic() - began, 3)
        before = self._ledger.enforced
        self._ledger.enforced, self._ledger.enforcing = wanted, None
        self._task = None
        log.info("prevention_confirmed", action=wanted.action.value, probes=tries)
        if wanted.action is Prevention.OFF:
            self._reporter.lifted(before.action.value if before else "it", seconds)
        else:
            self._reporter.enforced(wanted.action.value, wanted.token, seconds)
        self._on_change()

    def _targets(self) -> list[Tracked]:
        """Objects the policy guards (or guarded), that exist: the probe patches one."""
        return [
            tracked
            for tracked in self._ledger.tracked.values()
            if tracked.expectation is not None
            and tracked.state not in (State.CONFLICT, State.MISSING)
        ]

    async def _answers(self, wanted: Enforced, targets: Sequence[Tracked]) -> bool:
        owner = self._ledger.owner
        target = targets[0]
        refusal: str | None = None
        warnings: list[str] = []
        try:
            warnings = await self._operator().probe(
                target.resource,
                target.key.namespace,
                target.key.name,
                prevention.probe_patch(wanted.token),
            )
        except ApiError as exc:
            if exc.is_transient or exc.is_not_found or exc.is_forbidden:
                if exc.describe() != self._last_error:
                    self._last_error = exc.describe()
                    log.warning(
                        "prevention_probe_failed", object=str(target.key), error=exc.describe()
                    )
                return False  # no answer about prevention: ask again
            refusal = exc.message
        return prevention.answers(
            wanted,
            owner_namespace=owner.namespace,
            owner_name=owner.name,
            refusal=refusal,
            warnings=warnings,
        )
