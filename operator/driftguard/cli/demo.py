"""`make demo`: the whole story on a local control plane, narrated on screen.

Starts etcd + kube-apiserver + kube-controller-manager, installs the CRD, runs
the operator and tells the database story with examples/: one Blueprint makes
dev, staging and prod; an on-call engineer (a user of their own) downgrades the
database in staging (reverted, and they are named) and prod (flagged, Observe);
compare, audit, history and rollback show and undo it; then guardrails,
prevention and break-glass; last, the board (kept up until Ctrl-C when run in a
terminal). Development tooling: it needs the dev dependencies (kubectl) and the built control plane.
"""

from __future__ import annotations

import contextlib
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

from driftguard.cli import localhook
from driftguard.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
ONCALL = "oncall@shop.example"
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
        self.people: dict[str, Path] = {}

    def kubectl(
        self,
        *args: str,
        show: bool = True,
        check: bool = True,
        user: str | None = None,
        stdin: str | None = None,
    ) -> str:
        """`user`: as that person (a client certificate of the local CA), not the admin."""
        env = self.env
        if user is not None:
            env = {**env, "KUBECONFIG": str(self.people[user])}
        if show:
            who = f"{DIM}   # as {user}{RESET}" if user else ""
            print(f"{GREEN}$ kubectl {' '.join(args)}{RESET}{who}", flush=True)
        done = subprocess.run(
            [str(BIN / "kubectl"), *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
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
    say("1. One Blueprint, three environments")
    note("The shop's objects are written once; dev, staging and prod differ only in typed values.")
    note("prod already runs, made by another pipeline: in Observe, driftguard starts by watching.")
    demo.kubectl("apply", "-f", str(ROOT / "examples" / "prod-running.yaml"))
    demo.kubectl("apply", "-f", str(ROOT / "examples" / "shop-blueprint.yaml"))
    demo.kubectl("apply", "-f", str(ROOT / "examples" / "shop-environments.yaml"))
    for name in ("dev", "staging", "prod"):
        demo.until(f"{name} in sync", lambda n=name: demo.condition(n, "InSync") == "True")  # type: ignore[misc]
    demo.kubectl("get", "blueprints")
    demo.kubectl("get", "environments", "-n", "platform")

    say(f"2. The incident: {ONCALL} downgrades the database to 5.5 in staging and prod")
    for namespace in ("staging", "prod"):
        demo.kubectl("set", "image", "deploy/db", "-n", namespace, "db=mysql:5.5", user=ONCALL)
    took = demo.until("staging's database reverted", lambda: _image(demo, "staging") == "mysql:5.7")
    note(f"staging (Enforce): back to mysql:5.7 {took * 1000:.0f} ms after kubectl returned")
    demo.until("the person named", lambda: bool(_last_drift(demo, "staging").get("changedByUser")))
    last = _last_drift(demo, "staging")
    note(
        f"status.lastDrift: {last.get('object')} changed by {last.get('changedByUser')} "
        f"({last.get('changedBy')}): the person, as the API server authenticated them"
    )
    demo.until("prod flagged", lambda: demo.condition("prod", "InSync") == "False")
    note("prod (Observe): flagged, left as it is; a person decides")

    say("3. Before the release: every environment side by side")
    demo.driftguard("compare", "platform/dev", "platform/staging", "platform/prod")
    note("exit 1: prod runs what nobody declared. No hours lost suspecting the code.")

    say("4. Who changed what: the audit trail survives restarts")
    demo.driftguard("audit", "staging", "-n", "platform")

    say("5. Guardrails: web may be scaled between 2 and 10 in staging")
    demo.kubectl("scale", "deploy/web", "-n", "staging", "--replicas=5")
    demo.until("Overridden", lambda: _state(demo, "staging", "web") == "Overridden")
    note("5 is within bounds: tolerated, reported as Overridden, not reverted")
    demo.kubectl("scale", "deploy/web", "-n", "staging", "--replicas=50")
    demo.until("replicas reverted", lambda: _replicas(demo, "staging") == 2)
    note("50 is out of bounds: drift, reverted to the blueprint's 2")

    say("6. A workaround committed to the source of truth, then undone from history")
    demo.kubectl("patch", "environment", "staging", "-n", "platform", "--type=merge",
                 "-p", '{"spec":{"values":{"dbImage":"mysql:5.5"}}}')  # fmt: skip
    demo.until("revision 2 applied", lambda: _image(demo, "staging") == "mysql:5.5")
    demo.driftguard("history", "staging", "-n", "platform")
    started = time.monotonic()
    demo.driftguard("rollback", "staging", "-n", "platform", "--to-revision", "1")
    demo.until("revision 3 applied", lambda: _image(demo, "staging") == "mysql:5.7")
    took = time.monotonic() - started
    note(f"mysql:5.7 again {took:.1f} s after the rollback command, recorded as revision 3")
    demo.driftguard("history", "staging", "-n", "platform")

    prevent(demo)
    except_(demo)

    say("10. What a person, a pager, an auditor and a dashboard see")
    demo.kubectl("get", "events", "-n", "platform", "--sort-by=.lastTimestamp")
    note("an auditor: who changed what, how fast it went back, which exceptions, by whom")
    demo.until("the exception's end in the audit trail", lambda: "exception-ended" in _trail(demo))
    demo.driftguard("report", "-n", "platform")
    print(f"{GREEN}$ curl -s localhost:{port}/metrics | grep driftguard_{RESET}")
    print("\n".join(_metrics(port)))


def prevent(demo: Demo) -> None:
    say("7. Prevention: refuse the change at the door instead of reverting it")
    demo.kubectl("patch", "environment", "staging", "-n", "platform", "--type=merge",
                 "-p", '{"spec":{"prevention":"Deny"}}')  # fmt: skip
    probe = ("set", "image", "deploy/db", "-n", "staging", "db=mysql:5.5", "--dry-run=server")
    demo.until("the policy in force", lambda: not _succeeds(demo, *probe))
    note("one ValidatingAdmissionPolicy for the Environment, evaluated by the API server")
    demo.kubectl("set", "image", "deploy/db", "-n", "staging", "db=mysql:5.5", check=False)
    demo.kubectl("scale", "deploy/web", "-n", "staging", "--replicas=4")
    note("within allowedChanges bounds, still allowed")

    say("8. Break-glass: suspendUntil pauses enforcement and prevention, then ends by itself")
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 8))
    demo.kubectl("patch", "environment", "staging", "-n", "platform", "--type=merge",
                 "-p", json.dumps({"spec": {"suspendUntil": until}}))  # fmt: skip
    demo.until("the pause", lambda: _succeeds(demo, *probe))
    demo.kubectl("set", "image", "deploy/db", "-n", "staging", "db=mysql:5.5")
    note(f"the incident fix stays until {until}; nobody has to remember to undo the pause")
    took = demo.until(
        "the pause to end and the image to be reverted",
        lambda: _image(demo, "staging") == "mysql:5.7",
    )
    note(f"suspension over: mysql:5.7 again ({took:.1f} s later), prevention again")


