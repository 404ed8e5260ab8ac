"""A kubelet's part, for the image tests: one container of a rendered Pod template, run as a
Pod runs it, with runc on the image's own root filesystem.

What a kubelet (through containerd and runc) would do, this does:
- the ServiceAccount admission's kube-api-access volume at
  /var/run/secrets/kubernetes.io/serviceaccount (unless automountServiceAccountToken is
  false): a TokenRequest token of the Pod's ServiceAccount, ca.crt from the namespace's
  kube-root-ca.crt ConfigMap, the namespace;
- KUBERNETES_SERVICE_HOST/PORT pointing at the API server, and HOSTNAME;
- the Pod's volumes (emptyDir, secret, configMap, projected) at the container's mounts,
  read from the API server as the kubelet reads them; env with fieldRef, secretKeyRef and
  configMapKeyRef resolved;
- the securityContext: user and group, runAsNonRoot checked, read-only root filesystem,
  no_new_privs, capabilities; the memory limit; the image's entrypoint and the
  container's args as Kubernetes combines them;
- its probes, answered by an HTTP GET (or a TCP connect) as the kubelet's prober sends it.

What it does not: a network namespace of its own (the container shares the host's, as with
hostNetwork: true, so the caller keeps the ports free), the RuntimeDefault seccomp profile,
cgroup limits other than memory, and image pulls (the image is in buildah's store).
"""

import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import Kubectl, wait_for

SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# containerd's default capabilities, before the container's drop and add.
DEFAULT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]  # fmt: skip
# What runc masks and makes read-only in /proc and /sys, as containerd asks it to.
MASKED = ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
          "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"]  # fmt: skip
READONLY = [
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
]
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (512Mi, 1G, 1048576) in bytes."""
    for suffix, factor in UNITS.items():
        if quantity.endswith(suffix):
            return int(float(quantity.removesuffix(suffix)) * factor)
    return int(quantity)


@dataclass
class Pod:
    """Where the Pod lives: its name and namespace, its cluster, and the host's directories."""

    name: str
    namespace: str
    admin: Kubectl
    api_host: str
    api_port: int
    work: Path
    template: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.template["spec"]
        return spec

    def field_value(self, path: str) -> str:
        """A downward-API fieldRef, as the kubelet fills it in."""
        simple = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": socket.gethostname(),
            "spec.serviceAccountName": self.service_account,
            "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
        }
        if path in simple:
            return simple[path]
        if path.startswith("metadata.labels['"):
            return self.labels[path.removeprefix("metadata.labels['").removesuffix("']")]
        raise AssertionError(f"this test's kubelet does not know fieldRef {path}")

    @property
    def service_account(self) -> str:
        return str(self.spec.get("serviceAccountName") or "default")

    def object_data(self, kind: str, name: str) -> dict[str, bytes]:
        """A Secret's or ConfigMap's data, read from the API server as the kubelet does."""
        found = self.admin.json("get", kind, name, "-n", self.namespace)
        if kind == "secret":
            return {k: base64.b64decode(v) for k, v in found.get("data", {}).items()}
        data = {k: v.encode() for k, v in found.get("data", {}).items()}
        data.update({k: base64.b64decode(v) for k, v in found.get("binaryData", {}).items()})
        return data

    def token(self, seconds: int) -> bytes:
        """A TokenRequest token of the Pod's ServiceAccount (the kubelet asks for one per Pod)."""
        argv = ("create", "token", self.service_account, "-n", self.namespace)
        return self.admin(*argv, f"--duration={seconds}s").stdout.strip().encode()

    def volumes(self) -> list[dict[str, Any]]:
        """The Pod's volumes, with the ServiceAccount admission's kube-api-access one added."""
        volumes: list[dict[str, Any]] = list(self.spec.get("volumes", []))
        account = self.admin.json(
            "get", "serviceaccount", self.service_account, "-n", self.namespace
        )
        automount = self.spec.get("automountServiceAccountToken")
        if automount is None:
            automount = account.get("automountServiceAccountToken", True)
        if automount:
            volumes.append(KUBE_API_ACCESS)
        return volumes


