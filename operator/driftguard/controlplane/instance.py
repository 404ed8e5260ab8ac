"""``ControlPlane``: etcd + kube-apiserver (+ kube-controller-manager) in a temporary directory.

Owns the life cycle: certificates, ports, processes, kubeconfigs, and their removal. Works as
a context manager; the reaper stops it at exit or on SIGTERM / SIGHUP if its owner did not.
Each component can be SIGKILLed and started again with its first command line
(``kill``, ``start_component``, ``restart``), for tests of how clients live through an outage.
It does not build binaries (``make controlplane``) and knows nothing about driftguard.
"""

import http.client
import os
import re
import shutil
import ssl
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from driftguard.controlplane import binaries as binaries_module
from driftguard.controlplane import flags, kubeconfig, pki, reaper, tokens
from driftguard.controlplane.errors import ControlPlaneError
from driftguard.controlplane.process import ManagedProcess, free_port

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")
_PREFIX = "driftguard-cp-"
_ORPHAN = re.compile(rf"^{_PREFIX}(\d+)-")


def _write_private(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_orphans() -> None:
    """Remove temp dirs left by a parent that was SIGKILLed (its children died with it)."""
    for entry in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*"):
        match = _ORPHAN.match(entry.name)
        if match and not _is_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


def _probe(url: str, context: ssl.SSLContext | None, accept: Callable[[bytes], bool]) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as response:
            return response.status == 200 and accept(response.read())
    except (OSError, http.client.HTTPException):
        # Connection refused, TLS not up yet, 403 before RBAC bootstraps, 500 while not ready.
        return False


def _write_files(layout: flags.Layout) -> tuple[pki.CertificateAuthority, pki.KeyPair]:
    """A new CA, serving and admin pairs, ServiceAccount keys and the audit policy."""
    ca = pki.CertificateAuthority.create()
    serving = ca.issue_server(
        common_name="kube-apiserver",
        dns_names=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
        ips=["127.0.0.1", "10.0.0.1"],
    )
    admin = ca.issue_client(user="driftguard-admin", groups=["system:masters"])
    sa_private, sa_public = pki.service_account_keys()
    for path, data in [
        (layout.ca_cert, ca.pair.cert_pem),
        (layout.ca_key, ca.pair.key_pem),
        (layout.serving_cert, serving.cert_pem),
        (layout.serving_key, serving.key_pem),
        (layout.admin_cert, admin.cert_pem),
        (layout.admin_key, admin.key_pem),
        (layout.sa_key, sa_private),
        (layout.sa_pub, sa_public),
        (layout.audit_policy, flags.AUDIT_POLICY.encode()),
    ]:
        _write_private(path, data)
    return ca, admin


def _admin_tls(layout: flags.Layout | None) -> ssl.SSLContext:
    assert layout is not None
    context = ssl.create_default_context(cafile=str(layout.ca_cert))
    context.load_cert_chain(str(layout.admin_cert), str(layout.admin_key))
    return context


class ControlPlane:
    """A local Kubernetes control plane; ``start()``/``stop()`` or ``with ControlPlane():``."""

    def __init__(
        self,
        *,
        controller_manager: bool = True,
        feature_gates: Mapping[str, bool] | None = None,
        apiserver_flags: Iterable[str] = (),
        startup_timeout: float = 60.0,
        binaries: binaries_module.Binaries | None = None,
    ) -> None:
        self._with_controller_manager = controller_manager
        self._feature_gates = dict(feature_gates or {})
        # Appended last, so a test can override a default (e.g. --max-requests-inflight=20).
        self._apiserver_flags = list(apiserver_flags)
        self._timeout = startup_timeout
        self._binaries = binaries
        self._layout: flags.Layout | None = None
        self._ca: pki.CertificateAuthority | None = None
        self._admin: pki.KeyPair | None = None
        self._server = ""
        self._processes: list[ManagedProcess] = []
        # Each component's start-up probe, kept to judge it ready again after a restart.
        self._probes: dict[str, Callable[[], bool]] = {}
        # Components killed on purpose: check() must not report them as crashed.
        self._killed: set[str] = set()
        self._minted = 0
        self.startup_seconds = 0.0

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def directory(self) -> Path:
        """The temporary directory holding certificates, data, logs and kubeconfigs."""
        return self._started().root

    @property
    def kubeconfig(self) -> Path:
        """An admin kubeconfig (client certificate in group ``system:masters``)."""
        return self._started().admin_kubeconfig

    @property
    def audit_log(self) -> Path:
        """The API server's audit log: one JSON line per request at level Metadata."""
        return self._started().audit_log

    @property
    def server(self) -> str:
        """The API server's URL, ``https://127.0.0.1:<port>``."""
        self._started()
        return self._server

    @property
    def pids(self) -> dict[str, int]:
        """The pid of each component started so far, by name."""
        return {p.name: p.pid for p in self._processes if p.pid is not None}

    def start(self) -> None:
        """Start every component and wait until each is ready; on failure stop and raise."""
        if self._layout is not None:
            raise ControlPlaneError("a ControlPlane starts only once: create a new one")
        binaries = self._binaries or binaries_module.locate()
        began = time.monotonic()
        _sweep_orphans()
        self._layout = flags.Layout(Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")))
        reaper.register(self)
        try:
            self._ca, self._admin = _write_files(self._layout)
            etcd_url = self._start_etcd(binaries)
            self._start_apiserver(binaries, etcd_url)
            if self._with_controller_manager:
                self._start_controller_manager(binaries)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop the components in reverse order and remove the temporary directory."""
        reaper.unregister(self)
        self._server = ""
        while self._processes:
            self._processes.pop().stop()
        if self._layout is not None:
            shutil.rmtree(self._layout.root, ignore_errors=True)

    def check(self) -> None:
        """Raise ``StartupError`` with its log's tail if a component has exited unbidden."""
        for process in self._processes:
            code = process.exit_code()
            if code is not None and process.name not in self._killed:
                raise process.failure(f"exited with code {code}")

    def kill(self, name: str) -> None:
        """SIGKILL one component (see ``COMPONENTS``) and return once it has exited.

        Nothing else changes: its ports, certificates, log and etcd's data directory stay,
        and the other components keep running, seeing what a crash looks like from outside.
        """
        process = self._component(name)
        # Marked first: a check() from another thread must never call this kill a crash.
        self._killed.add(name)
        process.kill()

    def start_component(self, name: str) -> None:
        """Start a killed component again with the same argv; return when the plane is ready.

        The same command line means the same ports, certificates and ``--data-dir``: etcd
        comes back with its data, and clients (kubeconfigs, the API server's etcd client)
        reconnect without being told anything. Ready means the component's start-up probe
        passes, then every other running component's, because the one started may be what
        they depend on: the API server's /readyz fails until etcd answers again. The
        controller manager's probe (its ServiceAccount exists) already holds on a restart,
        so for it ready says only that the process runs and the API server answers.
        A port taken by someone else while the component was down fails the start, with the
        component's log. Start it from a thread that outlives it (see ``process``).
        """
        process = self._component(name)
        if process.running:
            raise ControlPlaneError(f"{name} is running: kill() it before starting it again")
        process.start()
        self._killed.discard(name)
        process.wait_ready(self._probes[name], timeout=self._timeout)
        for other in self._processes:
            if other is not process and other.running:
                other.wait_ready(self._probes[other.name], timeout=self._timeout)

    def restart(self, name: str, *, down_seconds: float = 0.0) -> None:
        """``kill(name)``, stay down ``down_seconds``, then ``start_component(name)``."""
        self.kill(name)
        # A deliberate outage of known length, the point of the call: not a wait for a state.
        time.sleep(down_seconds)
        self.start_component(name)

    def user_kubeconfig(self, user: str, groups: Iterable[str] = ()) -> Path:
        """Write a kubeconfig for a client-certificate identity whose rights come from RBAC."""
        ca = self._authority()
        client = ca.issue_client(user=user, groups=tuple(groups))
        text = kubeconfig.render(
            server=self.server, ca_pem=ca.pair.cert_pem, user=user, client=client
        )
        return self._write_kubeconfig(user, text)

    def serviceaccount_kubeconfig(
        self, namespace: str, name: str, *, expiration_seconds: int = 86400
    ) -> Path:
        """Write a kubeconfig holding a TokenRequest token of an existing ServiceAccount."""
        token = tokens.request(
            self.kubeconfig, namespace, name, expiration_seconds=expiration_seconds
        )
        user = f"system:serviceaccount:{namespace}:{name}"
        ca_pem = self._authority().pair.cert_pem
        text = kubeconfig.render(server=self.server, ca_pem=ca_pem, user=user, token=token)
        return self._write_kubeconfig(user, text)

    def _component(self, name: str) -> ManagedProcess:
        self._started()
        for process in self._processes:
            if process.name == name:
                return process
        if name in COMPONENTS:
            raise ControlPlaneError(f"{name} is not part of this control plane")
        raise ControlPlaneError(f"unknown component {name!r}: one of {', '.join(COMPONENTS)}")

    def _started(self) -> flags.Layout:
        if self._layout is None or not self._server:
            raise ControlPlaneError("the control plane is not running")
        return self._layout

    def _authority(self) -> pki.CertificateAuthority:
        self._started()
        assert self._ca is not None  # set before the API server starts
        return self._ca

    def _write_kubeconfig(self, user: str, text: str) -> Path:
        self._minted += 1
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", user)
        path = self._started().kubeconfigs / f"{self._minted:03d}-{slug}.kubeconfig"
        return _write_private(path, text.encode())

    def _launch(self, name: str, argv: list[str], ready: Callable[[], bool]) -> None:
        """Start a component and wait until ``ready``; both are kept for ``start_component``."""
        assert self._layout is not None
        process = ManagedProcess(name, argv, self._layout.log(name))
        self._processes.append(process)
        self._probes[name] = ready
        process.start()
        process.wait_ready(ready, timeout=self._timeout)

    def _start_etcd(self, binaries: binaries_module.Binaries) -> str:
        assert self._layout is not None
        client_port, peer_port = free_port(), free_port()
        argv = flags.etcd(binaries, self._layout, client_port=client_port, peer_port=peer_port)
        url = f"http://127.0.0.1:{client_port}"
        self._launch(
            "etcd",
            argv,
            lambda: _probe(f"{url}/health", None, lambda body: b'"health":"true"' in body),
        )
        return url

    def _start_apiserver(self, binaries: binaries_module.Binaries, etcd_url: str) -> None:
        assert self._layout is not None
        port = free_port()
        argv = flags.apiserver(
            binaries, self._layout, etcd_url=etcd_url, port=port, feature_gates=self._feature_gates
        )
        argv += self._apiserver_flags
        server, context = f"https://127.0.0.1:{port}", _admin_tls(self._layout)
        self._launch(
            "kube-apiserver",
            argv,
            lambda: _probe(f"{server}/readyz", context, lambda body: body == b"ok"),
        )
        self._server = server
        ca_pem = self._authority().pair.cert_pem
        text = kubeconfig.render(server=server, ca_pem=ca_pem, user="admin", client=self._admin)
        _write_private(self._layout.admin_kubeconfig, text.encode())

    def _start_controller_manager(self, binaries: binaries_module.Binaries) -> None:
        layout = self._layout
        assert layout is not None
        ca = self._authority()
        # system:masters because all controllers share this identity (see flags.controller_manager).
        identity = ca.issue_client(user="system:kube-controller-manager", groups=["system:masters"])
        text = kubeconfig.render(
            server=self._server, ca_pem=ca.pair.cert_pem, user="kcm", client=identity
        )
        _write_private(layout.controller_manager_kubeconfig, text.encode())
        # Ready when its controllers run: the ServiceAccount controller made default/default.
        url = f"{self._server}/api/v1/namespaces/default/serviceaccounts/default"
        context = _admin_tls(self._layout)
        self._launch(
            "kube-controller-manager",
            flags.controller_manager(binaries, layout),
            lambda: _probe(url, context, lambda _: True),
        )
