"""Drift: the fields driftguard set, as the server stored them, against the live object.

The server decides equality. After an apply (or a dry-run apply) the response is
the blueprint as the server stores it: quantities, ports and defaults already in
their normal form. `expect()` keeps the values of exactly the fields our field
manager owns there (its `managedFields` entry); `compute()` compares a live
object against that. Nothing is normalised by hand, and fields we never set
(defaults, status, other controllers' annotations, extra labels) are never looked
at. Pure: no I/O, no clock.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from jsonpointer import escape

from driftguard.core.model import FIELD_MANAGER

Path = tuple[str, ...]
"""A field as `managedFields` names it, e.g. ("f:spec", "f:replicas")."""


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


class ChangeKind(StrEnum):
    CHANGED = "changed"  # a field we set holds another value
    REMOVED = "removed"  # a field we set is gone
    ADDED = "added"  # an item was added to a list we set
    TAKEN = "taken"  # another field manager took a field we set, value unchanged


@dataclass(frozen=True, slots=True)
class FieldChange:
    pointer: str
    kind: ChangeKind
    expected: Any = MISSING
    actual: Any = MISSING
    manager: str | None = None


@dataclass(frozen=True, slots=True)
class Drift:
    changes: tuple[FieldChange, ...] = ()

    @property
    def is_drifted(self) -> bool:
        return bool(self.changes)

    @property
    def pointers(self) -> list[str]:
        return sorted({change.pointer for change in self.changes})

    @property
    def changed_by(self) -> str | None:
        managers = [change.manager for change in self.changes if change.manager]
        return managers[0] if managers else None


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a field we set must hold; small, so thousands of them stay cheap.

    Three aligned tuples, not two dicts: the paths (and their pointers, when no path
    goes through a list) are the same tuples in every object of one shape, so an object
    holds only its values (two dicts of 6 fields were 430 bytes of each ConfigMap's)."""

    paths: tuple[Path, ...]
    held: tuple[Any, ...]
    """The value of each path, as stored."""
    where: tuple[str, ...]
    """The JSON pointer of each path in the object the values were read from."""
    lists: dict[Path, frozenset[str]] = field(default_factory=dict)
    resource_version: str = ""
    """The version of the object the values were read from when it is the object as stored
    (our apply's answer, or the live object itself; "" for a dry-run's answer, which keeps
    the live version whatever it would change): that version holds every value here."""

    def fields(self) -> Iterator[tuple[Path, Any, str]]:
        """Each field: its path, the value it must hold and its pointer."""
        return zip(self.paths, self.held, self.where, strict=True)

    @property
    def values(self) -> dict[Path, Any]:
        return dict(zip(self.paths, self.held, strict=True))


def written_at(obj: dict[str, Any] | None, manager: str | None) -> str | None:
    """When `manager` last wrote to the object (its managedFields time), or None."""
    times = [
        str(entry["time"])
        for entry in ((obj or {}).get("metadata") or {}).get("managedFields") or []
        if manager and entry.get("manager") == manager and entry.get("time")
    ]
    return max(times) if times else None  # RFC 3339 in UTC sorts as it reads


def fields_of(obj: dict[str, Any], manager: str = FIELD_MANAGER) -> dict[str, Any] | None:
    """The merged fieldsV1 tree that `manager` applied, or None if it applied nothing.
    Read it, never change it: with one entry (the usual case) it is that entry's own."""
    trees = [
        entry.get("fieldsV1") or {}
        for entry in (obj.get("metadata") or {}).get("managedFields") or []
        if entry.get("manager") == manager and entry.get("operation") == "Apply"
    ]
    if not trees:
        return None
    if len(trees) == 1:
        return trees[0]
    merged: dict[str, Any] = {}
    for tree in trees:
        _merge(merged, tree)
    return merged


def _merge(into: dict[str, Any], tree: dict[str, Any]) -> None:
    for key, child in tree.items():
        _merge(into.setdefault(key, {}), child)


