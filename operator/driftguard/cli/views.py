"""`driftguard history` and `audit`: an Environment's memory, for people.

They read the records the operator keeps (ControllerRevisions, the audit ConfigMap)
as the CLI's user and never write. Secret values are never printed. The helpers
every memory command shares (one session, the Environment, tables, YAML diffs) are
here too: `rollback` and `comparison` use them.
"""

from __future__ import annotations

import asyncio
import copy
import difflib
import json
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from driftguard.cli import inspection
from driftguard.core import model
from driftguard.kube import audit, history
from driftguard.kube.client import KubeCluster
from driftguard.kube.cluster import ENVIRONMENTS
from driftguard.kube.errors import ApiError

_DAYS = re.compile(r"^([0-9]+(?:\.[0-9]+)?)d(.*)$")


class Refused(Exception):
    """What the user asked cannot be done as asked; the message says why (exit 1)."""


def table(rows: Sequence[Sequence[str]]) -> str:
    """Columns padded as `driftguard status` prints them; the first row is the header."""
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines) + "\n"


def since_seconds(text: str) -> float:
    """A duration such as 30s, 10m, 1h or 2d (days added to model.parse_duration's units)."""
    days = _DAYS.match(text)
    if days is None:
        return model.parse_duration(text)
    rest = days.group(2)
    return float(days.group(1)) * 86400 + (model.parse_duration(rest) if rest else 0.0)


# history


def history_rows(revisions: Sequence[history.Revision], current: int | None) -> list[list[str]]:
    """The history table: header, then one row per kept revision, oldest first."""
    rows = [["CURRENT", "REVISION", "APPLIED", "GENERATION", "APPLIED BY", "SPEC BY", "BLUEPRINT"]]
    for rev in revisions:
        rows.append(
            [
                "*" if rev.revision == current else "",
                str(rev.revision),
                rev.applied_at,
                "-" if rev.generation is None else str(rev.generation),
                rev.applied_by or "-",
                ",".join(rev.spec_managers) or "-",
                blueprint_of(rev),
            ]
        )
    return rows


def blueprint_of(rev: history.Revision) -> str:
    used = rev.data.get("blueprint")
    if not isinstance(used, dict) or not used.get("name"):
        return "-"
    return f"{used['name']}@{used.get('revision', '?')}"


def history_json(
    revisions: Sequence[history.Revision], current: int | None
) -> list[dict[str, Any]]:
    return [
        {
            "revision": rev.revision,
            "name": rev.name,
            "appliedAt": rev.applied_at,
            "generation": rev.generation,
            "appliedBy": rev.applied_by or None,
            "specManagers": list(rev.spec_managers),
            "blueprint": rev.data.get("blueprint"),
            "current": rev.revision == current,
        }
        for rev in revisions
    ]


def find(revisions: Sequence[history.Revision], number: int, env: str) -> history.Revision:
    for rev in revisions:
        if rev.revision == number:
            return rev
    kept = ", ".join(str(rev.revision) for rev in revisions) or "none"
    raise Refused(f"Environment {env} has no revision {number} kept (kept: {kept})")


def shown_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with the Secret values of its inline resources redacted."""
    shown = copy.deepcopy(spec)
    if isinstance(shown.get("resources"), list):
        shown["resources"] = [_redacted(m) for m in shown["resources"]]
    return shown


def _redacted(manifest: Any, other: Any = None, side: str = "") -> Any:
    if not isinstance(manifest, dict):
        return manifest
    return inspection.redact(manifest, other if isinstance(other, dict) else None, side=side)


def revision_text(rev: history.Revision) -> str:
    """One revision as YAML: the spec as written, then the objects made from a Blueprint."""
    text = yaml.safe_dump({"spec": shown_spec(rev.spec)}, sort_keys=True)
    resources = rev.data.get("resources")
    if isinstance(resources, list):
        text += f"---\n# the objects made from Blueprint {blueprint_of(rev)}\n"
        text += yaml.safe_dump({"resources": [_redacted(m) for m in resources]}, sort_keys=True)
    return text


def _identity(manifest: Any) -> tuple[str, str, str]:
    meta = (manifest.get("metadata") or {}) if isinstance(manifest, dict) else {}
    kind = manifest.get("kind") if isinstance(manifest, dict) else None
    api = manifest.get("apiVersion") if isinstance(manifest, dict) else None
    return str(api), str(kind), str(meta.get("name"))


def _paired(ours: list[Any], theirs: list[Any], side: str) -> list[Any]:
    """Our manifests redacted, a Secret value that differs from theirs marked with `side`."""
    by_id = {_identity(m): m for m in theirs}
    return [_redacted(m, by_id.get(_identity(m), {}), side) for m in ours]


def revisions_diff(old: history.Revision, new: history.Revision) -> str:
    """A unified diff of two revisions' specs, and of their Blueprint-made objects if any."""

    def spec_of(rev: history.Revision, other: history.Revision, side: str) -> dict[str, Any]:
        spec = copy.deepcopy(rev.spec)
        if isinstance(spec.get("resources"), list):
            spec["resources"] = _paired(spec["resources"], other.spec.get("resources") or [], side)
        return spec

    out = unified_yaml(
        spec_of(old, new, f"r{old.revision}"),
        spec_of(new, old, f"r{new.revision}"),
        f"revision {old.revision}/spec",
        f"revision {new.revision}/spec",
    )
    old_made, new_made = old.data.get("resources"), new.data.get("resources")
    if isinstance(old_made, list) or isinstance(new_made, list):
        old_made, new_made = old_made or [], new_made or []
        out += unified_yaml(
            _paired(old_made, new_made, f"r{old.revision}"),
            _paired(new_made, old_made, f"r{new.revision}"),
            f"revision {old.revision}/resources ({blueprint_of(old)})",
            f"revision {new.revision}/resources ({blueprint_of(new)})",
        )
    return out