def except_(demo: Demo) -> None:
    say("9. An exception: exactly one path, for a reason, until an end")
    note("staging needs 20 web replicas for a while: beyond its guardrail, refused at the door")
    scale = ("scale", "deploy/web", "-n", "staging", "--replicas=20")
    demo.until("prevention back", lambda: not _succeeds(demo, *scale, "--dry-run=server"))
    demo.kubectl(*scale, check=False)
    demo.driftguard("exception", "create", "staging", "-n", "platform",
                    "--object", "Deployment/web", "--path", "/spec/replicas", "--maximum", "20",
                    "--for", "15s", "--reason", "incident 4711: hold capacity")  # fmt: skip
    demo.until("the exception in force", lambda: _succeeds(demo, *scale, "--dry-run=server"))
    demo.kubectl(*scale, user=ONCALL)
    demo.until("Excepted", lambda: _state(demo, "staging", "web") == "Excepted")
    demo.driftguard("exception", "list", "-n", "platform")
    note("Excepted, naming the exception; the image and everything else are still enforced")
    took = demo.until(
        "the exception to end and web to go back", lambda: _replicas(demo, "staging") == 2
    )
    note(f"expired: 2 replicas again ({took:.1f} s later), reverted by itself, recorded")


def _trail(demo: Demo) -> str:
    found = demo.get("configmap", "staging-drift-audit", "platform")
    return str((found.get("data") or {}).get("incidents.jsonl", ""))


def _last_drift(demo: Demo, env: str) -> dict[str, Any]:
    status = demo.get("environment", env, "platform").get("status") or {}
    return dict(status.get("lastDrift") or {})


def _succeeds(demo: Demo, *args: str) -> bool:
    done = subprocess.run(
        [str(BIN / "kubectl"), *args], env=demo.env, capture_output=True, check=False
    )
    return done.returncode == 0


def _image(demo: Demo, namespace: str) -> str:
    containers = demo.get("deploy", "db", namespace)["spec"]["template"]["spec"]["containers"]
    return str(containers[0]["image"])