# What the ServiceAccount admission plugin adds to every Pod that does not opt out.
KUBE_API_ACCESS: dict[str, Any] = {
    "name": "kube-api-access",
    "projected": {
        "defaultMode": 0o644,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ],
    },
}  # fmt: skip


def _write_files(directory: Path, files: dict[str, bytes], mode: int, gid: int | None) -> None:
    for relative, content in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
        if gid is not None:
            os.chown(path, 0, gid)


def _pick(data: dict[str, bytes], items: list[dict[str, Any]] | None) -> dict[str, bytes]:
    if not items:
        return dict(data)
    return {item["path"]: data[item["key"]] for item in items}


def materialize(pod: Pod, volume: dict[str, Any], fs_group: int | None) -> dict[str, Any]:
    """A volume on the host, and the OCI mount source for it."""
    host = pod.work / "volumes" / volume["name"]
    host.mkdir(parents=True)
    if "emptyDir" in volume:
        if volume["emptyDir"].get("medium") == "Memory":
            return {"type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}
        host.chmod(0o777)  # the kubelet's mode for an emptyDir
        return {"type": "bind", "source": str(host)}
    files: dict[str, bytes] = {}
    mode = 0o644
    if "secret" in volume or "configMap" in volume:
        kind = "secret" if "secret" in volume else "configmap"
        source = volume.get("secret") or volume["configMap"]
        name = source.get("secretName") or source.get("name")
        files = _pick(pod.object_data(kind, name), source.get("items"))
        mode = source.get("defaultMode", mode)
    elif "projected" in volume:
        mode = volume["projected"].get("defaultMode", mode)
        for part in volume["projected"]["sources"]:
            if "serviceAccountToken" in part:
                token = part["serviceAccountToken"]
                files[token["path"]] = pod.token(token.get("expirationSeconds", 3600))
            elif "secret" in part or "configMap" in part:
                kind = "secret" if "secret" in part else "configmap"
                source = part.get("secret") or part["configMap"]
                files |= _pick(pod.object_data(kind, source["name"]), source.get("items"))
            elif "downwardAPI" in part:
                for item in part["downwardAPI"]["items"]:
                    files[item["path"]] = pod.field_value(item["fieldRef"]["fieldPath"]).encode()
            else:
                raise AssertionError(f"this test's kubelet does not know projected source {part}")
    else:
        raise AssertionError(f"this test's kubelet does not know volume {volume}")
    _write_files(host, files, mode, fs_group)
    return {"type": "bind", "source": str(host)}


def container_env(pod: Pod, container: dict[str, Any], image_env: list[str]) -> list[str]:
    """The image's Env, the service variables, then the container's env (which wins)."""
    env = dict(entry.split("=", 1) for entry in image_env)
    env |= {
        "HOSTNAME": pod.name,
        "KUBERNETES_SERVICE_HOST": pod.api_host,
        "KUBERNETES_SERVICE_PORT": str(pod.api_port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(pod.api_port),
        "KUBERNETES_PORT": f"tcp://{pod.api_host}:{pod.api_port}",
    }
    for item in container.get("env", []):
        source = item.get("valueFrom")
        if source is None:
            env[item["name"]] = item.get("value", "")
        elif "fieldRef" in source:
            env[item["name"]] = pod.field_value(source["fieldRef"]["fieldPath"])
        elif "secretKeyRef" in source or "configMapKeyRef" in source:
            kind = "secret" if "secretKeyRef" in source else "configmap"
            ref = source.get("secretKeyRef") or source["configMapKeyRef"]
            env[item["name"]] = pod.object_data(kind, ref["name"])[ref["key"]].decode()
        else:
            raise AssertionError(f"this test's kubelet does not know env source {source}")
    return [f"{name}={value}" for name, value in env.items()]


def security(pod: Pod, container: dict[str, Any], image_user: str) -> dict[str, Any]:
    """The Pod's and the container's securityContext merged, the container's winning."""
    merged = {**pod.spec.get("securityContext", {}), **container.get("securityContext", {})}
    if "runAsUser" not in merged:
        user, _, group = image_user.partition(":")
        assert user.isdigit(), f"the image's USER {image_user!r} is not numeric"
        merged["runAsUser"] = int(user)
        merged.setdefault("runAsGroup", int(group) if group.isdigit() else 0)
    if merged.get("runAsNonRoot"):
        # The kubelet refuses to start such a container (CreateContainerConfigError).
        assert merged["runAsUser"] != 0, "runAsNonRoot with UID 0"
    return merged


def oci_config(
    pod: Pod, container: dict[str, Any], image: dict[str, Any], rootfs: Path
) -> dict[str, Any]:
    """runc's config.json for the container, from the Pod template and the image's config."""
    context = security(pod, container, image.get("User", "0"))
    pod_context = pod.spec.get("securityContext", {})
    fs_group = pod_context.get("fsGroup")
    groups = [
        *pod_context.get("supplementalGroups", []),
        *([fs_group] if fs_group is not None else []),
    ]
    if "command" in container:
        argv = [*container["command"], *container.get("args", [])]
    else:
        argv = [*image.get("Entrypoint", []), *container.get("args", image.get("Cmd") or [])]
    capabilities = set(DEFAULT_CAPABILITIES)
    dropped = {f"CAP_{c}" for c in context.get("capabilities", {}).get("drop", [])}
    capabilities = set() if "CAP_ALL" in dropped else capabilities - dropped
    capabilities |= {f"CAP_{c}" for c in context.get("capabilities", {}).get("add", [])}
    caps = sorted(capabilities)
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
    ]  # fmt: skip
    # The files the kubelet writes for every Pod, and the termination message file.
    etc = pod.work / "etc"
    etc.mkdir()
    (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.0.1\t{pod.name}\n")
    (etc / "hostname").write_text(f"{pod.name}\n")
    (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions ndots:5\n")
    (etc / "termination-log").touch(mode=0o666)
    for name, target in [("hosts", "/etc/hosts"), ("hostname", "/etc/hostname"),
                         ("resolv.conf", "/etc/resolv.conf"), ("termination-log", "/dev/termination-log")]:  # fmt: skip
        mounts.append(
            {
                "destination": target,
                "type": "bind",
                "source": str(etc / name),
                "options": ["rbind", "rw"],
            }
        )
    by_name = {volume["name"]: volume for volume in pod.volumes()}
    wanted = list(container.get("volumeMounts", []))
    if "kube-api-access" in by_name:
        wanted.append(
            {"name": "kube-api-access", "mountPath": SERVICEACCOUNT_DIR, "readOnly": True}
        )
    for mount in wanted:
        source = materialize(pod, by_name[mount["name"]], fs_group)
        options = source.pop("options", ["rbind"]) + (["ro"] if mount.get("readOnly") else ["rw"])
        mounts.append({"destination": mount["mountPath"], **source, "options": options})
    linux: dict[str, Any] = {
        "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
        "maskedPaths": MASKED,
        "readonlyPaths": READONLY,
    }
    limit = container.get("resources", {}).get("limits", {}).get("memory")
    if limit:
        linux["resources"] = {"memory": {"limit": memory_bytes(limit)}}
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {
                "uid": context["runAsUser"],
                "gid": context.get("runAsGroup", 0),
                "additionalGids": groups,
            },
            "args": argv,
            "env": container_env(pod, container, image.get("Env", [])),
            "cwd": container.get("workingDir") or image.get("WorkingDir") or "/",
            "capabilities": {kind: caps for kind in ("bounding", "effective", "permitted")},
            "noNewPrivileges": context.get("allowPrivilegeEscalation") is False,
        },
        "root": {"path": str(rootfs), "readonly": bool(context.get("readOnlyRootFilesystem"))},
        "hostname": pod.name,
        "mounts": mounts,
        "linux": linux,
    }


# runc's state, one directory per test process: a process killed outright (SIGKILL) cannot
# stop its containers, so the next run stops those whose process is gone.
STATE_ROOT = Path("/run/driftguard-image-tests")


def runc_for_this_process() -> list[str]:
    """runc with this process' own state directory, after sweeping those of dead processes."""
    STATE_ROOT.mkdir(exist_ok=True)
    for state in STATE_ROOT.iterdir():
        if state.name.isdigit() and not Path(f"/proc/{state.name}").exists():
            runc = ["runc", "--root", str(state)]
            listed = subprocess.run(
                [*runc, "list", "-q"], capture_output=True, text=True, check=False
            )
            for ident in listed.stdout.split():
                subprocess.run(
                    [*runc, "delete", "--force", ident], capture_output=True, check=False
                )
            shutil.rmtree(state, ignore_errors=True)
    return ["runc", "--root", str(STATE_ROOT / str(os.getpid()))]


class Container:
    """A container started by runc from a bundle: its process, state, exec and probes."""

    def __init__(self, runc: list[str], ident: str, template: dict[str, Any], log: Path) -> None:
        self.runc = runc
        self.id = ident
        self.container = template
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, bundle: Path) -> None:
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [*self.runc, "run", "--bundle", str(bundle), self.id],
                stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_for(
            lambda: self.state().get("status") == "running" or self._exited(),
            timeout=30,
            message=f"runc to start {self.id}",
        )
        assert not self._exited(), f"the container exited at once:\n{self.log.read_text()}"

    def _exited(self) -> bool:
        assert self.process is not None
        return self.process.poll() is not None

    def state(self) -> dict[str, Any]:
        done = subprocess.run(
            [*self.runc, "state", self.id], capture_output=True, text=True, check=False
        )
        return json.loads(done.stdout) if done.returncode == 0 else {}

    @property
    def pid(self) -> int:
        """The container's first process (the entrypoint), as the host sees it."""
        return int(self.state()["pid"])

    def exec(self, *argv: str, user: str | None = None) -> "subprocess.CompletedProcess[str]":
        """Run a command in the container (as its process' user, unless `user`)."""
        extra = ["--user", user] if user else []
        return subprocess.run(
            [*self.runc, "exec", *extra, self.id, *argv], capture_output=True, text=True, timeout=60, check=False
        )  # fmt: skip

    def probe(self, kind: str) -> tuple[bool, str]:
        """One try of the container's `kind` probe (livenessProbe...), as the kubelet's prober."""
        probe = self.container[kind]
        timeout = probe.get("timeoutSeconds", 1)
        ports = {p.get("name"): p["containerPort"] for p in self.container.get("ports", [])}
        if "httpGet" in probe:
            get = probe["httpGet"]
            port = ports[get["port"]] if isinstance(get["port"], str) else get["port"]
            scheme = get.get("scheme", "HTTP").lower()
            url = f"{scheme}://{get.get('host', '127.0.0.1')}:{port}{get.get('path', '/')}"
            headers = {"User-Agent": "kube-probe/1.37", "Accept": "*/*"}
            headers |= {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
            insecure = ssl.create_default_context()
            insecure.check_hostname = False  # the kubelet does not verify a probe's certificate
            insecure.verify_mode = ssl.CERT_NONE
            request = urllib.request.Request(url, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=timeout, context=insecure) as answer:
                    return 200 <= answer.status < 400, f"{url}: {answer.status}"
            except urllib.error.HTTPError as exc:
                return 200 <= exc.code < 400, f"{url}: {exc.code}"
            except OSError as exc:
                return False, f"{url}: {exc}"
        if "tcpSocket" in probe:
            port = probe["tcpSocket"]["port"]
            port = ports[port] if isinstance(port, str) else port
            try:
                socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
                return True, f"tcp {port}: open"
            except OSError as exc:
                return False, f"tcp {port}: {exc}"
        raise AssertionError(f"this test's kubelet does not know the probe {probe}")

    def stop(self, grace: float = 30) -> int:
        """SIGTERM, then SIGKILL after the grace period, as the kubelet stops a container."""
        assert self.process is not None
        if self.process.poll() is None:
            subprocess.run([*self.runc, "kill", self.id, "TERM"], capture_output=True, check=False)
            deadline = time.monotonic() + grace
            while self.process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.process.poll() is None:
                subprocess.run(
                    [*self.runc, "kill", self.id, "KILL"], capture_output=True, check=False
                )
                self.process.wait(timeout=30)
        subprocess.run([*self.runc, "delete", "--force", self.id], capture_output=True, check=False)
        return self.process.returncode