def unified_yaml(old: Any, new: Any, old_name: str, new_name: str) -> str:
    return "".join(
        difflib.unified_diff(
            yaml.safe_dump(old, sort_keys=True).splitlines(keepends=True),
            yaml.safe_dump(new, sort_keys=True).splitlines(keepends=True),
            fromfile=old_name,
            tofile=new_name,
        )
    )


# audit


def select(
    incidents: Sequence[dict[str, Any]], *, since: float | None, now: datetime
) -> list[dict[str, Any]]:
    """The incidents no older than `since` seconds (all when None), oldest first, made safe.

    The operator already redacts Secret values; they are redacted here again so a
    trail written by another version never prints one.
    """
    cutoff = None if since is None else now - timedelta(seconds=since)
    kept = []
    for item in incidents:
        at = moment(item.get("time"))
        if cutoff is not None and (at is None or at < cutoff):
            continue
        kept.append(_safe(item))
    return kept


def moment(text: Any) -> datetime | None:
    """An RFC 3339 time from a record; None when unreadable, UTC when it names no zone."""
    try:
        at = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _safe(item: dict[str, Any]) -> dict[str, Any]:
    if item.get("kind") != "Secret" or not item.get("values"):
        return item
    values = [
        {**v, "blueprint": inspection.REDACTED, "live": inspection.REDACTED} for v in item["values"]
    ]
    return {**item, "values": values}


def audit_rows(incidents: Sequence[dict[str, Any]]) -> list[list[str]]:
    rows = [["TIME", "OBJECT", "ACTION", "PATHS", "BY", "VALUES"]]
    for item in incidents:
        where = "/".join(str(item.get(k)) for k in ("kind", "namespace", "name") if item.get(k))
        by = str(item.get("changedBy") or "-")
        if item.get("user"):
            by += f" ({item['user']})"
        values = "; ".join(
            f"{v.get('path')}: {v.get('blueprint')} → {v.get('live')}"
            for v in item.get("values") or []
        )
        if item.get("deleted"):
            values = values or "(deleted)"
        if item.get("action") == "in-sync":
            values = f"in sync again after {item.get('outOfSyncS', '?')} s out of sync"
        if str(item.get("action", "")).startswith("exception-"):
            where = f"DriftException/{item.get('exception', '?')}"
            by = str(item.get("createdBy") or "-")
            if item.get("approvedBy"):
                by += f", approved by {item['approvedBy']}"
            values = (
                f"{item.get('reason', '')}; until {item.get('expiresAt', '?')}"
                if item["action"] == "exception-active"
                else f"ended: {item.get('end', '?')}"
            )
        rows.append(
            [
                str(item.get("time", "-")),
                where,
                str(item.get("action", "-")),
                ",".join(item.get("paths") or []) or "-",
                by,
                values or "-",
            ]
        )
    return rows


# commands


async def session(work: Callable[[KubeCluster], Awaitable[int]]) -> int:
    """Runs one command: exit 1 when refused, 2 on errors; the client is always closed."""
    cluster = await inspection._connect()
    if cluster is None:
        return 2
    try:
        return await work(cluster)
    except Refused as exc:
        print(exc, file=sys.stderr)
        return 1
    except (ApiError, model.InvalidSpecError, LookupError, ValueError) as exc:
        describe = exc.describe() if isinstance(exc, ApiError) else str(exc)
        print(f"error: {describe}", file=sys.stderr)
        return 2
    finally:
        await cluster.close()


async def get_environment(cluster: KubeCluster, name: str, namespace: str) -> dict[str, Any]:
    env = await cluster.get(ENVIRONMENTS, namespace, name)
    if env is None:
        raise LookupError(f"Environment {namespace}/{name} not found")
    return env


def current_revision(env: dict[str, Any]) -> int | None:
    revision = (env.get("status") or {}).get("revision")
    return int(revision) if revision else None


def show_history(
    name: str,
    *,
    namespace: str | None,
    revision: int | None = None,
    diff: tuple[int, int] | None = None,
    output: str = "table",
) -> int:
    ns = namespace or inspection.current_namespace()

    async def work(cluster: KubeCluster) -> int:
        env = await get_environment(cluster, name, ns)
        kept = await history.revisions(cluster, ns, name)
        label = f"{ns}/{name}"
        if revision is not None:
            sys.stdout.write(revision_text(find(kept, revision, label)))
        elif diff is not None:
            sys.stdout.write(revisions_diff(find(kept, diff[0], label), find(kept, diff[1], label)))
        elif output == "json":
            print(json.dumps(history_json(kept, current_revision(env)), indent=2))
        elif not kept:
            print(f"no revisions recorded for Environment {label}")
        else:
            sys.stdout.write(table(history_rows(kept, current_revision(env))))
        return 0

    return asyncio.run(session(work))


def show_audit(name: str, *, namespace: str | None, since: str | None, output: str) -> int:
    ns = namespace or inspection.current_namespace()

    async def work(cluster: KubeCluster) -> int:
        seconds = since_seconds(since) if since else None
        await get_environment(cluster, name, ns)
        trail = await cluster.get(audit.CONFIGMAPS, ns, audit.trail_name(name))
        text = ((trail or {}).get("data") or {}).get(audit.KEY, "")
        incidents = select(audit.parse(text), since=seconds, now=datetime.now(UTC))
        if output == "json":
            print(json.dumps(incidents, indent=2))
        elif not incidents:
            print("no drift recorded" + (f" in the last {since}" if since and text else ""))
        else:
            sys.stdout.write(table(audit_rows(incidents)))
        return 0

    return asyncio.run(session(work))
