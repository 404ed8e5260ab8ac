"""`driftguard report`: compliance evidence over a window, from the audit trails.

For auditors and the people who answer them: how often each Environment drifted, who and
which tool changed it, how fast it was put back, how long it was out of sync, and which
DriftExceptions were granted, by whom, for how long. It reads what the operator keeps (each
Environment's audit trail, the DriftExceptions) as the CLI's user and never writes. A trail
keeps its newest records only: where it does not reach back over the whole window, the
report says so. Values are never read into it, so a Secret's never show.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from driftguard.cli import inspection
from driftguard.cli.views import get_environment, moment, session, since_seconds
from driftguard.core import exception, model
from driftguard.kube import audit
from driftguard.kube.client import KubeCluster
from driftguard.kube.cluster import ENVIRONMENTS

REVERTED, FLAGGED, EXCEPTED = "reverted", "flagged", "excepted"
OBJECT_ACTIONS = {REVERTED, FLAGGED, EXCEPTED, "paused", "fighting", "conflict", "tolerated"}
"""What the trail records about an object; `tolerated` (allowedChanges) is no incident."""
CSV_FIELDS = ("time", "namespace", "environment", "kind", "objectNamespace", "name", "action",
              "paths", "user", "tool", "latencyMs", "exception")  # fmt: skip


@dataclass
class Trail:
    """One Environment's audit trail as read, and its DriftExceptions that exist now."""

    namespace: str
    environment: str
    entries: list[dict[str, Any]]
    exceptions: list[dict[str, Any]] = field(default_factory=list)
    is_out_of_sync: bool = False  # its status now: drifted or missing objects


def _iso(at: datetime | None) -> str | None:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if at else None


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile: a value that occurred, None with none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def in_window(trail: Trail, start: datetime, end: datetime) -> list[dict[str, Any]]:
    return [e for e in trail.entries if (at := moment(e.get("time"))) and start <= at <= end]


