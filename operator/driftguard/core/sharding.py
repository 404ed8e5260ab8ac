"""Who does what when several replicas share the work: hashes, ranges, membership, plans.

Pure: no clock, no client, no event loop. Times come in as seconds since the epoch.

Work is split by the FNV-64a hash of an Environment's *target* namespace, the hash
the API server computes for `shardRange(object.metadata.namespace, start, end)`, so
an Environment and the objects it manages always land on the same replica. The hash
space [0, 2**64) is cut into ranges, each claimed by one replica in its own Lease.

FNV-64a spreads similar names badly (`env-0` … `env-99` fall in one quarter of the
space), so the cuts follow the hashes of the namespaces in use, balanced by count,
not equal slices of the space. A plan starts from the claims the live replicas hold:
a replica keeps what it has while it is within its quota, only the excess moves, and a
plan made from its own result is the same plan (a fixed point). Every replica makes
the same plan from the same Leases; a replica claims a range only once no other live
replica claims it, and releases before anyone may take, so two replicas never act on
one namespace, even while their plans briefly disagree.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

SPACE = 1 << 64
"""The hash space: FNV-64a values are in [0, SPACE)."""

FIELD = "object.metadata.namespace"
"""The field the API server hashes for the shard selector."""

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3

Range = tuple[int, int]
"""[start, end) in the hash space."""

Ranges = tuple[Range, ...]
"""Sorted, disjoint, not touching (merged)."""

EVERYTHING: Ranges = ((0, SPACE),)


@functools.lru_cache(maxsize=65536)
def fnv64a(value: str) -> int:
    """FNV-64a of the UTF-8 bytes, as Go's hash/fnv New64a (k8s.io/apimachinery/pkg/sharding).

    Remembered: every Environment event asks for its target namespace's (a few hundred
    such events a second while a share moves), and the namespaces in use are few."""
    digest = _FNV_OFFSET
    for byte in value.encode():
        digest ^= byte
        digest = (digest * _FNV_PRIME) % SPACE
    return digest


# -- ranges -------------------------------------------------------------------


def merge_ranges(ranges: Iterable[Range]) -> Ranges:
    """Sorted, with overlapping or touching ranges joined and empty ones dropped."""
    merged: list[Range] = []
    for start, end in sorted(r for r in ranges if r[0] < r[1]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


def subtract(ranges: Iterable[Range], taken: Iterable[Range]) -> Ranges:
    """The parts of `ranges` outside `taken`."""
    result: list[Range] = []
    cuts = merge_ranges(taken)
    for start, end in merge_ranges(ranges):
        position = start
        for cut_start, cut_end in cuts:
            if cut_end <= position or cut_start >= end:
                continue
            if cut_start > position:
                result.append((position, cut_start))
            position = max(position, cut_end)
        if position < end:
            result.append((position, end))
    return merge_ranges(result)


def intersect(ranges: Iterable[Range], other: Iterable[Range]) -> Ranges:
    """The parts of `ranges` inside `other`."""
    kept = merge_ranges(ranges)
    return subtract(kept, subtract(EVERYTHING, other))


def contains(ranges: Iterable[Range], value: int) -> bool:
    return any(start <= value < end for start, end in ranges)


def owns(ranges: Iterable[Range], namespace: str) -> bool:
    """Whether the namespace's hash falls in the ranges."""
    return contains(ranges, fnv64a(namespace))


def _hex(value: int) -> str:
    # The server wants exactly 16 digits, or 17 for the exclusive end 2**64.
    return f"0x{value:016x}"


def selector(ranges: Iterable[Range]) -> str:
    """The API server's shard selector for these ranges ("" for none: then watch nothing)."""
    return " || ".join(
        f"shardRange({FIELD}, '{_hex(start)}', '{_hex(end)}')"
        for start, end in merge_ranges(ranges)
    )


def encode(ranges: Iterable[Range]) -> str:
    """Ranges as text for a Lease annotation: `0x…-0x…,0x…-0x…`."""
    return ",".join(f"{_hex(start)}-{_hex(end)}" for start, end in merge_ranges(ranges))


def decode(text: str) -> Ranges:
    """The inverse of encode; anything unreadable is no claim at all."""
    ranges: list[Range] = []
    for part in text.split(","):
        start, _, end = part.strip().partition("-")
        try:
            low, high = int(start, 16), int(end, 16)
        except ValueError:
            continue
        if 0 <= low < high <= SPACE:
            ranges.append((low, high))
    return merge_ranges(ranges)


def size(ranges: Iterable[Range]) -> int:
    return sum(end - start for start, end in ranges)


# -- membership -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """One replica as its Lease shows it."""

    replica: str
    renewed: float  # the Lease's renewTime, seconds since the epoch
    duration: float  # leaseDurationSeconds
    claims: Ranges = ()

    def is_live(self, now: float) -> bool:
        """Live until the full lease duration after its last renew, and not a moment less."""
        return now < self.renewed + self.duration


def live(members: Iterable[Member], now: float) -> dict[str, Member]:
    """The replicas whose Leases are valid now, by id."""
    return {member.replica: member for member in members if member.is_live(now)}


# -- plans ------------------------------------------------------------------------