_Tuple = TypeVar("_Tuple", bound=tuple[Any, ...])
_PATHS: dict[tuple[Any, ...], tuple[Any, ...]] = {}
PATHS_KEPT = 65536
"""Distinct tuples shared at most (paths, and expectations' tuples of paths and of
pointers); past it the table starts again (paths through keyed list items can be as many
as the objects)."""


def _shared(path: _Tuple) -> _Tuple:
    """The one tuple of this path: every ConfigMap's ("f:data", "f:v") is the same, and
    the expectations of 10,000 objects held 50,000 copies (2.9 MB under tracemalloc).
    Likewise an expectation's tuples of paths and of pointers."""
    found = _PATHS.get(path)
    if found is None:
        if len(_PATHS) >= PATHS_KEPT:
            _PATHS.clear()
        found = _PATHS[path] = path
    return found  # type: ignore[return-value]


def leaves(tree: dict[str, Any], prefix: Path = ()) -> list[Path]:
    """The fields in a fieldsV1 tree that hold a value (no owned children)."""
    out: list[Path] = []
    for key, child in tree.items():
        if key == ".":
            continue
        path = (*prefix, key)
        children = [name for name in child if name != "."]
        if children:
            out.extend(leaves(child, path))
        else:
            out.append(_shared(path))
    return out


def _lists(tree: dict[str, Any], prefix: Path = ()) -> dict[Path, frozenset[str]]:
    out: dict[Path, frozenset[str]] = {}
    for key, child in tree.items():
        if key == ".":
            continue
        path = (*prefix, key)
        items = frozenset(name for name in child if name[:2] in ("k:", "v:"))
        if items:
            out[path] = items
        out.update(_lists(child, path))
    return out


def _step(node: Any, key: str) -> tuple[Any, str]:
    """One step down a fieldsV1 path: the child and its JSON pointer token."""
    kind, _, raw = key.partition(":")
    if kind == "f":
        if isinstance(node, dict) and raw in node:
            return node[raw], escape(raw)
        return MISSING, escape(raw)
    if not isinstance(node, list):
        return MISSING, "-"
    if kind == "i":
        index = int(raw)
        return (node[index], raw) if index < len(node) else (MISSING, raw)
    wanted = json.loads(raw)
    for index, item in enumerate(node):
        if (kind == "v" and item == wanted) or (kind == "k" and _has_key(item, wanted)):
            return item, str(index)
    return MISSING, "-"


def _has_key(item: Any, wanted: dict[str, Any]) -> bool:
    return isinstance(item, dict) and all(item.get(name) == value for name, value in wanted.items())


@functools.lru_cache(maxsize=65536)
def _field_pointer(path: Path) -> str | None:
    """The pointer of a path made only of map fields (most are), the same in every object:
    worked out once, not once per object per pass. None for a path through a list."""
    if not all(key.startswith("f:") for key in path):
        return None
    return "/" + "/".join(escape(key[2:]) for key in path)


def value_at(obj: dict[str, Any], path: Path) -> tuple[Any, str]:
    """The value at a fieldsV1 path and its RFC 6901 pointer in this object."""
    pointer = _field_pointer(path)
    if pointer is not None:
        found: Any = obj
        for key in path:
            found = found.get(key[2:], MISSING) if isinstance(found, dict) else MISSING
        return found, pointer
    node: Any = obj
    tokens = []
    for key in path:
        node, token = _step(node, key) if node is not MISSING else (MISSING, _label(key))
        tokens.append(token)
    if path and path[-1].startswith("v:") and node is not MISSING:
        node = json.loads(path[-1][2:])
    return node, "/" + "/".join(tokens)


def _label(key: str) -> str:
    kind, _, raw = key.partition(":")
    return escape(raw) if kind == "f" else "-"


Read = list[tuple[Path, Any, str]]
"""Each field our manager owns in an object: its path, value (or MISSING) and pointer."""


def _read(obj: dict[str, Any]) -> tuple[dict[str, Any], Read] | None:
    """Our fieldsV1 tree in the object, and what each of its leaves holds (None: not ours)."""
    tree = fields_of(obj)
    if tree is None:
        return None
    return tree, [(path, *value_at(obj, path)) for path in leaves(tree)]


