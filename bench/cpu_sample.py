"""CPU of a benchmark's processes, sampled (psutil): the seteli services serving on ports in ``--ports`` (their
process trees), the PostgreSQL backends serving databases whose name contains ``--db``, and the machine.
Prints one line every ``--every`` seconds (each group's CPU in cores over the interval) and a summary at the
end (Ctrl-C or SIGTERM, or ``--seconds``): answers whether a stage is CPU in Python, in PostgreSQL, or
waiting.

    .venv/bin/python bench/cpu_sample.py --ports 25000-25499 [--db seteli_bench_pay_] [--every 2] [--seconds 600]
"""
from __future__ import annotations

import argparse
import re
import signal
import time
from collections import defaultdict

import psutil


def _database_of(pid: int) -> str | None:
    """The database a service process was given (its ``DATABASE_URL``)."""
    try:
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"DATABASE_URL="):
            return item.decode(errors="replace").rsplit("/", 1)[-1].split("?")[0]
    return None


def groups(lo: int, hi: int, db: str) -> dict[int, str]:
    """pid -> group name for the processes of interest now: the services serving on ports ``lo``-``hi`` (and
    their children), the PostgreSQL backends of their databases (each service's ``DATABASE_URL``) or, with
    ``db``, of every database whose name contains it."""
    out: dict[int, str] = {}
    procs = list(psutil.process_iter(["pid", "cmdline", "name"]))
    dbs: dict[str, str] = {}
    for p in procs:
        text = " ".join(p.info["cmdline"] or [])
        m = re.search(r"seteli-(\w+) serve --port (\d+)", text)
        if m and lo <= int(m.group(2)) <= hi:
            out[p.info["pid"]] = m.group(1)
            name = _database_of(p.info["pid"])
            if name:
                dbs[name] = m.group(1)
            try:
                for child in p.children(recursive=True):
                    out[child.pid] = m.group(1)
            except psutil.Error:
                pass
    for p in procs:
        text = " ".join(p.info["cmdline"] or [])
        m = re.match(r"postgres: (?:\S+: )?\S+ (\S+) ", text)
        if m and (m.group(1) in dbs or (db and db in m.group(1))):
            out[p.info["pid"]] = "postgres:" + dbs.get(m.group(1), m.group(1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ports", default="25000-25499")
    ap.add_argument("--db", default="", help="also the backends of databases whose name contains this")
    ap.add_argument("--every", type=float, default=2.0)
    ap.add_argument("--seconds", type=float, default=3600)
    a = ap.parse_args()
    lo, hi = (int(x) for x in a.ports.split("-"))
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    last: dict[int, float] = {}
    totals: dict[str, float] = defaultdict(float)
    machine0 = psutil.cpu_times()
    t_start = t_prev = time.monotonic()
    try:
        while not stop[0] and time.monotonic() - t_start < a.seconds:
            time.sleep(a.every)
            now = time.monotonic()
            used: dict[str, float] = defaultdict(float)
            for pid, name in groups(lo, hi, a.db).items():
                try:
                    t = psutil.Process(pid).cpu_times()
                except psutil.Error:
                    continue
                c = t.user + t.system
                if pid in last:
                    used[name] += c - last[pid]
                last[pid] = c
            for k, v in used.items():
                totals[k] += v
            span = now - t_prev
            t_prev = now
            busy = " ".join(f"{k} {v / span:.2f}" for k, v in sorted(used.items()) if v > 0.005)
            print(f"{time.strftime('%H:%M:%S', time.gmtime())} load {psutil.getloadavg()[0]:.2f} cores: {busy}",
                  flush=True)
    except KeyboardInterrupt:
        pass
    m1 = psutil.cpu_times()
    span = time.monotonic() - t_start
    busy = sum(getattr(m1, f) - getattr(machine0, f) for f in ("user", "system", "nice", "irq", "softirq"))
    print(f"summary over {span:.0f} s: machine busy {busy / span:.2f} cores; " + ", ".join(
        f"{k} {v:.1f} s ({v / span:.2f} cores)" for k, v in sorted(totals.items(), key=lambda kv: -kv[1])),
        flush=True)


if __name__ == "__main__":
    main()
