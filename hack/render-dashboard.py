"""Renders docs/dashboard.png: the chart's Grafana dashboard drawn from real data.

`make dashboard-image`. Starts a local control plane, the operator and a Prometheus on
loopback that scrapes it with the chart's alert rules (every `for:` shortened, as
tests/e2e/test_prometheus.py does), applies the shop examples, makes drifts for about
three minutes, then asks Prometheus' HTTP API for every panel's query of
charts/driftguard/files/dashboard.json over that window and draws each panel where the
dashboard places it, under a strip of the alerts that fired. Grafana itself is not
needed (nor available here); the queries, titles, legends, units and layout are the
dashboard's own.

A documentation tool, not a test: the operator runs as an admin (the e2e tests prove the
chart's RBAC), and the events are paced by the clock so the graphs show them apart.
Needs the dev dependencies (matplotlib, kubectl), `make controlplane` and `make tools`.
Every process it starts is stopped before it exits.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
FILES = ROOT / "charts" / "driftguard" / "files"
BIN = Path(sys.executable).parent
PROMETHEUS_VERSION = "v0.316.0"  # hack/build-tools.sh builds this one, as promtool
JOB = "driftguard"  # the job DriftguardOperatorDown looks for
SCRAPE_S = 2
# Grafana's $__rate_interval is at least four scrapes; a wider window smooths one revert
# into a readable bump instead of a one-sample spike.
RATE_WINDOW = "30s"
SHORT_FOR = "20s"  # long enough to see an alert pending first, short enough for the run
TARGETS = ("dev", "staging", "prod")


# ---------------------------------------------------------------- the dashboard's panels


@dataclass(frozen=True)
class Target:
    expr: str  # PromQL, template variables filled in
    legend: str  # Grafana legendFormat, e.g. "{{namespace}}/{{environment}}"


@dataclass(frozen=True)
class Panel:
    id: int
    title: str
    type: str  # stat, table, timeseries
    unit: str
    grid: dict[str, int]  # Grafana gridPos: x, y, w, h on a 24-column grid
    targets: tuple[Target, ...]


def variables(dashboard: dict[str, Any], *, rate_window: str = RATE_WINDOW) -> dict[str, str]:
    """Each template variable as a user picking "All" sends it, and Grafana's rate interval."""
    values = {"__rate_interval": rate_window}
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            values[variable["name"]] = variable.get("allValue") or ".*"
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    """`$name` and `${name}` replaced by their values; unknown variables stay for a test to see."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def panels(dashboard: dict[str, Any], *, rate_window: str = RATE_WINDOW) -> list[Panel]:
    """Every panel with its queries ready to send to Prometheus."""
    values = variables(dashboard, rate_window=rate_window)
    return [
        Panel(
            id=panel["id"],
            title=panel["title"],
            type=panel["type"],
            unit=panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""),
            grid=dict(panel["gridPos"]),
            targets=tuple(
                Target(substitute(target["expr"], values), target.get("legendFormat", ""))
                for target in panel.get("targets", [])
            ),
        )
        for panel in dashboard["panels"]
    ]


def load_dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FILES / "dashboard.json").read_text())
    return loaded


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def until(what: str, predicate: Callable[[], Any], *, timeout: float = 60) -> Any:
    """Polls until `predicate` answers something truthy; raises at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = predicate()
        except OSError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def say(text: str) -> None:
    print(f"[render-dashboard] {text}", flush=True)


