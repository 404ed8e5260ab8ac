"""Sharding: the hash the API server uses, ranges, membership, and plans that move little."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftguard.core import sharding
from driftguard.core.sharding import SPACE, Member

# Values printed by Go's hash/fnv New64a, the hash k8s.io/apimachinery/pkg/sharding uses.
GO_FNV = [
    ("", 0xCBF29CE484222325),
    ("env-0", 0xAD2600BF427F8D11),
    ("team-a", 0xDE90A3717D1252D6),
    ("ünï", 0x8406649DFD5E4E56),
]


@pytest.mark.parametrize(("value", "expected"), GO_FNV, ids=[v or "empty" for v, _ in GO_FNV])
def test_fnv64a_matches_go(value: str, expected: int) -> None:
    """The hash equals Go's FNV-64a of the same bytes."""
    assert sharding.fnv64a(value) == expected


def test_selector_uses_the_servers_hex_form() -> None:
    """Bounds are 16 hex digits, the end of the space 17, ranges joined by ||."""
    text = sharding.selector([(0, 1 << 63), ((1 << 63) + 5, SPACE)])
    assert text == (
        "shardRange(object.metadata.namespace, '0x0000000000000000', '0x8000000000000000')"
        " || shardRange(object.metadata.namespace, '0x8000000000000005', '0x10000000000000000')"
    )


def test_selector_of_nothing_is_empty() -> None:
    """No ranges, no selector (the caller then watches nothing)."""
    assert sharding.selector([]) == ""


def test_decode_ignores_garbage() -> None:
    """An unreadable claim is no claim."""
    assert sharding.decode("nonsense,0x10-0x05,0x00-0x10") == ((0, 16),)


def test_member_live_until_the_full_duration() -> None:
    """A Lease is valid up to, not including, renew time plus duration."""
    member = Member("a", renewed=100.0, duration=10.0)
    assert member.is_live(109.999)
    assert not member.is_live(110.0)


def test_live_drops_expired_replicas() -> None:
    """Only replicas whose Lease is still valid are members."""
    members = [Member("a", 100.0, 10.0), Member("b", 80.0, 10.0)]
    assert list(sharding.live(members, 105.0)) == ["a"]


def test_similar_names_are_balanced_by_count() -> None:
    """env-0 … env-99 cluster in the hash space, yet each of 3 replicas gets 33 or 34."""
    hashes = [sharding.fnv64a(f"env-{i}") for i in range(100)]
    planned = sharding.plan(["a", "b", "c"], hashes, {})
    counts = sorted(sum(sharding.contains(r, h) for h in hashes) for r in planned.values())
    assert counts == [33, 33, 34]


def test_join_moves_only_what_the_newcomer_takes() -> None:
    """A fourth replica takes a quarter; nothing moves between the three others."""
    hashes = [sharding.fnv64a(f"env-{i}") for i in range(100)]
    before = sharding.plan(["a", "b", "c"], hashes, {})
    after = sharding.plan(["a", "b", "c", "d"], hashes, before)
    assert sharding.moved(before, after, hashes) == 25
    for key in hashes:
        owner = next(r for r, ranges in after.items() if sharding.contains(ranges, key))
        if owner != "d":
            assert sharding.contains(before[owner], key)


def test_leave_moves_only_the_leavers_share() -> None:
    """When one of three leaves, only its namespaces move."""
    hashes = [sharding.fnv64a(f"team-{i}") for i in range(60)]
    before = sharding.plan(["a", "b", "c"], hashes, {})
    held = {replica: before[replica] for replica in ("a", "c")}
    after = sharding.plan(["a", "c"], hashes, held)
    assert sharding.moved(before, after, hashes) == 20


def test_step_waits_for_the_holder_to_release() -> None:
    """A range still held by another live replica is not taken yet."""
    planned = {"a": ((0, 10),), "b": ((10, SPACE),)}
    held = {"a": ((0, 20),), "b": ()}
    step = sharding.step("b", planned, held)
    assert step.claims == ((20, SPACE),)
    released = sharding.step("a", planned, held)
    assert released.released == ((10, 20),)
    assert released.claims == ((0, 10),)


names = st.text(alphabet="abcdefghij-0123456789", min_size=1, max_size=12)
replica_sets = st.sets(st.sampled_from(["r1", "r2", "r3", "r4", "r5"]), min_size=1)


def _owners(planned: dict[str, sharding.Ranges], point: int) -> list[str]:
    return [replica for replica, ranges in planned.items() if sharding.contains(ranges, point)]


@settings(max_examples=200, deadline=None)
@given(st.sets(names, max_size=60), replica_sets, st.integers(0, SPACE - 1))
def test_plan_covers_every_point_exactly_once(
    namespaces: set[str], replicas: set[str], point: int
) -> None:
    """Any hash, in use or not, belongs to exactly one replica."""
    hashes = [sharding.fnv64a(ns) for ns in namespaces]
    planned = sharding.plan(replicas, hashes, {})
    for probe in [point, *hashes]:
        assert len(_owners(planned, probe)) == 1


