"""The physical floor: the least a controller can do to undo a change, as its own process.

One label-selected watch on ConfigMaps; when an object's data differs from what it should be,
one server-side apply (force, field manager ``bench-floor``) of the whole manifest. No cache, no
diff engine, no status, no Events: whatever driftguard costs above this is driftguard's.

    python bench/floorloop.py --kubeconfig K --namespace NS --count 250

Applies the ``count`` objects first, prints ``ready`` on stdout, then runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import workload
from kubeapi import APPLY, ApiError, Kube, cm_path, gather_limited


async def _apply(kube: Kube, manifest: dict[str, Any]) -> None:
    meta = manifest["metadata"]
    await kube.request(
        "PATCH",
        cm_path(meta["namespace"], meta["name"]),
        query={"fieldManager": workload.FLOOR_MANAGER, "force": "true"},
        body=manifest,
        content_type=APPLY,
    )


async def _loop(kube: Kube, namespace: str, count: int) -> None:
    desired = {f"floor-{i:03d}": workload.floor_configmap(namespace, i) for i in range(count)}
    await gather_limited(16, [_apply(kube, m) for m in desired.values()])
    query = {"labelSelector": workload.FLOOR_SELECTOR}
    listing = await kube.request("GET", cm_path(namespace), query=query)
    version = listing["metadata"]["resourceVersion"]
    print("ready", flush=True)
    while True:
        try:
            async for _, kind, obj in kube.watch(
                cm_path(namespace), query={**query, "resourceVersion": version}
            ):
                version = obj["metadata"]["resourceVersion"]
                if kind not in ("ADDED", "MODIFIED"):
                    continue  # a BOOKMARK carries no name, only the version
                manifest = desired.get(obj["metadata"]["name"])
                if manifest is None:
                    continue
                if obj.get("data") != manifest["data"]:
                    await _apply(kube, manifest)
        except ApiError as exc:
            if exc.status == 410:
                listing = await kube.request("GET", cm_path(namespace), query=query)
                version = listing["metadata"]["resourceVersion"]


async def _main(args: argparse.Namespace) -> None:
    kube = await Kube.connect(Path(args.kubeconfig), user_agent="bench-floor/1")
    try:
        await _loop(kube, args.namespace, args.count)
    finally:
        await kube.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--count", type=int, required=True)
    asyncio.run(_main(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