@contextmanager
def process(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[Any]:
    """A child process, terminated (killed after 15 s) on the way out whatever happened."""
    with log.open("wb") as sink:
        child = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        yield child
    finally:
        child.terminate()
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def alive(child: Any, log: Path) -> None:
    if child.poll() is not None:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{log.stem} exited {child.returncode}:\n{tail}")


class Kubectl:
    def __init__(self, kubeconfig: Path) -> None:
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig)}

    def __call__(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            [str(BIN / "kubectl"), *args], env=self.env, capture_output=True, text=True, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def ok(self, *args: str) -> bool:
        return (
            subprocess.run(
                [str(BIN / "kubectl"), *args], env=self.env, capture_output=True, check=False
            ).returncode
            == 0
        )

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: Any) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=20) as response:
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path} {params}: {body}")
        return body["data"]

    def instant(self, expr: str, at: float) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/query", query=expr, time=at)["result"])

    def series(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query_range", query=expr, start=start, end=end, step=SCRAPE_S)
        return list(data["result"])


def shortened_rules() -> dict[str, Any]:
    """The chart's rules with every `for:` cut to SHORT_FOR (test_prometheus.py does the same;
    a test module cannot be imported from here without its fixtures)."""
    rules: dict[str, Any] = yaml.safe_load((FILES / "alerts.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = SHORT_FOR
    return rules


def prometheus_argv(home: Path, metrics_port: int, address: str) -> list[str]:
    from driftguard.controlplane.binaries import cache_root

    binary = cache_root() / f"tools-prometheus-{PROMETHEUS_VERSION}" / "bin" / "prometheus"
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"prometheus missing at {binary}: run `make tools`")
    (home / "rules.yaml").write_text(yaml.safe_dump(shortened_rules()))
    interval = f"{SCRAPE_S}s"
    config = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": ["rules.yaml"],
        "scrape_configs": [
            {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}
        ],
    }
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    return [
        str(binary),
        f"--config.file={home / 'prometheus.yml'}",
        f"--storage.tsdb.path={home / 'data'}",
        f"--web.listen-address={address}",
    ]


# ---------------------------------------------------------------- the story


def install(kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    path = '{.status.conditions[?(@.type=="Established")].status}'
    for crd in ("environments.driftguard.io", "blueprints.driftguard.io"):
        until(crd, lambda c=crd: kubectl("get", "crd", c, "-o", f"jsonpath={path}") == "True")
    for namespace in ("platform", *TARGETS):
        kubectl("create", "namespace", namespace)
    until("the Environment API", lambda: kubectl.ok("get", "environments,blueprints", "-A"))


def condition(kubectl: Kubectl, name: str, type_: str) -> str:
    env = kubectl.json("get", "environment", name, "-n", "platform")
    for entry in (env.get("status") or {}).get("conditions") or []:
        if entry["type"] == type_:
            return str(entry["status"])
    return "Unknown"


def image(kubectl: Kubectl, namespace: str) -> str:
    deploy = kubectl.json("get", "deploy", "db", "-n", namespace)
    return str(deploy["spec"]["template"]["spec"]["containers"][0]["image"])


def log_level(kubectl: Kubectl, namespace: str) -> str:
    return str(kubectl.json("get", "cm", "web-config", "-n", namespace)["data"]["LOG_LEVEL"])


def downgrade_db(kubectl: Kubectl, namespace: str, *, reverted: bool) -> None:
    kubectl("set", "image", "deploy/db", "-n", namespace, "db=mysql:5.5")
    if reverted:
        until(f"{namespace}'s db reverted", lambda: image(kubectl, namespace) == "mysql:5.7")


def change_log_level(kubectl: Kubectl, namespace: str, *, expected: str) -> None:
    patch = '{"data":{"LOG_LEVEL":"warn"}}'
    kubectl("patch", "cm", "web-config", "-n", namespace, "--type=merge", "-p", patch)
    until(f"{namespace}'s LOG_LEVEL back", lambda: log_level(kubectl, namespace) == expected)


def scale_staging(kubectl: Kubectl) -> None:
    kubectl("scale", "deploy/web", "-n", "staging", "--replicas=50")
    replicas = lambda: kubectl.json("get", "deploy", "web", "-n", "staging")["spec"]["replicas"]  # noqa: E731
    until("staging's web back to 2 replicas", lambda: replicas() == 2)


def fight(kubectl: Kubectl) -> None:
    """Six changes in a row to one object: the fifth revert within a minute makes it a fight."""
    for _ in range(6):
        change_log_level(kubectl, "dev", expected="debug")


def bad_values(kubectl: Kubectl) -> None:
    """A value the Blueprint's schema refuses: InvalidSpec (a reconcile error), then fixed."""
    values = lambda n: json.dumps({"spec": {"values": {"logLevel": "debug", "webReplicas": n}}})  # noqa: E731
    kubectl("patch", "environment", "dev", "-n", "platform", "--type=merge", "-p", values(50))
    until("dev not Ready", lambda: condition(kubectl, "dev", "Ready") == "False")
    kubectl("patch", "environment", "dev", "-n", "platform", "--type=merge", "-p", values(1))
    until("dev Ready again", lambda: condition(kubectl, "dev", "Ready") == "True")


def story(kubectl: Kubectl) -> list[tuple[float, Callable[[], None], str]]:
    """(seconds after the start, action, what it is): the drifts the graphs show."""
    return [
        (15, lambda: downgrade_db(kubectl, "staging", reverted=True), "staging db downgraded"),
        (30, lambda: change_log_level(kubectl, "dev", expected="debug"), "dev LOG_LEVEL changed"),
        (45, lambda: downgrade_db(kubectl, "prod", reverted=False), "prod db downgraded (Observe)"),
        (60, lambda: scale_staging(kubectl), "staging web scaled to 50"),
        (75, lambda: downgrade_db(kubectl, "staging", reverted=True), "staging db again"),
        (90, lambda: change_log_level(kubectl, "staging", expected="info"), "staging LOG_LEVEL"),
        (105, lambda: fight(kubectl), "dev web-config changed six times in a row"),
        (125, lambda: bad_values(kubectl), "dev given webReplicas 50 (schema max 10), then 1"),
        (140, lambda: bad_values(kubectl), "and once more"),
        (150, lambda: downgrade_db(kubectl, "staging", reverted=True), "staging db a third time"),
    ]


def play(kubectl: Kubectl, started: float) -> None:
    kubectl("apply", "-f", str(ROOT / "examples" / "prod-running.yaml"))
    kubectl("apply", "-f", str(ROOT / "examples" / "shop-blueprint.yaml"))
    kubectl("apply", "-f", str(ROOT / "examples" / "shop-environments.yaml"))
    for name in TARGETS:
        until(f"{name} in sync", lambda n=name: condition(kubectl, n, "InSync") == "True")
    for offset, action, what in story(kubectl):
        # Paced by the clock, not by a condition: the events land apart on the graphs.
        time.sleep(max(0.0, started + offset - time.time()))
        say(f"t+{time.time() - started:3.0f}s {what}")
        action()


# ---------------------------------------------------------------- drawing

BACKGROUND, PANEL, TEXT, DIM, GRID = "#111217", "#181b1f", "#ccccdc", "#8e8e9a", "#2c2f36"
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#96d98d"]
ALERT_COLOURS = {"pending": "#f2cc0c", "firing": "#f2495c"}
# The page in inches: 16 wide at 100 dpi is 1,600 px, Grafana's 24 columns on a wide screen;
# one grid row is Grafana's 30 px plus its gap.
WIDTH, MARGIN, ROW, HEADER, STRIP_ROWS = 16.0, 0.12, 0.36, 0.5, 6
GAP = 0.08  # between panels
TITLE = 0.34  # a panel's header, inside its box as in Grafana
LEGEND_COLUMNS = 3  # of 8 pt entries such as "platform/staging Deployment" in half a page
DRAWN = {"stat", "table", "timeseries"}  # the panel types this script can draw
Box = tuple[float, float, float, float]  # left, top, width, height in inches from the top left


def legend(fmt: str, labels: dict[str, str]) -> str:
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def points(result: dict[str, Any]) -> tuple[list[datetime], list[float]]:
    times = [datetime.fromtimestamp(float(t), UTC) for t, _ in result["values"]]
    return times, [float(v) for _, v in result["values"]]


def number(value: float, unit: str) -> str:
    if value != value:  # NaN: histogram_quantile over a window without observations
        return "-"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}"


class Page:
    """A figure laid out in inches the way Grafana lays out gridPos, panels as dark boxes."""

    def __init__(self, fig: Any, height: float) -> None:
        self.fig, self.height = fig, height

    def box(self, x: int, y: int, w: int, h: int) -> Box:
        """gridPos (24 columns, rows below the alerts strip) to a box in inches."""
        column = (WIDTH - 2 * MARGIN) / 24
        return (MARGIN + x * column + GAP / 2, HEADER + y * ROW + GAP / 2,
                w * column - GAP, h * ROW - GAP)  # fmt: skip

    def panel(self, box: Box, title: str, pad: Box) -> Any:
        """Draws the panel's box and header; the axes inside, `pad` (l, t, r, b) in from it."""
        from matplotlib.patches import FancyBboxPatch

        left, top, width, height = box
        self.fig.patches.append(
            FancyBboxPatch(
                (left / WIDTH, 1 - (top + height) / self.height), width / WIDTH,
                height / self.height, boxstyle="round,pad=0,rounding_size=0.003",
                transform=self.fig.transFigure, facecolor=PANEL, edgecolor=GRID, linewidth=0.8,
                zorder=-1,  # beneath the axes (zorder 0) drawn on it
            )
        )  # fmt: skip
        self.fig.text((left + 0.12) / WIDTH, 1 - (top + 0.2) / self.height, title,
                      color=TEXT, fontsize=11, fontweight="bold", va="center")  # fmt: skip
        pl, pt, pr, pb = pad
        ax = self.fig.add_axes(
            (
                (left + pl) / WIDTH,
                1 - (top + height - pb) / self.height,
                (width - pl - pr) / WIDTH,
                (height - TITLE - pt - pb) / self.height,
            )
        )
        ax.set_facecolor(PANEL)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.tick_params(colors=DIM, labelsize=8, length=0)
        return ax


def no_data(ax: Any) -> None:
    ax.text(0.5, 0.5, "No data", transform=ax.transAxes, ha="center", va="center",
            color=DIM, fontsize=12)  # fmt: skip


def time_axis(ax: Any, span: tuple[datetime, datetime]) -> None:
    import matplotlib.dates as mdates

    ax.set_xlim(*span)
    ax.xaxis.set_major_locator(mdates.SecondLocator(bysecond=[0, 30], tz=UTC))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))
    ax.grid(color=GRID, linewidth=0.6)


