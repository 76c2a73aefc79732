"""Draw one of deploy/monitoring's Grafana dashboards as a PNG from a running Prometheus, without Grafana: each
panel's queries over the last minutes (Prometheus' query_range API), laid out as the dashboard places them.
For the README's picture, and to see at a glance that a dashboard's queries find data:

    PROMETHEUS=1 make run            # in one terminal; then some traffic (scripts/walk_flow.py)
    .venv/bin/python scripts/render_dashboard.py deploy/monitoring/dashboards/seteli-payments.json \\
        --prometheus http://127.0.0.1:9090 --minutes 15 --out payments.png
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.dates import DateFormatter  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    url = f"{prometheus}/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(url, timeout=30) as r:
        answer = json.load(r)
    if answer.get("status") != "success":
        raise RuntimeError(f"{expr}: {answer}")
    return answer["data"]["result"]


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template) or str(labels)


def render(board: dict, prometheus: str, minutes: float, out: Path) -> int:
    end = time.time()
    start, step = end - minutes * 60, max(5.0, minutes * 60 / 200)
    panels = board["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = Figure(figsize=(16, rows * 0.42), dpi=100, layout="constrained")
    grid = fig.add_gridspec(rows, 24)
    fig.suptitle(f"{board['title']}  ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, last {minutes:g} min)",
                 fontsize=13)
    found = 0
    for p in panels:
        g = p["gridPos"]
        ax = fig.add_subplot(grid[g["y"]:g["y"] + g["h"], g["x"]:g["x"] + g["w"]])
        ax.set_title(p["title"], fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        series = 0
        for t in p["targets"]:
            for s in query_range(prometheus, t["expr"], start, end, step):
                xs = [datetime.fromtimestamp(float(x), timezone.utc) for x, _ in s["values"]]
                ys = [float(y) for _, y in s["values"]]
                ax.plot(xs, ys, linewidth=1.2, label=legend(t.get("legendFormat", ""), s["metric"])[:40])
                series += 1
        found += series > 0
        if series:
            ax.legend(fontsize=6, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.xaxis.set_major_formatter(DateFormatter("%H:%M"))
        ax.grid(alpha=0.3)
    fig.savefig(out)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dashboard", type=Path)
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--minutes", type=float, default=15)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    board = json.loads(args.dashboard.read_text())
    found = render(board, args.prometheus.rstrip("/"), args.minutes, args.out)
    print(f"{args.out}: {found} of {len(board['panels'])} panels with data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
