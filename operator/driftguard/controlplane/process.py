"""One child process of the control plane: start with its log in a file, probe, kill, stop.

Children run in their own session, so a Ctrl-C at the terminal reaches only Python, which
then stops them in order (controller manager, API server, etcd). On Linux each child also
asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``), so a parent killed
with SIGKILL orphans nothing. That signal fires when the *thread* that spawned the child
exits: start control planes from a thread that outlives them (pytest and ``__main__`` use
the main thread). A killed child can be started again with the same command line; its log
file is appended to, so one file tells every run's story. Knows nothing about Kubernetes.
"""

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from driftguard.controlplane.errors import StartupError

_PR_SET_PDEATHSIG = 1
# dlopen(NULL): the process's own symbols, libc's prctl among them; None where there is none.
_PRCTL = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
_TAIL_LINES = 40


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with(parent_pid: int) -> Callable[[], None]:
    """Return a pre-exec hook that ties the child's life to ``parent_pid``."""

    def hook() -> None:
        if _PRCTL is not None and _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(126)
        # The parent may have died between fork and prctl: then nobody would signal us.
        if os.getppid() != parent_pid:
            os._exit(125)

    return hook


def tail(path: Path, lines: int = _TAIL_LINES) -> str:
    """Return the last ``lines`` lines of a log file, or a note when there is none."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """A named child process whose stdout and stderr go to ``log_path``."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The child's pid once started (it stays known after the child is reaped)."""
        return None if self._popen is None else self._popen.pid

    @property
    def running(self) -> bool:
        """True between ``start()`` and the child's exit (a kill, a crash or ``stop()``)."""
        return self._popen is not None and self._popen.poll() is None

    def start(self) -> None:
        """Spawn the child (again, if it has exited); raise ``StartupError`` if it cannot run."""
        if self.running:
            raise StartupError(f"{self.name} is already running (pid {self.pid})")
        # A previous run's handle is still open when that child died on its own.
        self._close_log()
        self._log = self.log_path.open("ab")
        try:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # preexec_fn is unsafe only if another thread holds a lock at fork time;
                # the hook calls nothing but prctl and getppid.
                preexec_fn=_die_with(os.getpid()),
            )
        except OSError as exc:
            self._close_log()
            raise StartupError(f"{self.name}: cannot run {self.argv[0]}: {exc}") from exc

    def exit_code(self) -> int | None:
        """The exit code if the child has exited, else None."""
        return None if self._popen is None else self._popen.poll()

    def failure(self, what: str) -> StartupError:
        """Build an error that says ``what`` went wrong and shows the log's tail."""
        return StartupError(
            f"{self.name} {what}; last lines of {self.log_path}:\n{tail(self.log_path)}"
        )

    def wait_ready(self, probe: Callable[[], bool], *, timeout: float) -> None:
        """Poll ``probe`` until true; fail fast if the child exits, or at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            code = self.exit_code()
            if code is not None:
                raise self.failure(f"exited with code {code} while starting")
            if probe():
                return
            if time.monotonic() > deadline:
                raise self.failure(f"not ready after {timeout:.0f}s")
            time.sleep(0.1)

    def kill(self, *, timeout: float = 10.0) -> None:
        """SIGKILL the child and reap it: no shutdown path runs, as in a crash. Idempotent."""
        popen = self._popen
        if popen is not None and popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                popen.kill()
            try:
                popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                # Only a child stuck in the kernel (uninterruptible sleep) outlives SIGKILL.
                raise self.failure(f"still alive {timeout:.0f}s after SIGKILL") from exc
        self._close_log()

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; always reap. Idempotent."""
        popen = self._popen
        if popen is not None and popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                popen.terminate()
            try:
                popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    popen.kill()
                popen.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