def draw_stat(ax: Any, panel: Panel, data: list[list[dict[str, Any]]], span: Any) -> None:
    """The last value of each query, big, over the first query's sparkline (Grafana's default)."""
    ax.set_xticks([])
    ax.set_yticks([])
    shown, names = [], []
    for index, (target, results) in enumerate(zip(panel.targets, data, strict=True)):
        if not results:
            continue
        times, values = points(results[0])
        if index == 0:
            ax.fill_between(times, values, color=PALETTE[0], alpha=0.18, step="post")
            ax.set_xlim(*span)
            ax.set_ylim(0, max(max(values) * 1.6, 1))
        shown.append(number(values[-1], panel.unit))
        names.append(target.legend)
    if not shown:
        no_data(ax)
        return
    ax.text(0.5, 0.55, " / ".join(shown), transform=ax.transAxes, ha="center", va="center",
            color=PALETTE[0], fontsize=32, fontweight="bold")  # fmt: skip
    ax.text(0.5, 0.08, " / ".join(names), transform=ax.transAxes, ha="center", color=DIM,
            fontsize=9)  # fmt: skip


def draw_table(ax: Any, panel: Panel, rows: list[dict[str, Any]]) -> None:
    """The label columns of the query's `by (...)`, one row per series, as the panel's organize
    transformation leaves them (Time and Value hidden)."""
    ax.axis("off")
    if not rows:
        no_data(ax)
        return
    by = re.search(r"by \(([^)]*)\)", panel.targets[0].expr)
    columns = [c.strip() for c in by.group(1).split(",")] if by else sorted(rows[0]["metric"])
    cells = sorted([row["metric"].get(c, "") for c in columns] for row in rows)
    table = ax.table(cellText=cells, colLabels=columns, cellLoc="left", bbox=(0, 0, 1, 1))
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    for (row, _), cell in table.get_celld().items():
        cell.set_edgecolor(GRID)
        cell.set_facecolor("#22252b" if row == 0 else PANEL)
        cell.get_text().set_color(TEXT if row else DIM)


