"""Child processes of the benchmark (the operator, the floor loop) and what /proc says of them.

Each child runs in its own session and gets SIGKILL if the benchmark dies (PR_SET_PDEATHSIG),
so an interrupted run leaves nothing behind. Stopping is SIGTERM, then SIGKILL after a grace
period. CPU is utime + stime of /proc/<pid>/stat; memory is VmRSS of /proc/<pid>/status.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_PRCTL = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent(parent: int) -> Callable[[], None]:
    def hook() -> None:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(125)

    return hook


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (threads included); None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # Fields 14 and 15 of stat(5), counted after the ")" that ends the command name.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def cpu_snapshot(pids: dict[str, int]) -> dict[str, tuple[int, float]]:
    """CPU seconds so far of each named process still alive: (pid, seconds)."""
    snapshot = {}
    for name, pid in pids.items():
        seconds = cpu_seconds(pid)
        if seconds is not None:
            snapshot[name] = (pid, seconds)
    return snapshot


def cpu_delta(
    before: dict[str, tuple[int, float]], after: dict[str, tuple[int, float]]
) -> dict[str, float]:
    """CPU spent between two snapshots; a process started in between counts from zero."""
    spent = {}
    for name, (pid, seconds) in after.items():
        previous = before.get(name)
        start = previous[1] if previous is not None and previous[0] == pid else 0.0
        spent[name] = round(seconds - start, 2)
    return spent


def cpu_ns(pid: int) -> int | None:
    """Nanoseconds on a CPU of every live thread of a process (/proc/<pid>/task/*/schedstat).

    The scheduler's own clock, not 10 ms ticks: an idle operator's few milliseconds a
    minute are measured, not rounded to 0 or 0.01 s. Threads that already exited are not
    counted (the operator's threads live as long as it does).
    """
    total, found = 0, False
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[0])
            found = True
        except (OSError, ValueError, IndexError):
            continue
    return total if found else None


class Child:
    """One child process with its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: dict[str, str],
        *,
        capture_stdout: bool = False,
    ) -> None:
        self.name = name
        self.log = log
        self.started_at = time.monotonic()
        with log.open("ab") as sink:
            self.popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                # Only for a child that prints a line or two (the floor's "ready"): a pipe
                # nobody reads would block a chatty child.
                stdout=subprocess.PIPE if capture_stdout else sink,
                stderr=sink,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()),
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (threads included)."""
        return cpu_seconds(self.pid) or 0.0

    def cpu_precise(self) -> float:
        """CPU seconds of the live threads, at the scheduler's resolution (``cpu_ns``)."""
        return (cpu_ns(self.pid) or 0) / 1e9

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, *, grace: float = 15.0) -> float:
        """SIGTERM, SIGKILL after ``grace`` s; return how long the child took to exit."""
        began = time.monotonic()
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.terminate()
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        return time.monotonic() - began


class Profiler:
    """Optional py-spy sampling of the operator, one raw (collapsed-stack) file per phase.

    py-spy is not a project dependency (the lock stays as it is): pass the path of one
    installed elsewhere. ``--nonblocking`` samples without pausing the target.
    """

    def __init__(self, py_spy: Path, directory: Path) -> None:
        self._py_spy = py_spy
        self._directory = directory
        self._running: list[subprocess.Popen[bytes]] = []
        self.files: list[Path] = []

    def start(self, pid: int, label: str) -> None:
        output = self._directory / f"profile-{label}.txt"
        argv = [str(self._py_spy), "record", "--pid", str(pid), "--rate", "250"]
        argv += ["--format", "raw", "--nonblocking", "--output", str(output)]
        self._running.append(
            subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        )
        self.files.append(output)

    def stop(self) -> None:
        """Ends every recording (SIGINT makes py-spy write its file)."""
        while self._running:
            process = self._running.pop()
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
