"""DriftException: its phase against the clock and the cap, and what an active one widens."""

from __future__ import annotations

from typing import Any

import pytest

from driftguard.cli import excepting
from driftguard.cli.views import Refused
from driftguard.core import diff, exception, model, plan
from driftguard.core.exception import Phase
from driftguard.core.model import Mode, ObjectKey, State

CREATED = 1_000_000.0
REPLICAS = [{"kind": "Deployment", "name": "web", "paths": ["/spec/replicas"], "maximum": 12}]


def body(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "hold", "namespace": "prod", "annotations": {}},
        "spec": {
            "environmentRef": {"name": "shop"},
            "changes": REPLICAS,
            "reason": "incident 4711",
            **spec,
        },
    }


def evaluate(raw: dict[str, Any], *, now: float, expires_at: float | None = None) -> Any:
    return exception.evaluate(
        "hold", raw, created_at=CREATED, expires_at=expires_at, now=now, max_seconds=24 * 3600
    )


@pytest.mark.parametrize(
    ("spec", "now", "expires_at", "phase"),
    [
        ({"duration": "4h"}, CREATED + 60, None, Phase.ACTIVE),
        ({"duration": "4h"}, CREATED + 4 * 3600, None, Phase.EXPIRED),
        ({"expiresAt": "x"}, CREATED + 60, CREATED + 600, Phase.ACTIVE),
        ({"duration": "25h"}, CREATED + 60, None, Phase.INVALID),
        ({"duration": "4h", "reason": " "}, CREATED + 60, None, Phase.INVALID),
        ({"duration": "4h", "changes": []}, CREATED + 60, None, Phase.INVALID),
        ({"expiresAt": "not a time"}, CREATED + 60, None, Phase.INVALID),
    ],
    ids=["active", "expired", "until", "over-the-cap", "blank-reason", "no-changes", "bad-time"],
)
def test_phase(spec: dict[str, Any], now: float, expires_at: float | None, phase: Phase) -> None:
    raw = body(**spec)
    if "expiresAt" in spec and expires_at is not None:
        raw["spec"]["expiresAt"] = "2026-12-06T10:00:00Z"
    assert evaluate(raw, now=now, expires_at=expires_at).phase is phase


def test_over_the_cap_says_why_and_how_to_fix_it() -> None:
    judged = evaluate(body(duration="48h"), now=CREATED)
    assert "48h" in judged.message
    assert "--max-exception-duration" in judged.message
    assert judged.changes == ()


def test_ended_early_names_who() -> None:
    raw = body(duration="4h")
    raw["metadata"]["annotations"][exception.ANNOTATION_ENDED] = "carol"
    judged = evaluate(raw, now=CREATED + 60)
    assert (judged.phase, judged.message) == (Phase.ENDED, "ended early by carol")


def deployment(replicas: int, image: str = "nginx:1") -> dict[str, Any]:
    return {"spec": {"replicas": replicas, "template": {"spec": {"image": image}}}}


def verdict(rules: list[Any], live: dict[str, Any]) -> plan.Verdict:
    key = ObjectKey("apps", "v1", "Deployment", "prod", "web")
    changes = [
        diff.FieldChange(p, diff.ChangeKind.CHANGED, None, None, "kubectl")
        for p in ("/spec/replicas", "/spec/template/spec/image")
        if plan.pointer_get(live, p) != plan.pointer_get(deployment(2), p)
    ]
    return plan.decide(
        key=key,
        mode=Mode.ENFORCE,
        desired=deployment(2),
        live=live,
        drift=diff.Drift(tuple(changes)),
        rules=rules,
    )


def widened(*extra: dict[str, Any]) -> list[Any]:
    spec = model.parse_spec({"resources": [], "allowedChanges": list(extra)})
    active = evaluate(body(duration="4h"), now=CREATED + 1)
    return list(exception.widen(spec, [active]).allowed_changes)


def test_an_active_exception_makes_its_drift_excepted_and_nothing_else() -> None:
    rules = widened()
    held = verdict(rules, deployment(12))
    assert (held.state, held.excepted, held.action) == (State.EXCEPTED, ("hold",), plan.Action.NONE)
    beyond = verdict(rules, deployment(20))
    assert beyond.state is State.DRIFTED
    other = verdict(rules, deployment(12, image="nginx:0"))
    assert other.state is State.DRIFTED
    assert other.pointers == ["/spec/template/spec/image"]


def test_without_it_the_same_drift_is_reverted() -> None:
    assert verdict([], deployment(12)).action is plan.Action.REVERT


def test_an_exception_widens_the_blueprints_own_bounds() -> None:
    """The blueprint allows up to 10, the exception up to 12: 11 is Excepted, 5 Overridden."""
    rules = widened({"kind": "Deployment", "paths": ["/spec/replicas"], "maximum": 10})
    assert verdict(rules, deployment(11)).state is State.EXCEPTED
    assert verdict(rules, deployment(5)).state is State.OVERRIDDEN
    beyond = verdict(rules, deployment(13))
    assert (beyond.state, beyond.action) == (State.DRIFTED, plan.Action.REVERT)


def test_the_blueprints_own_allowed_change_stays_overridden() -> None:
    rules = widened({"kind": "Deployment", "paths": ["/spec/replicas"], "maximum": 50})
    assert verdict(rules, deployment(12)).state is State.OVERRIDDEN


def test_the_cli_writes_what_it_was_asked() -> None:
    made = excepting.manifest(
        "shop",
        "prod",
        paths=["/spec/replicas"],
        reason="incident 4711",
        duration="4h",
        obj="Deployment/web",
        maximum=12,
    )
    assert made["metadata"] == {"namespace": "prod", "generateName": "shop-"}
    assert made["spec"] == {
        "environmentRef": {"name": "shop"},
        "changes": [
            {"paths": ["/spec/replicas"], "kind": "Deployment", "name": "web", "maximum": 12}
        ],
        "reason": "incident 4711",
        "duration": "4h",
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"duration": "4h", "obj": "web"}, "KIND/NAME"),
        ({"duration": "four hours"}, "a duration"),
        ({}, "give its end"),
    ],
)
def test_the_cli_refuses_what_cannot_be_written(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(Refused, match=message):
        excepting.manifest("shop", "prod", paths=["/spec/replicas"], reason="r", **fields)


@pytest.mark.parametrize(
    ("user", "groups", "why"),
    [
        ("lead2", ("team", "leads"), ""),
        ("lead", ("team", "leads"), "lead created it"),
        ("bob", ("team",), "bob is not in leads"),
        (None, (), "no approval vouched for"),
    ],
    ids=["another-lead", "its-author", "outside-the-group", "nobody"],
)
def test_four_eyes(user: str | None, groups: tuple[str, ...], why: str) -> None:
    found = exception.approval(user, groups, created_by="lead", approvers="leads")
    assert (found == "") if not why else (why in found)


def test_pending_until_approved() -> None:
    judged = exception.evaluate(
        "hold", body(duration="4h"), created_at=CREATED, expires_at=None, now=CREATED + 1,
        waiting="waiting for a member of leads",
    )  # fmt: skip
    assert (judged.phase, judged.changes) == (Phase.PENDING, ())


def test_an_approval_is_for_the_spec_it_saw() -> None:
    before = body(duration="4h")
    after = body(duration="4h", reason="incident 4711, and more")
    assert exception.spec_digest(before) != exception.spec_digest(after)
    assert exception.spec_digest(before) == exception.spec_digest(body(duration="4h"))
