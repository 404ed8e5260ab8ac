"""The board with 500 Environments: first paint and how fast a change reaches the page.

A control plane of its own, no operator: the Environments (10 namespaces, 50 each, every
tenth drifted) get their status written here, as the operator would write it, so the figures
are the board's alone (watch, server-sent event, the row swapped in the page); the e2e test
holds the whole path from `kubectl patch` through the operator to the page to 2 s. One
`driftguard board -A` as the admin, headless Chromium from the Debian archive.

- first paint: the grid loaded afresh (median of several loads): the server's answer, the
  browser's first contentful paint and its load event, and the page's size;
- update: a status written (merge patch of the status subresource) at t0; the page's
  MutationObserver notes when that row is replaced; latency = noted - t0, same machine clock.

    .venv/bin/python bench/board.py    # figures in bench/results/board.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from figures import percentile
from kubeapi import MERGE, Kube, env_path, gather_limited
from run import install_crds

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from browser import Board, browser_paths, chrome  # noqa: E402

from driftguard.cli.board.grid import row_id  # noqa: E402
from driftguard.controlplane import ControlPlane  # noqa: E402

WATCH_ROW = """
window.__changed = {};
new MutationObserver(function (records) {
  var at = performance.timeOrigin + performance.now();
  records.forEach(function (r) {
    r.addedNodes.forEach(function (n) { if (n.id) { window.__changed[n.id] = at; } });
  });
}).observe(document.getElementById('grid'), {childList: true, subtree: true});
"""
PAINT = """
var nav = performance.getEntriesByType('navigation')[0];
var fcp = performance.getEntriesByType('paint').filter(p => p.name === 'first-contentful-paint')[0];
return {responseEnd: nav.responseEnd, firstContentfulPaint: fcp ? fcp.startTime : null,
        domContentLoaded: nav.domContentLoadedEventEnd, load: nav.loadEventEnd,
        bytes: nav.encodedBodySize, rows: document.querySelectorAll('tr.row').length};
"""


def status(drifted: bool, revision: int) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    in_sync = "False" if drifted else "True"
    message = "1 of 3 objects drifted: ConfigMap/x/db /data/DB_VERSION" if drifted else ""
    return {
        "status": {
            "revision": revision,
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Applied", "message": "",
                 "lastTransitionTime": now},
                {"type": "InSync", "status": in_sync, "reason": "Drifted" if drifted else "InSync",
                 "message": message, "lastTransitionTime": now},
            ],
            "summary": {"managed": 3, "inSync": 2 if drifted else 3, "drifted": int(drifted)},
            **({"lastDrift": {"time": now, "object": "ConfigMap/x/db",
                              "paths": ["/data/DB_VERSION"], "changedBy": "kubectl-patch"}}
               if drifted else {}),
        }
    }  # fmt: skip


def environment(namespace: str, name: str, index: int) -> dict[str, Any]:
    blueprint = {"blueprintRef": {"name": f"app-{index % 5}"}} if index % 2 else {}
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db"},
                "data": {"DB_VERSION": "5.7"}}  # fmt: skip
    spec = {"mode": "Observe", "resources": [] if blueprint else [manifest], **blueprint}
    return {
        "apiVersion": "driftguard.io/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


async def populate(kube: Kube, count: int, namespaces: int) -> list[tuple[str, str]]:
    names = [(f"team-{i % namespaces}", f"env-{i:03d}") for i in range(count)]
    for n in range(namespaces):
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"team-{n}"}}
        await kube.request("POST", "/api/v1/namespaces", body=body)
    await gather_limited(16, [kube.request("POST", env_path(ns), body=environment(ns, name, i))
                              for i, (ns, name) in enumerate(names)])  # fmt: skip
    await gather_limited(16, [write_status(kube, ns, name, drifted=i % 10 == 0, revision=1)
                              for i, (ns, name) in enumerate(names)])  # fmt: skip
    return names


async def write_status(kube: Kube, ns: str, name: str, *, drifted: bool, revision: int) -> None:
    path = env_path(ns, name) + "/status"
    await kube.request("PATCH", path, body=status(drifted, revision), content_type=MERGE)


def _median(values: list[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return round(statistics.median(found), 1) if found else None


def first_paint(browser: Any, url: str, loads: int) -> dict[str, Any]:
    found = []
    for _ in range(loads):
        browser.get(url)
        found.append(browser.execute_script(PAINT))
    keys = ("responseEnd", "firstContentfulPaint", "domContentLoaded", "load")
    return {
        # Headless Chromium may report no paint entry for a load: the median of those it does.
        **{f"{k}Ms": _median([f[k] for f in found]) for k in keys},
        "htmlBytes": found[-1]["bytes"],
        "rows": found[-1]["rows"],
        "loads": loads,
    }


async def updates(
    kube: Kube, browser: Any, names: list[tuple[str, str]], rounds: int
) -> dict[str, Any]:
    browser.execute_script(WATCH_ROW)
    latencies = []
    for i in range(rounds):
        ns, name = names[(i * 37) % len(names)]
        target = row_id(ns, name)
        sent = time.time() * 1000
        await write_status(kube, ns, name, drifted=i % 2 == 0, revision=2 + i)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen = browser.execute_script("return window.__changed[arguments[0]] || null;", target)
            if seen:
                latencies.append(seen - sent)
                break
            await asyncio.sleep(0.005)
        else:
            raise RuntimeError(f"the row of {ns}/{name} did not change within 10 s")
    return {
        "rounds": rounds,
        "p50Ms": round(percentile(latencies, 50), 1),
        "p99Ms": round(percentile(latencies, 99), 1),
        "maxMs": round(max(latencies), 1),
    }


async def measure(plane: ControlPlane, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    found = browser_paths()
    if found is None:
        raise SystemExit("chromium and chromedriver missing: run hack/install-browser.sh")
    install_crds(plane.kubeconfig)
    kube = await Kube.connect(plane.kubeconfig, user_agent="bench-board")
    started = time.monotonic()
    names = await populate(kube, args.environments, args.namespaces)
    populated = time.monotonic() - started
    board = Board(plane.kubeconfig, ["-A"], scratch / "board.log").start()
    browser = chrome(*found, width=1400, height=900)
    try:
        paint = first_paint(browser, board.url, args.loads)
        assert paint["rows"] == args.environments, paint
        update = await updates(kube, browser, names, args.rounds)
    finally:
        browser.quit()
        board.stop()
        await kube.close()
    return {
        "environments": args.environments,
        "namespaces": args.namespaces,
        "populateSeconds": round(populated, 1),
        "firstPaint": paint,
        "update": update,
        "machine": "2 cores, headless Chromium from the Debian archive, loopback",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--environments", type=int, default=500)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "board.json")
    args = parser.parse_args()
    with ControlPlane() as plane, tempfile.TemporaryDirectory() as scratch:
        figures = asyncio.run(measure(plane, args, Path(scratch)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
