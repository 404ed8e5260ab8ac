"""Counts one identity's API requests from the kube-apiserver audit log.

``apiserver_request_total`` on the server's /metrics has no user or user-agent label, so the
operator's own requests are counted from the audit log (one JSON line per request at level
Metadata; see driftguard.controlplane.flags). A request is counted once: at ResponseComplete,
except watches, which are counted when they start (ResponseStarted) since they may outlive the
window. Windows are judged by ``requestReceivedTimestamp`` (wall clock, UTC).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

WRITES = ("create", "update", "patch", "delete", "deletecollection")


@dataclass
class Window:
    """The requests received in [start, end) wall-clock seconds."""

    seconds: float
    verbs: Counter[str] = field(default_factory=Counter)
    writes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def write_count(self) -> int:
        return sum(self.verbs[v] for v in WRITES)

    @property
    def reads(self) -> int:
        return self.verbs["get"] + self.verbs["list"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 2),
            "verbs": dict(sorted(self.verbs.items())),
            "writes": self.write_count,
            "reads_per_s": round(self.reads / self.seconds, 3) if self.seconds else None,
            "write_requests": self.writes[:50],
        }


class AuditLog:
    """Reads the audit log incrementally, keeping only one user's requests."""

    def __init__(self, path: Path, username: str) -> None:
        self._path = path
        self._needle = f'"username":"{username}"'.encode()
        self._offset = 0
        self.events: list[dict[str, Any]] = []

    def refresh(self) -> None:
        with self._path.open("rb") as handle:
            if self._path.stat().st_size < self._offset:
                raise RuntimeError(f"{self._path} was rotated: its counts would miss requests")
            handle.seek(self._offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        self._offset += end
        for line in data[:end].splitlines():
            if self._needle in line:
                self.events.append(json.loads(line))

    def window(self, start: float, end: float) -> Window:
        self.refresh()
        result = Window(end - start)
        for event in self.events:
            received = _epoch(event.get("requestReceivedTimestamp", ""))
            if not start <= received < end:
                continue
            verb = str(event.get("verb"))
            stage = event.get("stage")
            if (verb == "watch") != (stage == "ResponseStarted"):
                continue
            if verb != "watch" and stage != "ResponseComplete":
                continue
            result.verbs[verb] += 1
            if verb in WRITES:
                result.writes.append(_summary(event))
        return result


def _epoch(stamp: str) -> float:
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return 0.0


def _summary(event: dict[str, Any]) -> dict[str, Any]:
    ref = event.get("objectRef") or {}
    return {
        "time": event.get("requestReceivedTimestamp"),
        "verb": event.get("verb"),
        "uri": event.get("requestURI"),
        "resource": ref.get("resource"),
        "subresource": ref.get("subresource"),
        "namespace": ref.get("namespace"),
        "name": ref.get("name"),
        "code": (event.get("responseStatus") or {}).get("code"),
        "userAgent": event.get("userAgent"),
    }
