"""The three speed figures of issue 19 item 5, each against its raw baseline measured in the same run (``make bench``):

1. single ``POST /charges`` with the whole system running (``bench/system_charges.py``: ``scripts/run_all.py``
   against ``/work/shared/bench/raw_charge_app.py``, wrk c16): the ratio of charges/s, the p99, and the CPU per
   accepted charge of every service (psutil);
2. bulk intake (``bench/payments.py``): one CSV file of ``--csv-lines`` (100,000) lines streamed to
   ``POST /charges/bulk`` against a raw ``COPY`` of as many rows, and the worker's peak resident memory;
3. a settlement run of ``--charges`` (1,000,000) charges against raw SQL making the same entries.

Each part runs as its own process (its own databases and bus namespace, removed afterwards); this prints their
lines as they come, then the three ratios beside their targets and a final JSON line. ``--quick`` runs every part
small (a smoke test of the benchmark, not a figure to quote).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = {"single": 0.5, "p99_ms": 50.0, "cpu_ms": 1.5, "bulk": 0.7, "settle": 0.9, "settle_s": 45.0}


def part(cmd: list[str]) -> dict:
    """Run a bench, echo its lines, return its final JSON line."""
    print(f"$ {' '.join(cmd)}", flush=True)
    proc = subprocess.Popen([sys.executable, "-u", *cmd], stdout=subprocess.PIPE, text=True, cwd=HERE.parent)
    last: dict = {}
    for line in proc.stdout:
        if line.startswith("{"):
            try:
                last = json.loads(line)
                continue
            except ValueError:
                pass
        print("  " + line, end="", flush=True)
    last["exit_status"] = proc.wait()
    return last


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes: checks the benchmark runs, figures not quotable")
    p.add_argument("--seconds", type=int, default=15, help="wrk seconds per round (single charges)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--csv-lines", type=int, default=100_000)
    p.add_argument("--charges", type=int, default=1_000_000, help="charges in the settlement run")
    p.add_argument("--only", choices=("single", "bulk", "settle"), action="append", help="run only these parts")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.csv_lines, args.charges = 5, 1, 5_000, 20_000
    only = set(args.only or ("single", "bulk", "settle"))
    out: dict = {"load_before": os.getloadavg()[0]}
    if "single" in only:
        out["single"] = part([str(HERE / "system_charges.py"), "--seconds", str(args.seconds), "--rounds",
                              str(args.rounds), *(["--vouchers", "100", "--providers", "5"] if args.quick else [])])
    if only & {"bulk", "settle"}:
        out["payments"] = part([
            str(HERE / "payments.py"), "--no-single", "--no-json-bulk", "--rounds", "1", "--seconds", "1",
            "--log-level", "warning", "--csv-lines", str(args.csv_lines if "bulk" in only else 0),
            "--raw-bulk-lines", str(args.csv_lines), "--charges", str(args.charges)])
    s, b = out.get("single", {}), out.get("payments", {})
    print("\nissue 19 item 5, each against its raw baseline in the same run "
          f"(load average {out['load_before']:.1f} -> {os.getloadavg()[0]:.1f}; a shared machine: see bench/README.md)")
    if s.get("single_ratio") is not None:
        cpu = s["cpu_ms_per_charge"]
        print(f"  single POST /charges, whole system: {s['payments_rps']:,.0f} / {s['raw_rps']:,.0f} charges/s = "
              f"ratio {s['single_ratio']:.2f} (target >= {TARGETS['single']}); p99 {s['payments_p99_ms']:.1f} ms "
              f"(target < {TARGETS['p99_ms']:.0f}; raw {s['raw_p99_ms']:.1f})")
        print(f"  CPU per accepted charge: {s['cpu_ms_per_charge_total']:.2f} ms (target <= {TARGETS['cpu_ms']}; raw "
              f"endpoint {s['raw_cpu_ms_per_charge']:.2f}): " + ", ".join(f"{k} {v:.3f}" for k, v in cpu.items()))
    if b.get("csv_ratio") is not None:
        print(f"  bulk intake, {b['csv_lines']:,}-line CSV streamed: {b['csv_rate']:,} / {b['bulk_raw_rate']:,} lines/s "
              f"(raw COPY) = ratio {b['csv_ratio']:.2f} (target >= {TARGETS['bulk']}); worker RSS "
              f"{b['csv_rss_before_mib']:.0f} -> at most {b['csv_rss_peak_mib']:.0f} MiB")
    if b.get("settle_ratio") is not None:
        print(f"  settlement of {b['settle_charges']:,} charges: {b['settle_seconds']:.1f} s / raw SQL "
              f"{b['settle_raw_seconds']:.1f} s = ratio {b['settle_ratio']:.2f} (targets < {TARGETS['settle_s']:.0f} s "
              f"and >= {TARGETS['settle']})")
    print(json.dumps(out))
    return max([0, *(x.get("exit_status", 0) for x in (s, b) if x)])


if __name__ == "__main__":
    sys.exit(main())