def draw_series(ax: Any, panel: Panel, data: list[list[dict[str, Any]]], span: Any) -> None:
    """One line per series, named by the target's legendFormat, y from 0 as Grafana's."""
    time_axis(ax, span)
    drawn = 0
    for target, results in zip(panel.targets, data, strict=True):
        for result in sorted(results, key=lambda r: legend(target.legend, r["metric"])):
            times, values = points(result)
            ax.plot(times, values, color=PALETTE[drawn % len(PALETTE)], linewidth=1.6,
                    label=legend(target.legend, result["metric"]))  # fmt: skip
            drawn += 1
    if not drawn:
        no_data(ax)
        return
    if panel.unit == "s":
        ax.yaxis.set_major_formatter(lambda v, _: number(v, "s"))
    # From 0, as Grafana's; counts of 0 and 1 still get a scale of whole numbers.
    ax.set_ylim(0, max(ax.get_ylim()[1], 0.01 if panel.unit == "s" else 1.05))
    # Below the graph, as Grafana's default list legend.
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.1), fontsize=8, frameon=False,
              labelcolor=TEXT, ncol=LEGEND_COLUMNS, handlelength=1.2)  # fmt: skip


def draw_alerts(ax: Any, snapshot: dict[str, Any], span: Any) -> None:
    """A bar per alert from ALERTS (pending, then firing); names of those /api/v1/alerts says
    fire at the end in red."""
    time_axis(ax, span)
    ax.grid(axis="y", visible=False)
    ax.set_axisbelow(True)
    series = snapshot["alerts_range"]
    names = sorted({alert_name(s["metric"]) for s in series})
    for s in series:
        state = s["metric"].get("alertstate", "firing")
        times, _ = points(s)
        for start, width in runs(times):
            ax.barh(names.index(alert_name(s["metric"])), width, left=start, height=0.62,
                    color=ALERT_COLOURS[state])  # fmt: skip
    if not names:
        no_data(ax)
        return
    firing = {alert_name(a["labels"]) for a in snapshot["alerts_now"] if a["state"] == "firing"}
    ax.set_yticks(range(len(names)), names, fontsize=9)
    for label in ax.get_yticklabels():
        label.set_color(ALERT_COLOURS["firing"] if label.get_text() in firing else TEXT)
    ax.set_ylim(len(names) - 0.4, -0.6)