def exceptions_of(trail: Trail, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Each exception granted that overlaps the window, once: its trail records and, for
    one that still exists, its object (which knows it even before it was in force)."""
    found: dict[str, dict[str, Any]] = {}
    for entry in trail.entries:
        name = entry.get("exception")
        action = entry.get("action")
        if not name or action not in ("exception-active", "exception-ended"):
            continue
        item = found.setdefault(str(name), {"name": str(name)})
        if action == "exception-active":
            item.setdefault("start", entry.get("time"))
            for key in ("reason", "createdBy", "approvedBy", "expiresAt"):
                if entry.get(key):
                    item[key] = entry[key]
        else:
            item["end"], item["ended"] = entry.get("time"), entry.get("end")
    for body in trail.exceptions:
        meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
        item = found.setdefault(meta["name"], {"name": meta["name"]})
        item.setdefault("start", meta.get("creationTimestamp"))
        item.setdefault("reason", spec.get("reason"))
        for key in ("createdBy", "approvedBy", "expiresAt"):
            if status.get(key):
                item.setdefault(key, status[key])
        item.setdefault("phase", status.get("phase"))
    kept = []
    for item in found.values():
        began = moment(item.get("start"))
        over = moment(item.get("end")) or moment(item.get("expiresAt"))
        if began is None or began > end or (over is not None and over < start):
            continue
        item["durationS"] = round((over - began).total_seconds()) if over else None
        kept.append({k: v for k, v in item.items() if v is not None})
    return sorted(kept, key=lambda i: (str(i.get("start")), i["name"]))


def summary(trail: Trail, start: datetime, end: datetime) -> dict[str, Any]:
    """One Environment's figures over the window."""
    entries = in_window(trail, start, end)
    incidents = [e for e in entries if e.get("action") in OBJECT_ACTIONS - {"tolerated"}]
    actions = Counter(str(e["action"]) for e in incidents)
    latencies = [
        float(e["latencyMs"])
        for e in incidents
        if e["action"] == REVERTED and isinstance(e.get("latencyMs"), int | float)
    ]
    first = min((at for e in trail.entries if (at := moment(e.get("time")))), default=None)
    return {
        "namespace": trail.namespace,
        "environment": trail.environment,
        "trailSince": _iso(first),
        # A trail that is full may have dropped older records: say where it begins.
        "trailCoversWindow": first is None or first <= start or len(trail.entries) < audit.LIMIT,
        "incidents": {
            "total": len(incidents),
            REVERTED: actions[REVERTED],
            FLAGGED: actions[FLAGGED] + actions["paused"],
            EXCEPTED: actions[EXCEPTED],
            "other": actions["fighting"] + actions["conflict"],
        },
        "tolerated": sum(1 for e in entries if e.get("action") == "tolerated"),
        "byPerson": dict(Counter(str(e.get("user") or "unknown") for e in incidents)),
        "byTool": dict(Counter(str(e.get("changedBy") or "unknown") for e in incidents)),
        "revertLatencyMs": _latency(latencies),
        "outOfSyncSeconds": round(
            sum(float(e.get("outOfSyncS") or 0) for e in entries if e.get("action") == "in-sync")
            + _ongoing(trail, start, end),
            1,
        ),
        "exceptions": exceptions_of(trail, start, end),
    }


def _ongoing(trail: Trail, start: datetime, end: datetime) -> float:
    """Out of sync now: since the first drift after it was last in sync (the write's time
    when known), within the window."""
    if not trail.is_out_of_sync:
        return 0.0
    since = None
    for entry in trail.entries:
        if entry.get("action") == "in-sync":
            since = None
        elif entry.get("action") in (FLAGGED, REVERTED, "paused", "fighting", "conflict"):
            at = moment(entry.get("changedAt")) or moment(entry.get("time"))
            since = since or at
    if since is None:
        return 0.0
    return max(0.0, (end - max(since, start)).total_seconds())


def _latency(values: list[float]) -> dict[str, Any]:
    return {"count": len(values), "p50": percentile(values, 0.5), "p99": percentile(values, 0.99)}


def build(trails: list[Trail], *, window_s: float, now: datetime) -> dict[str, Any]:
    """The report as one JSON-ready document."""
    start = now - timedelta(seconds=window_s)
    environments = [summary(t, start, now) for t in trails]
    latencies = [
        float(e["latencyMs"])
        for t in trails
        for e in in_window(t, start, now)
        if e.get("action") == REVERTED and isinstance(e.get("latencyMs"), int | float)
    ]
    totals: dict[str, Any] = {"incidents": Counter(), "byPerson": Counter(), "byTool": Counter()}
    for env in environments:
        for key in ("incidents", "byPerson", "byTool"):
            totals[key].update(env[key])
    return {
        "window": {"from": _iso(start), "to": _iso(now), "seconds": window_s},
        "generatedAt": _iso(now),
        "environments": environments,
        "totals": {
            **{key: dict(value) for key, value in totals.items()},
            "revertLatencyMs": _latency(latencies),
            "outOfSyncSeconds": round(sum(e["outOfSyncSeconds"] for e in environments), 1),
            "exceptions": sum(len(e["exceptions"]) for e in environments),
        },
    }


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g} ms"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{round(seconds, 1):g} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:g} days"


def _md(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows[1:]]
    return "\n".join(lines) + "\n"


def markdown(doc: dict[str, Any]) -> str:
    window = doc["window"]
    out = [
        "# Drift compliance report\n",
        f"Window: {window['from']} to {window['to']} ({_duration(window['seconds'])}). "
        f"Generated at {doc['generatedAt']}.\n",
    ]
    environments = doc["environments"]
    if not environments:
        return "\n".join([*out, "No Environments.\n"])
    short = [e for e in environments if not e["trailCoversWindow"]]
    for env in short:
        out.append(
            f"Note: the audit trail of {env['namespace']}/{env['environment']} reaches back "
            f"only to {env['trailSince']} (it keeps the newest {audit.LIMIT} records).\n"
        )
    rows = [["Environment", "Incidents", "Reverted", "Flagged", "Excepted", "Other",
             "Revert p50", "Revert p99", "Out of sync", "Trail since"]]  # fmt: skip
    for env in [*environments, {"namespace": "", "environment": "total", **doc["totals"]}]:
        counts, latency = env["incidents"], env["revertLatencyMs"]
        name = f"{env['namespace']}/{env['environment']}" if env["namespace"] else "**total**"
        rows.append([name, *(str(counts.get(k, 0)) for k in
                             ("total", REVERTED, FLAGGED, EXCEPTED, "other")),
                     _ms(latency["p50"]), _ms(latency["p99"]),
                     _duration(env["outOfSyncSeconds"]), env.get("trailSince") or "-"])  # fmt: skip
    out += ["## Incidents by Environment\n", _md(rows)]
    for title, key, column in (("person", "byPerson", "Person"), ("tool", "byTool", "Tool")):
        tally = sorted(doc["totals"][key].items(), key=lambda kv: (-kv[1], kv[0]))
        out.append(f"## Incidents by {title}\n")
        out.append(_md([[column, "Incidents"], *([k, str(v)] for k, v in tally)]) if tally
                   else "None.\n")  # fmt: skip
    granted = [[f"{e['namespace']}/{e['environment']}", x["name"], x.get("reason", "-"),
                x.get("createdBy", "-"), x.get("approvedBy", "-"), x.get("start", "-"),
                _duration(x.get("durationS")), x.get("ended") or x.get("phase") or "-"]
               for e in environments for x in e["exceptions"]]  # fmt: skip
    out.append("## Exceptions granted\n")
    header = ["Environment", "Exception", "Reason", "Author", "Approver", "Start", "Duration",
              "End"]  # fmt: skip
    out.append(_md([header, *granted]) if granted else "None.\n")
    return "\n".join(out)


