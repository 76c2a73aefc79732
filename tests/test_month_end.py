"""The month-end benchmark (bench/month_end.py) at a small scale, as CI runs it: a county's month through the
public APIs and the bus on the real PostgreSQL and RabbitMQ, and its final checks must all hold: the ledger
check, every good line charged once and settled, every bad line refused, the settled total equal to the files'
total to the cent (settlements, reporting, the invoice, the pain.001 transfers), each settlement's notice
received once by queue or by signed webhook, nothing dead-lettered. ``--faults`` does the same on a broker
node and a PostgreSQL instance of its own while it stops the broker, kills every service and restarts the
database."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seteli_shared import rabbitnodes

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e
#: the issue's small scale: 10 providers, 2,500 vouchers, 50,000 charges (about 1.5 and 2.5 minutes here, quiet)
SCALE = os.environ.get("MONTH_END_TEST_SCALE", "0.05")


def month_end(tmp_path: Path, *args: str) -> tuple[dict, str]:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "month_end.py"), "--scale", SCALE,
                          "--raw-messages", "2000", "--reads", "3", "--results", str(tmp_path), "--timeout", "600",
                          *args], capture_output=True, text=True, timeout=1500, cwd=ROOT)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith('{"ok"')]
    assert lines, out.stdout[-4000:] + out.stderr[-4000:]
    return json.loads(lines[-1]), out.stdout + out.stderr


EXPECTED_CHECKS = {
    "ledger invariants (GET /ledger/check)", "every good line charged, once", "every bad line refused, for its reason",
    "settled total == the files' total, to the cent", "reporting's figures == the files' total",
    "the invoice's total == the files' total", "pain.001 transfers == the settlements' net",
    "each settlement's notice received (exactly once by id)", "every webhook signature valid",
    "nothing dead-lettered"}


def test_a_small_month_end_balances_to_the_cent(tmp_path):  # noqa: ANN001
    result, text = month_end(tmp_path)
    assert set(result["checks"]) == EXPECTED_CHECKS, text[-4000:]
    assert all(result["checks"].values()), text[-6000:]
    assert result["ok"], text[-6000:]
    assert result["bad_lines"] > 0 and sum(result["refused"].values()) == result["bad_lines"]
    assert result["notices_queue"] > 0 and result["notices_webhook"] > 0, "both ways of receiving notices used"
    assert (tmp_path / "month-end.md").read_text().count("|") > 20 and (tmp_path / "month-end.png").stat().st_size
    # the long stages are visible: each logged when it starts (with what it expects) and when it ends (counts)
    for stage in ("intake: bulk CSV + JSON uploads", "settlement run (POST /settlement-runs)",
                  "settled events: relay -> vouchers + reporting"):
        assert f"{stage}: started, " in text and f"{stage}: " in text.split(f"{stage}: started, ", 1)[1], stage


@pytest.mark.skipif(rabbitnodes.available() is not None, reason=str(rabbitnodes.available()))
def test_the_month_end_survives_faults_at_its_peak(tmp_path):  # noqa: ANN001
    result, text = month_end(tmp_path, "--faults")
    assert all(result["checks"].values()) and result["ok"], text[-8000:]
    faults = [r["fault"] for r in result["recoveries"]]
    assert len(faults) == 6, faults  # the broker, the database and each of the four services
    assert any("RabbitMQ" in f for f in faults) and any("PostgreSQL" in f for f in faults)