def expect(
    stored: dict[str, Any], *, is_stored: bool = False, like: dict[str, Any] | None = None
) -> Expectation:
    """The expectation from the server's answer to our (dry-run) apply; `is_stored`: the
    answer is the object as stored (a real apply's, or the live object), not a dry-run's.
    `like`: the manifest applied, whose equal values are kept instead of the answer's."""
    return _expectation(stored, _read(stored), is_stored=is_stored, like=like)


def _expectation(
    stored: dict[str, Any],
    read: tuple[dict[str, Any], Read] | None,
    *,
    is_stored: bool,
    like: dict[str, Any] | None = None,
) -> Expectation:
    tree, fields = read or ({}, [])
    # Write-only fields are not stored, so cannot drift.
    kept = [(path, value, pointer) for path, value, pointer in fields if value is not MISSING]
    paths = _shared(tuple(path for path, _, _ in kept))
    where = _shared(tuple(pointer for _, _, pointer in kept))
    held = tuple(value if like is None else _same_as(like, path, value) for path, value, _ in kept)
    version = str((stored.get("metadata") or {}).get("resourceVersion", "")) if is_stored else ""
    return Expectation(paths, held, where, _lists(tree) or _NO_LISTS, version)


_NO_LISTS: dict[Path, frozenset[str]] = {}
"""Shared by every expectation without lists (most): read, never changed."""


def _same_as(manifest: dict[str, Any], path: Path, value: Any) -> Any:
    """The manifest's own string when the server stored the same: the server's copy in
    its answer (one per field of each object) is then let go."""
    if isinstance(value, str):
        wanted = value_at(manifest, path)[0]
        if wanted == value:
            return wanted
    return value


def expect_if_owned(live: dict[str, Any], manifest: dict[str, Any]) -> Expectation | None:
    """`expect(live)` when our manager still owns every field the manifest sets (see
    `is_owned_whole`), else None: both from one reading of the object."""
    read = _read(live)
    if read is None or not _owns_whole(read[1], manifest):
        return None
    return _expectation(live, read, is_stored=True, like=manifest)


_IDENTITY = {"/apiVersion", "/kind", "/metadata/name", "/metadata/namespace"}


def pointers_of(manifest: dict[str, Any]) -> set[str]:
    """The leaf fields a manifest sets, as pointers (lists by index), identity aside."""
    found: set[str] = set()

    def walk(node: Any, pointer: str) -> None:
        if isinstance(node, dict) and node:
            for key, child in node.items():
                walk(child, f"{pointer}/{escape(str(key))}")
        elif isinstance(node, list) and node:
            for index, child in enumerate(node):
                walk(child, f"{pointer}/{index}")
        else:
            found.add(pointer)

    walk(manifest, "")
    return found - _IDENTITY


def is_owned_whole(live: dict[str, Any], manifest: dict[str, Any]) -> bool:
    """True when our field manager still owns every field the manifest sets.

    Any other writer that changes or removes one of our fields takes it from our
    managedFields entry, so a whole entry means our values are the live ones and
    the object can be trusted without applying it again (e.g. after a restart).
    When unsure (atomic lists, key fields), this says False and the caller applies.
    """
    read = _read(live)
    return read is not None and _owns_whole(read[1], manifest)


def _owns_whole(fields: Read, manifest: dict[str, Any]) -> bool:
    owned = {pointer for _, _, pointer in fields}
    wanted = pointers_of(manifest)
    # An atomic map or list (a Service selector, container args) is one owned leaf
    # covering every field the manifest sets under it.
    prefixes = set(wanted)
    for pointer in wanted:
        prefixes |= _ancestors(pointer)
    return owned <= prefixes and all(_is_covered(m, owned) for m in wanted)