@settings(max_examples=200, deadline=None)
@given(st.sets(names, max_size=60), replica_sets, replica_sets)
def test_plan_is_balanced_and_a_fixed_point(
    namespaces: set[str], first: set[str], second: set[str]
) -> None:
    """After any change of members: counts differ by at most one, and re-planning moves nothing."""
    hashes = sorted({sharding.fnv64a(ns) for ns in namespaces})
    before = sharding.plan(first, hashes, {})
    held = {replica: before.get(replica, ()) for replica in second}
    after = sharding.plan(second, hashes, held)
    counts = [sum(sharding.contains(r, h) for h in hashes) for r in after.values()]
    assert max(counts) - min(counts) <= 1
    assert sharding.plan(second, hashes, after) == after


@settings(max_examples=200, deadline=None)
@given(st.lists(names, min_size=1, max_size=80, unique=True), replica_sets)
def test_new_namespaces_move_nothing_within_the_tolerance(
    namespaces: list[str], replicas: set[str]
) -> None:
    """Namespaces added one by one stay where they land, and nothing already placed moves,
    until a share falls more than the tolerance below its floor (or one is empty)."""
    held: dict[str, sharding.Ranges] = {}
    hashes: list[int] = []
    for namespace in namespaces:
        hashes.append(sharding.fnv64a(namespace))
        planned = sharding.plan(replicas, hashes, held)
        total = len(set(hashes))
        if held:
            landed = [sum(sharding.contains(held[r], h) for h in set(hashes)) for r in replicas]
            floor, slack = total // len(replicas), sharding.tolerance(total, len(replicas))
            is_tolerable = min(landed) >= floor - slack and not (min(landed) == 0 < max(landed) - 1)
            if is_tolerable:
                assert sharding.moved(held, planned, hashes) == 0
        assert all(len(_owners(planned, h)) == 1 for h in hashes)
        held = planned


def test_an_added_namespace_is_not_a_handover() -> None:
    """One more namespace in a balanced 3/3/3 split joins the range it falls in; nothing moves."""
    hashes = [sharding.fnv64a(f"team-{i}") for i in range(9)]
    before = sharding.plan(["a", "b", "c"], hashes, {})
    extra = sharding.fnv64a("team-new")
    after = sharding.plan(["a", "b", "c"], [*hashes, extra], before)
    assert after == before


@settings(max_examples=200, deadline=None)
@given(st.sets(names, min_size=1, max_size=60), replica_sets, replica_sets)
def test_plan_moves_no_more_than_needed(
    namespaces: set[str], first: set[str], second: set[str]
) -> None:
    """A namespace of a replica that stays moves only if that replica is over its new quota."""
    hashes = sorted({sharding.fnv64a(ns) for ns in namespaces})
    before = sharding.plan(first, hashes, {})
    held = {replica: before.get(replica, ()) for replica in second}
    after = sharding.plan(second, hashes, held)
    ceiling = -(-len(hashes) // len(second))
    for replica in first & second:
        kept = [h for h in hashes if sharding.contains(before[replica], h)]
        lost = [h for h in kept if not sharding.contains(after[replica], h)]
        if lost:
            assert len(kept) > len(hashes) // len(second)
        assert len(kept) - len(lost) <= ceiling


@settings(max_examples=200, deadline=None)
@given(
    st.sets(names, max_size=40),
    st.lists(replica_sets, min_size=1, max_size=6),
    st.lists(st.sampled_from(["r1", "r2", "r3", "r4", "r5"]), max_size=30),
)
def test_steps_never_overlap(
    namespaces: set[str], memberships: list[set[str]], order: list[str]
) -> None:
    """Replicas stepping one at a time, each with its own (possibly stale) plan, never hold
    the same hash at once."""
    hashes = [sharding.fnv64a(ns) for ns in namespaces]
    held: dict[str, sharding.Ranges] = {}
    for members in memberships:
        held = {replica: held.get(replica, ()) for replica in members}
        for replica in [r for r in order if r in members] or sorted(members):
            planned = sharding.plan(members, hashes, held)
            held[replica] = sharding.step(replica, planned, held).claims
            everything = [r for ranges in held.values() for r in ranges]
            assert sharding.size(everything) == sharding.size(sharding.merge_ranges(everything))


@settings(max_examples=100, deadline=None)
@given(st.sets(names, max_size=40), replica_sets)
def test_steps_converge_to_the_plan(namespaces: set[str], replicas: set[str]) -> None:
    """With every replica stepping in turn, the claims reach the plan and cover everything."""
    hashes = [sharding.fnv64a(ns) for ns in namespaces]
    held: dict[str, sharding.Ranges] = {replica: () for replica in replicas}
    for _ in range(3):
        for replica in sorted(replicas):
            planned = sharding.plan(replicas, hashes, held)
            held[replica] = sharding.step(replica, planned, held).claims
    assert held == sharding.plan(replicas, hashes, held)
    assert (
        sharding.merge_ranges(r for ranges in held.values() for r in ranges) == sharding.EVERYTHING
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 1000)), max_size=8),
    st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 1000)), max_size=8),
    st.integers(0, 1000),
)
def test_range_algebra_agrees_with_points(
    first: list[tuple[int, int]], second: list[tuple[int, int]], point: int
) -> None:
    """subtract and intersect agree with membership of a single point."""
    a = [(min(x, y), max(x, y)) for x, y in first]
    b = [(min(x, y), max(x, y)) for x, y in second]
    in_a, in_b = sharding.contains(a, point), sharding.contains(b, point)
    assert sharding.contains(sharding.subtract(a, b), point) == (in_a and not in_b)
    assert sharding.contains(sharding.intersect(a, b), point) == (in_a and in_b)
    assert sharding.decode(sharding.encode(a)) == sharding.merge_ranges(a)