def alert_name(labels: dict[str, str]) -> str:
    where = "/".join(labels[k] for k in ("namespace", "environment") if k in labels)
    return f"{labels['alertname']} {where}".strip()


def runs(times: list[datetime]) -> Iterator[tuple[datetime, timedelta]]:
    """Contiguous stretches of samples, as (start, length); a gap of two steps splits them."""
    step = timedelta(seconds=SCRAPE_S)
    start = previous = times[0]
    for moment in times[1:]:
        if moment - previous > 2 * step:
            yield start, previous + step - start
            start = moment
        previous = moment
    yield start, previous + step - start


def fetch(prom: Prometheus, start: float, end: float) -> dict[str, Any]:
    """Everything the image shows, as Prometheus answered it: JSON, so it can be drawn again."""
    answers: dict[str, Any] = {}
    for panel in panels(load_dashboard()):
        if panel.type == "table":  # a table shows the last value only, as Grafana's does
            answers[str(panel.id)] = [prom.instant(t.expr, end) for t in panel.targets]
        else:
            answers[str(panel.id)] = [prom.series(t.expr, start, end) for t in panel.targets]
    return {
        "start": start,
        "end": end,
        "panels": answers,
        "alerts_range": prom.series("ALERTS", start, end),
        "alerts_now": prom.get("/api/v1/alerts")["alerts"],
    }