def _replicas(demo: Demo, namespace: str) -> int:
    return int(demo.get("deploy", "web", namespace)["spec"]["replicas"])


def _state(demo: Demo, env: str, name: str) -> str:
    status = demo.get("environment", env, "platform").get("status") or {}
    for entry in status.get("resources") or []:
        if entry["kind"] == "Deployment" and entry["name"] == name:
            return str(entry["state"])
    return ""


def board(demo: Demo, then: Callable[[str], None] | None = None) -> None:
    """11: the board, as the admin; kept up until Ctrl-C when a person watches the demo.

    `then(url)` runs instead of waiting (hack/board-screenshots.py photographs the pages)."""
    say("11. Every environment at a glance: driftguard board")
    process = subprocess.Popen(
        [str(BIN / "driftguard"), "board", "-A", "--port", "0"],
        env=demo.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # `driftguard board: URL ...` once it listens
        url = line.split()[2] if line.startswith("driftguard board:") else ""
        print(f"{GREEN}$ kubectl driftguard board -A{RESET}\n{line.rstrip()}", flush=True)
        if then is not None:
            then(url)
        elif sys.stdin.isatty():
            note(f"open {url} : the grid, compare, each Environment's diff, history and trail")
            note("Ctrl-C stops the board, the operator and the control plane")
            with contextlib.suppress(KeyboardInterrupt):
                process.wait()
        else:
            note(f"it served {url} while the demo ran; on a cluster: kubectl driftguard board -A")
    finally:
        process.terminate()
        process.wait(timeout=10)


def main(then: Callable[[str], None] | None = None) -> int:
    say("Starting a local control plane (etcd + kube-apiserver + kube-controller-manager)")
    with ControlPlane() as plane:
        demo = Demo(plane)
        note(f"export KUBECONFIG={plane.kubeconfig}")
        demo.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        # Polled: `kubectl wait` fails at once while a new CRD has no conditions yet.
        for crd in ("environments.driftguard.io", "blueprints.driftguard.io"):
            demo.until(
                f"the CRD {crd} Established",
                lambda c=crd: "True" in demo.kubectl("get", "crd", c, "-o",  # type: ignore[misc]
                                                     'jsonpath={.status.conditions[?(@.type=="Established")].status}',
                                                     show=False, check=False),
            )  # fmt: skip
        for namespace in ("platform", "dev", "staging", "prod"):
            demo.kubectl("create", "namespace", namespace, show=False)
        demo.until(
            "the Environment API",
            lambda: subprocess.run([str(BIN / "kubectl"), "get", "env,blueprints", "-A"],
                                   env=demo.env, capture_output=True, check=False).returncode == 0,
        )  # fmt: skip
        port = _free_port()
        log = plane.directory / "operator.log"
        operator_config = plane.user_kubeconfig("driftguard-demo", groups=["system:masters"])
        hook = localhook.prepare(plane.directory / "webhook", _free_port())
        demo.kubectl("apply", "-f", "-", show=False, stdin=json.dumps(
            hook.configuration(operator_user="driftguard-demo")))  # fmt: skip
        # The on-call engineer: their own certificate, the cluster's `edit` role where they work.
        demo.people[ONCALL] = plane.user_kubeconfig(ONCALL, groups=["shop:oncall"])
        for namespace in ("staging", "prod"):
            demo.kubectl("create", "rolebinding", "oncall-edit", "-n", namespace,
                         "--clusterrole=edit", "--group=shop:oncall", show=False)  # fmt: skip
        say("Starting the operator: driftguard run --all-namespaces")
        note("--allow-target-namespaces dev staging prod: Environments in platform write there")
        note(f"--webhook-port {hook.port}: the API server tells it who made each change")
        note(f"its JSON logs: {log}")
        with log.open("wb") as sink:
            operator = subprocess.Popen(
                [
                    *(str(BIN / "driftguard"), "run", "--all-namespaces"),
                    # Plain /metrics on loopback: the demo reads it itself.
                    *("--metrics-port", str(port), "--metrics-insecure"),
                    # The demo's Environments live in platform and write to staging and
                    # dev: a single-team install allows that explicitly.
                    *("--allow-target-namespaces", "dev", "staging", "prod"),
                    # The attribution webhook, called by the API server at 127.0.0.1.
                    *hook.args,
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
                if '"drift_' in line and "db" in line:
                    print(line)
            board(demo, then)
        finally:
            operator.terminate()
            operator.wait(timeout=15)
    say("Done: the control plane is stopped and its files removed.")
    note("make cluster keeps one running; make test runs every test.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
