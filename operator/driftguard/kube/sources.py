"""Where an Environment's objects come from: its own resources, or a Blueprint and its values.

The operator and `driftguard compare` both call `declared`, so what the CLI says an
Environment declares is what the operator applies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from driftguard.core import blueprint
from driftguard.core.blueprint import parse_blueprint
from driftguard.core.model import InvalidSpecError
from driftguard.core.status import AppliedBlueprint
from driftguard.kube import history

BlueprintLookup = Callable[[str], Awaitable[dict[str, Any] | None]]
"""A Blueprint object by name, or None when there is none."""
PinnedLookup = Callable[[str], Awaitable[dict[int, dict[str, Any]]]]
"""A Blueprint's kept specs by revision."""


async def declared(
    env: dict[str, Any], *, lookup: BlueprintLookup, pinned: PinnedLookup
) -> tuple[dict[str, Any], AppliedBlueprint | None]:
    """The Environment with its objects in spec.resources, and the Blueprint revision used.

    An Environment without a blueprintRef comes back as it is. Raises InvalidSpecError
    when the Blueprint, the revision or the values cannot make objects.
    """
    spec = dict(env.get("spec") or {})
    ref = spec.get("blueprintRef")
    if not isinstance(ref, dict):
        return env, None
    name = str(ref.get("name") or "")
    found = await lookup(name)
    if found is None:
        raise InvalidSpecError(f"spec.blueprintRef: Blueprint {name!r} does not exist")
    current = int((found.get("metadata") or {}).get("generation") or 1)
    wanted = ref.get("revision")
    if wanted is None or wanted == current:
        raw, revision = found.get("spec") or {}, current
    else:
        kept = await pinned(name)
        if wanted not in kept:
            shown = ", ".join(str(r) for r in sorted({*kept, current}))
            raise InvalidSpecError(
                f"spec.blueprintRef: Blueprint {name!r} has no revision {wanted} kept "
                f"(kept: {shown})"
            )
        raw, revision = kept[wanted], int(wanted)
    try:
        resources = blueprint.resolve(parse_blueprint(raw), spec.get("values"))
    except InvalidSpecError as exc:
        if str(exc).startswith("spec.values"):
            raise
        raise InvalidSpecError(f"Blueprint {name!r} revision {revision} is invalid: {exc}") from exc
    made = {k: v for k, v in spec.items() if k not in ("blueprintRef", "values")}
    made["resources"] = resources
    return {**env, "spec": made}, AppliedBlueprint(name=name, revision=revision)


def kept_in(cluster: Any, namespace: str | None) -> PinnedLookup:
    """Pinned revisions from the ControllerRevisions the operator keeps in `namespace`."""

    async def pinned(name: str) -> dict[int, dict[str, Any]]:
        return await history.blueprint_revisions(cluster, name, namespace)

    return pinned