def rows_csv(trails: list[Trail], *, window_s: float, now: datetime) -> str:
    """One row per incident and exception record in the window, oldest first."""
    start = now - timedelta(seconds=window_s)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    rows = []
    for trail in trails:
        for e in in_window(trail, start, now):
            action = str(e.get("action") or "")
            if action not in OBJECT_ACTIONS and not action.startswith("exception-"):
                continue
            rows.append({
                "time": e.get("time"), "namespace": trail.namespace,
                "environment": trail.environment, "kind": e.get("kind", ""),
                "objectNamespace": e.get("namespace", ""), "name": e.get("name", ""),
                "action": action, "paths": ";".join(e.get("paths") or []),
                "user": e.get("user") or e.get("createdBy") or "",
                "tool": e.get("changedBy") or "", "latencyMs": e.get("latencyMs", ""),
                "exception": e.get("exception", ""),
            })  # fmt: skip
    writer.writerows(sorted(rows, key=lambda r: str(r["time"])))
    return buffer.getvalue()


# -- reading the cluster -------------------------------------------------------------------


async def _trails(cluster: KubeCluster, name: str | None, namespace: str | None) -> list[Trail]:
    if name is not None:
        assert namespace is not None
        environments = [await get_environment(cluster, name, namespace)]
    else:
        environments, _ = await cluster.list_objects(ENVIRONMENTS, namespace=namespace)
    where = f"/namespaces/{quote(namespace)}" if namespace else ""
    path = f"/apis/{model.GROUP}/{model.VERSION}{where}/{exception.PLURAL}"
    listed = await cluster.connection.json("GET", path)
    trails = []
    for env in sorted(environments, key=lambda e: (e["metadata"]["namespace"],
                                                  e["metadata"]["name"])):  # fmt: skip
        ns, env_name = env["metadata"]["namespace"], env["metadata"]["name"]
        found = await cluster.get(audit.CONFIGMAPS, ns, audit.trail_name(env_name))
        text = ((found or {}).get("data") or {}).get(audit.KEY, "")
        own = [
            item
            for item in listed.get("items") or []
            if item["metadata"]["namespace"] == ns
            and ((item.get("spec") or {}).get("environmentRef") or {}).get("name") == env_name
        ]
        counts = (env.get("status") or {}).get("summary") or {}
        drifting = bool(counts.get("drifted") or counts.get("missing"))
        trails.append(Trail(ns, env_name, audit.parse(text), own, drifting))
    return trails


def report(
    name: str | None, *, namespace: str | None, all_namespaces: bool, since: str, output: str
) -> int:
    window_s = since_seconds(since)
    ns = None if all_namespaces else namespace or inspection.current_namespace()

    async def work(cluster: KubeCluster) -> int:
        trails = await _trails(cluster, name, ns)
        now = datetime.now(UTC)
        if output == "csv":
            sys.stdout.write(rows_csv(trails, window_s=window_s, now=now))
            return 0
        doc = build(trails, window_s=window_s, now=now)
        if output == "json":
            print(json.dumps(doc, indent=2))
        else:
            sys.stdout.write(markdown(doc))
        return 0

    return asyncio.run(session(work))
