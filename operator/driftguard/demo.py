"""`make demo`: the whole story on a local control plane, narrated on screen.

Starts etcd + kube-apiserver + kube-controller-manager, installs the CRD, runs
the operator, applies examples/ (staging in Enforce, dev in Observe), makes
manual changes with kubectl and shows the revert and the flag. Development
tooling: it needs the dev dependencies (kubectl) and the built control plane.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from driftguard.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BOLD, DIM, GREEN, YELLOW, RESET = (
    ("\033[1m", "\033[2m", "\033[32m", "\033[33m", "\033[0m") if sys.stdout.isatty() else ("",) * 5
)


def say(text: str) -> None:
    print(f"\n{BOLD}== {text}{RESET}", flush=True)


def note(text: str) -> None:
    print(f"{DIM}   {text}{RESET}", flush=True)


class Demo:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig)}

    def kubectl(self, *args: str, show: bool = True, check: bool = True) -> str:
        if show:
            print(f"{GREEN}$ kubectl {' '.join(args)}{RESET}", flush=True)
        done = subprocess.run(
            [str(BIN / "kubectl"), *args], env=self.env, capture_output=True, text=True, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        if show:
            print(done.stdout.rstrip() or done.stderr.rstrip(), flush=True)
        return done.stdout

    def driftguard(self, *args: str) -> int:
        print(f"{GREEN}$ kubectl driftguard {' '.join(args)}{RESET}", flush=True)
        done = subprocess.run([str(BIN / "driftguard"), *args], env=self.env, check=False)
        return done.returncode

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        out = self.kubectl("get", kind, name, "-n", namespace, "-o", "json", show=False)
        result: dict[str, Any] = json.loads(out)
        return result

    def until(self, what: str, predicate: Callable[[], bool], timeout: float = 30) -> float:
        started = time.monotonic()
        while not predicate():
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"gave up waiting for {what}")
            time.sleep(0.02)
        return time.monotonic() - started

    def condition(self, name: str, type_: str) -> str:
        env = self.get("environment", name, "platform")
        for entry in (env.get("status") or {}).get("conditions") or []:
            if entry["type"] == type_:
                return str(entry["status"])
        return "Unknown"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _metrics(port: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    wanted = ("driftguard_drift_detected_total", "driftguard_drift_reverted_total",
              "driftguard_environment_in_sync", "driftguard_managed_resources")  # fmt: skip
    return [line for line in lines if line.startswith(wanted)]


def story(demo: Demo, port: int) -> None:
    say("1. Two environments, one source of truth each")
    note("staging is Enforce: manual changes are reverted. dev is Observe: they are reported.")
    note("dev already runs, made by hand; driftguard starts by watching it.")
    demo.kubectl("apply", "-f", str(ROOT / "examples" / "dev-running.yaml"))
    demo.kubectl("apply", "-f", str(ROOT / "examples" / "staging.yaml"))
    demo.kubectl("apply", "-f", str(ROOT / "examples" / "dev.yaml"))
    for name in ("staging", "dev"):
        demo.until(f"{name} in sync", lambda n=name: demo.condition(n, "InSync") == "True")  # type: ignore[misc]
    demo.kubectl("get", "environments", "-n", "platform")
    demo.kubectl("get", "deploy,configmap,service", "-n", "staging", "-l",
                 "app.kubernetes.io/managed-by=driftguard")  # fmt: skip

    say("2. Enforce: someone downgrades the image in staging during an incident")
    demo.kubectl("set", "image", "deploy/web", "-n", "staging", "web=nginx:1.25")
    took = demo.until(
        "the image reverted",
        lambda: (
            demo.get("deploy", "web", "staging")["spec"]["template"]["spec"]["containers"][0][
                "image"
            ]
            == "nginx:1.27.3"
        ),
    )
    note(f"back to nginx:1.27.3 {took * 1000:.0f} ms after kubectl returned")
    demo.kubectl("get", "deploy", "web", "-n", "staging", "-o",
                 "jsonpath={.spec.template.spec.containers[0].image}{'\\n'}")  # fmt: skip

    say("3. Guardrails: replicas may move between 2 and 10 (allowedChanges)")
    demo.kubectl("scale", "deploy/web", "-n", "staging", "--replicas=5")
    demo.until("Overridden", lambda: _state(demo, "staging", "web") == "Overridden")
    note("5 is within bounds: tolerated, reported as Overridden, not reverted")
    demo.kubectl("scale", "deploy/web", "-n", "staging", "--replicas=50")
    demo.until(
        "replicas reverted", lambda: demo.get("deploy", "web", "staging")["spec"]["replicas"] == 3
    )
    note("50 is out of bounds: drift, reverted to the blueprint's 3")

    say("4. Observe: someone edits the config in dev by hand")
    demo.kubectl("patch", "configmap", "web-config", "-n", "dev", "--type=merge",
                 "-p", '{"data":{"DB_VERSION":"5.6"}}')  # fmt: skip
    took = demo.until("dev flagged", lambda: demo.condition("dev", "InSync") == "False")
    note(f"flagged {took * 1000:.0f} ms later; the change stays, a person decides")
    demo.kubectl("get", "environments", "-n", "platform")
    demo.driftguard("diff", "dev", "-n", "platform")
    demo.driftguard("status", "-A")

    prevent(demo)

    say("7. What a person, a pager and a dashboard see")
    demo.kubectl("get", "events", "-n", "platform", "--sort-by=.lastTimestamp")
    demo.kubectl("get", "environment", "staging", "-n", "platform", "-o",
                 "jsonpath={.status.lastDrift}{'\\n'}")  # fmt: skip
    print(f"{GREEN}$ curl -s localhost:{port}/metrics | grep driftguard_{RESET}")
    print("\n".join(_metrics(port)))


def prevent(demo: Demo) -> None:
    say("5. Prevention: refuse the change at the door instead of reverting it")
    demo.kubectl("patch", "environment", "staging", "-n", "platform", "--type=merge",
                 "-p", '{"spec":{"prevention":"Deny"}}')  # fmt: skip
    probe = ("scale", "deploy/web", "-n", "staging", "--replicas=50", "--dry-run=server")
    demo.until("the policy in force", lambda: not _succeeds(demo, *probe))
    note("one ValidatingAdmissionPolicy for the Environment, evaluated by the API server")
    demo.kubectl("set", "image", "deploy/web", "-n", "staging", "web=nginx:1.25", check=False)
    demo.kubectl("scale", "deploy/web", "-n", "staging", "--replicas=4")
    note("within allowedChanges bounds, still allowed")

    say("6. Break-glass: suspendUntil pauses enforcement and prevention, then ends by itself")
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 8))
    demo.kubectl("patch", "environment", "staging", "-n", "platform", "--type=merge",
                 "-p", json.dumps({"spec": {"suspendUntil": until}}))  # fmt: skip
    demo.until("the pause", lambda: _succeeds(demo, *probe))
    demo.kubectl("set", "image", "deploy/web", "-n", "staging", "web=nginx:1.25")
    demo.kubectl("get", "environment", "staging", "-n", "platform")
    note(f"the incident fix stays until {until}; nobody has to remember to undo the pause")
    took = demo.until(
        "the pause to end and the image to be reverted", lambda: _image(demo) == "nginx:1.27.3"
    )
    note(
        f"suspension over: the image is back to nginx:1.27.3 ({took:.1f} s later), prevention again"
    )


def _succeeds(demo: Demo, *args: str) -> bool:
    done = subprocess.run(
        [str(BIN / "kubectl"), *args], env=demo.env, capture_output=True, check=False
    )
    return done.returncode == 0


def _image(demo: Demo) -> str:
    containers = demo.get("deploy", "web", "staging")["spec"]["template"]["spec"]["containers"]
    return str(containers[0]["image"])


def _state(demo: Demo, env: str, name: str) -> str:
    status = demo.get("environment", env, "platform").get("status") or {}
    for entry in status.get("resources") or []:
        if entry["kind"] == "Deployment" and entry["name"] == name:
            return str(entry["state"])
    return ""


def main() -> int:
    say("Starting a local control plane (etcd + kube-apiserver + kube-controller-manager)")
    with ControlPlane() as plane:
        demo = Demo(plane)
        note(f"export KUBECONFIG={plane.kubeconfig}")
        demo.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        # Polled: `kubectl wait` fails at once while a new CRD has no conditions yet.
        demo.until(
            "the CRD Established",
            lambda: "True" in demo.kubectl("get", "crd", "environments.driftguard.io", "-o",
                                           'jsonpath={.status.conditions[?(@.type=="Established")].status}',
                                           show=False, check=False),
        )  # fmt: skip
        for namespace in ("platform", "staging", "dev"):
            demo.kubectl("create", "namespace", namespace, show=False)
        demo.until(
            "the Environment API",
            lambda: subprocess.run([str(BIN / "kubectl"), "get", "env", "-A"], env=demo.env,
                                   capture_output=True, check=False).returncode == 0,
        )  # fmt: skip
        port = _free_port()
        log = plane.directory / "operator.log"
        operator_config = plane.user_kubeconfig("driftguard-demo", groups=["system:masters"])
        say("Starting the operator: driftguard run --all-namespaces")
        note("--allow-target-namespaces staging dev: the Environments in platform write there")
        note(f"its JSON logs: {log}")
        with log.open("wb") as sink:
            operator = subprocess.Popen(
                [
                    *(str(BIN / "driftguard"), "run", "--all-namespaces"),
                    *("--metrics-port", str(port)),
                    # The demo's Environments live in platform and write to staging and
                    # dev: a single-team install allows that explicitly.
                    *("--allow-target-namespaces", "staging", "dev"),
                ],
                # Its own identity, not the admin's: prevention lets the operator through,
                # and the demo's kubectl (the admin) is the person it stops.
                env={**demo.env, "KUBECONFIG": str(operator_config)},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        try:
            story(demo, port)
            say("A few of the operator's log lines")
            for line in log.read_text().splitlines():
                if '"drift_' in line:
                    print(line)
        finally:
            operator.terminate()
            operator.wait(timeout=15)
    say("Done: the control plane is stopped and its files removed.")
    note("make cluster keeps one running; make test runs every test.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