def render(snapshot: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_panels = panels(load_dashboard())
    rows = STRIP_ROWS + max(p.grid["y"] + p.grid["h"] for p in all_panels)
    height = HEADER + rows * ROW + MARGIN
    fig = plt.figure(figsize=(WIDTH, height), facecolor=BACKGROUND)
    page = Page(fig, height)
    span = tuple(datetime.fromtimestamp(snapshot[k], UTC) for k in ("start", "end"))
    fig.text(MARGIN / WIDTH, 1 - 0.25 / height,
             f"driftguard  ·  charts/driftguard/files/dashboard.json  ·  "
             f"{span[0]:%Y-%m-%d %H:%M:%S} to {span[1]:%H:%M:%S} UTC  ·  namespace: All  ·  "
             f"environment: All  ·  $__rate_interval: {RATE_WINDOW}",
             color=TEXT, fontsize=13, va="center")  # fmt: skip
    strip = page.panel(
        page.box(0, 0, 24, STRIP_ROWS),
        f"Alerts: files/alerts.yaml in Prometheus, every for: cut to {SHORT_FOR}"
        "   (yellow: pending, red: firing; names in red fire at the end)",
        (3.3, 0.0, 0.2, 0.3),
    )
    draw_alerts(strip, snapshot, span)
    for panel in all_panels:
        g = panel.grid
        box = page.box(g["x"], g["y"] + STRIP_ROWS, g["w"], g["h"])
        data = snapshot["panels"][str(panel.id)]
        if panel.type not in DRAWN:
            raise RuntimeError(f"panel {panel.title!r}: no drawing for type {panel.type!r}")
        if panel.type == "table":
            draw_table(page.panel(box, panel.title, (0.12, 0.02, 0.12, 0.1)), panel, data[0])
        elif panel.type == "stat":
            draw_stat(page.panel(box, panel.title, (0.0, 0.0, 0.0, 0.0)), panel, data, span)
        else:
            lines = sum(len(results) for results in data)
            legend_rows = max(1, -(-lines // LEGEND_COLUMNS))
            pad = (0.6, 0.0, 0.2, 0.35 + 0.2 * legend_rows)
            draw_series(page.panel(box, panel.title, pad), panel, data, span)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, facecolor=BACKGROUND)
    plt.close(fig)


# ---------------------------------------------------------------- main


def run(work: Path) -> dict[str, Any]:
    """The story played on a fresh control plane; Prometheus' answers to the dashboard."""
    from driftguard.controlplane import ControlPlane

    say("starting a local control plane")
    with ControlPlane() as plane:
        kubectl = Kubectl(plane.kubeconfig)
        install(kubectl)
        metrics_port, address = free_port(), f"127.0.0.1:{free_port()}"
        operator_config = plane.user_kubeconfig("driftguard-dashboard", groups=["system:masters"])
        operator_log, prometheus_log = work / "operator.log", work / "prometheus.log"
        argv = [str(BIN / "driftguard"), "run", "--all-namespaces", "--metrics-insecure",
                "--metrics-port", str(metrics_port),
                "--allow-target-namespaces", *TARGETS]  # fmt: skip
        say("starting the operator and Prometheus")
        with (
            process(argv, operator_log, {**kubectl.env, "KUBECONFIG": str(operator_config)}) as op,
            process(prometheus_argv(work, metrics_port, address), prometheus_log) as pr,
        ):
            prom = Prometheus(f"http://{address}")

            def scraped() -> bool:
                alive(op, operator_log)
                alive(pr, prometheus_log)
                up = prom.instant(f'up{{job="{JOB}"}}', time.time())
                return bool(up) and up[0]["value"][1] == "1"

            try:
                until("Prometheus to scrape the operator", scraped, timeout=90)
                started = time.time()
                play(kubectl, started)
                say("waiting for DriftguardEnvironmentDrifted on prod to fire")
                until(
                    "the prod alert", lambda: firing(prom, "DriftguardEnvironmentDrifted", "prod")
                )
                # Three more scrapes and evaluations, so the last state is on every graph.
                time.sleep(3 * SCRAPE_S)
                alive(op, operator_log)
            except BaseException:
                for log in (operator_log, prometheus_log):
                    print(f"--- {log.name} ---\n{log.read_text(errors='replace')[-4000:]}")
                raise
            say("querying Prometheus for every panel")
            return fetch(prom, started - 10, time.time())


def firing(prom: Prometheus, name: str, environment: str) -> bool:
    return any(
        a["labels"].get("alertname") == name
        and a["labels"].get("environment") == environment
        and a["state"] == "firing"
        for a in prom.get("/api/v1/alerts")["alerts"]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--save-data", type=Path, help="also write Prometheus' answers here")
    parser.add_argument(
        "--from-data", type=Path, help="draw answers saved by --save-data, start nothing"
    )
    args = parser.parse_args()
    if args.from_data:
        snapshot = json.loads(args.from_data.read_text())
    else:
        with tempfile.TemporaryDirectory(prefix="render-dashboard-") as work:
            snapshot = run(Path(work))
    if args.save_data:
        args.save_data.write_text(json.dumps(snapshot))
    say(f"rendering {args.out}")
    render(snapshot, args.out)
    size = args.out.stat().st_size
    say(f"wrote {args.out} ({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