def _owner_of(point: int, claims: Mapping[str, Ranges]) -> str | None:
    for replica in sorted(claims):
        if contains(claims[replica], point):
            return replica
    return None


def _quotas(replicas: Sequence[str], counts: Mapping[str, int], total: int) -> dict[str, int]:
    """floor or ceil of total/n each; the ceil ones are those holding most already."""
    base, extra = divmod(total, len(replicas))
    ranked = sorted(replicas, key=lambda replica: (-counts.get(replica, 0), replica))
    return {replica: base + (1 if rank < extra else 0) for rank, replica in enumerate(ranked)}


SLACK = 0.2
"""New namespaces may unbalance the shares by this fraction of a share before anything
moves: an Environment created is not worth a handover, a replica joining or leaving is."""


def tolerance(total: int, replicas: int) -> int:
    """How far below its share a replica may fall before a rebalance (at least 1)."""
    return max(1, int(SLACK * total / max(replicas, 1)))


def _is_unbalanced(counts: Mapping[str, int], total: int, has_unowned: bool) -> bool:
    """Whether to rebalance: a replica left (its namespaces are nobody's), one joined (it
    has none while there are enough to go round), or one fell well below its share."""
    floor = total // len(counts)
    lowest = min(counts.values())
    is_empty = lowest == 0 and max(counts.values()) >= 2
    return has_unowned or is_empty or lowest < floor - tolerance(total, len(counts))


def plan(
    replicas: Iterable[str], hashes: Iterable[int], claims: Mapping[str, Ranges]
) -> dict[str, Ranges]:
    """The ranges each replica should hold: every namespace hash to one replica, balanced.

    `claims` are what the live replicas hold now (others are ignored). When a replica
    joined or left, or the shares drifted apart by more than the tolerance, they are
    balanced by count: a namespace stays with the replica that holds it unless that
    replica is over its quota; the ones released and the ones nobody holds go, in hash
    order, to the replicas under their quota, in id order. Otherwise nothing moves.
    Each range starts at a hash in use (the first at 0, the last ends at 2**64), so the
    whole space is always covered and a new namespace lands in the range below it.
    """
    ids = sorted(set(replicas))
    if not ids:
        return {}
    held = {replica: claims.get(replica, ()) for replica in ids}
    keys = sorted(set(hashes))
    if not keys:
        # Nothing in use: keep what is held, the rest to the first replica.
        rest = subtract(EVERYTHING, [r for ranges in held.values() for r in ranges])
        result = {replica: merge_ranges(held[replica]) for replica in ids}
        result[ids[0]] = merge_ranges([*result[ids[0]], *rest])
        return result
    owner: dict[int, str | None] = {key: _owner_of(key, held) for key in keys}
    counts = {replica: sum(1 for o in owner.values() if o == replica) for replica in ids}
    has_unowned = any(o is None for o in owner.values())
    if _is_unbalanced(counts, len(keys), has_unowned):
        _balance(ids, keys, owner, counts)
    starts = [0, *keys[1:]]
    ends = [*keys[1:], SPACE]
    result_lists: dict[str, list[Range]] = {replica: [] for replica in ids}
    for key, start, end in zip(keys, starts, ends, strict=True):
        result_lists[str(owner[key])].append((start, end))
    return {replica: merge_ranges(ranges) for replica, ranges in result_lists.items()}


def _balance(
    ids: list[str], keys: list[int], owner: dict[int, str | None], counts: dict[str, int]
) -> None:
    """Moves as few namespaces as exact quotas allow (in place)."""
    quota = _quotas(ids, counts, len(keys))
    for replica in ids:
        excess = counts[replica] - quota[replica]
        if excess > 0:
            # The highest hashes go, so what stays is as contiguous as it was.
            mine = [key for key in keys if owner[key] == replica]
            for key in mine[-excess:]:
                owner[key] = None
            counts[replica] = quota[replica]
    for key in keys:
        if owner[key] is None:
            taker = next(replica for replica in ids if counts[replica] < quota[replica])
            owner[key] = taker
            counts[taker] += 1


@dataclass(frozen=True, slots=True)
class Step:
    """What one replica does next: the claims it writes, and what it gives up or takes."""

    claims: Ranges
    released: Ranges
    taken: Ranges


def step(me: str, planned: Mapping[str, Ranges], held: Mapping[str, Ranges]) -> Step:
    """Moves one replica toward the plan without ever overlapping another live replica.

    It keeps what it holds and the plan gives it, releases the rest, and takes what the
    plan gives it only where no other live replica still holds it (that one releases
    first, or its Lease runs out).
    """
    mine = merge_ranges(held.get(me, ()))
    others = merge_ranges(r for replica, ranges in held.items() if replica != me for r in ranges)
    wanted = subtract(planned.get(me, ()), others)
    return Step(claims=wanted, released=subtract(mine, wanted), taken=subtract(wanted, mine))


def moved(before: Mapping[str, Ranges], after: Mapping[str, Ranges], hashes: Iterable[int]) -> int:
    """How many of the hashes changed replica between two plans."""
    count = 0
    for key in set(hashes):
        if _owner_of(key, before) != _owner_of(key, after):
            count += 1
    return count