@functools.lru_cache(maxsize=65536)
def _ancestors(pointer: str) -> frozenset[str]:
    """ "/a/b/c" -> {"", "/a", "/a/b"}: the same few pointers recur in every object."""
    return frozenset(pointer[:i] for i, char in enumerate(pointer) if char == "/")


def _is_covered(pointer: str, owned: set[str]) -> bool:
    while pointer:
        if pointer in owned:
            return True
        pointer = pointer.rpartition("/")[0]
    return False


def compute(expectation: Expectation, live: dict[str, Any]) -> Drift:
    """Every way the live object departs from what we set."""
    version = (live.get("metadata") or {}).get("resourceVersion")
    if expectation.resource_version and expectation.resource_version == version:
        # The very object the values were read from: each field holds them and is ours;
        # only items another manager added to a list we set can differ.
        if not expectation.lists:
            return Drift()
        return Drift(tuple(_added_items(expectation, live, _managers(live))))
    owned = fields_of(live)
    owned_leaves = set(leaves(owned)) if owned is not None else None
    managers = _managers(live)
    changes: list[FieldChange] = []
    for path, expected, stored_at in expectation.fields():
        actual, pointer = value_at(live, path)
        if actual is MISSING:
            pointer = stored_at
            # Nobody owns a field that is gone, so managedFields cannot say who removed it.
            changes.append(FieldChange(pointer, ChangeKind.REMOVED, expected, MISSING, None))
        elif actual != expected:
            manager = _owner(managers, path) or last_writer(live)
            changes.append(FieldChange(pointer, ChangeKind.CHANGED, expected, actual, manager))
        elif owned_leaves is not None and path not in owned_leaves:
            changes.append(
                FieldChange(pointer, ChangeKind.TAKEN, expected, actual, _owner(managers, path))
            )
    changes.extend(_added_items(expectation, live, managers))
    return Drift(tuple(changes))


def _added_items(
    expectation: Expectation, live: dict[str, Any], managers: list[tuple[str, dict[str, Any]]]
) -> list[FieldChange]:
    changes: list[FieldChange] = []
    for path, ours in expectation.lists.items():
        items, pointer = value_at(live, path)
        if not isinstance(items, list):
            continue
        known = [json.loads(key[2:]) for key in ours]
        is_set = next(iter(ours)).startswith("v:")
        for index, item in enumerate(items):
            if is_set:
                if item in known:
                    continue
                key = "v:" + json.dumps(item, separators=(",", ":"))
            else:
                if not isinstance(item, dict) or any(_has_key(item, k) for k in known):
                    continue
                key = _item_key(item, known[0])
            manager = _owner(managers, (*path, key)) or last_writer(live)
            changes.append(
                FieldChange(f"{pointer}/{index}", ChangeKind.ADDED, MISSING, item, manager)
            )
    return changes


def _item_key(item: dict[str, Any], sample: dict[str, Any]) -> str:
    """The fieldsV1 key the server gives a list item: its key fields, sorted, compact."""
    fields = {name: item.get(name) for name in sorted(sample)}
    return "k:" + json.dumps(fields, separators=(",", ":"))


def _managers(live: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    entries = [
        entry
        for entry in (live.get("metadata") or {}).get("managedFields") or []
        if entry.get("manager") != FIELD_MANAGER
    ]
    entries.sort(key=lambda entry: str(entry.get("time", "")), reverse=True)
    return [(str(entry.get("manager")), entry.get("fieldsV1") or {}) for entry in entries]


def _owner(managers: list[tuple[str, dict[str, Any]]], path: Path) -> str | None:
    for manager, tree in managers:
        node: Any = tree
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                break
        if node is not None:
            return manager
    return None


def last_writer(live: dict[str, Any]) -> str | None:
    """The newest other manager that wrote the object's spec or data (not its status)."""
    newest = [
        entry
        for entry in (live.get("metadata") or {}).get("managedFields") or []
        if entry.get("manager") != FIELD_MANAGER and entry.get("subresource") != "status"
    ]
    newest.sort(key=lambda entry: str(entry.get("time", "")), reverse=True)
    return str(newest[0].get("manager")) if newest else None
