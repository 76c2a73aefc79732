"""Free local ports for the tests, the benchmarks and local runs: one place for the rule.

``BENCH_PORTS=FIRST-LAST`` (e.g. ``20400-20499``) confines them to a range, for a machine whose users share out port
ranges; without it the kernel picks any free port. A port handed out is remembered for the life of the process, so
that two callers asking before either binds (a service and the broker node started next to it) never get the same
one. Ports from a range go bottom up, or top down with ``top_down`` (a broker node of the run's own takes its ports
from the top, so that they never meet the bottom-up ports of the services it serves).
"""
from __future__ import annotations

import os
import random
import socket

_taken: set[int] = set()


def port_range() -> range | None:
    """The ports ``BENCH_PORTS`` allows, or None when it is not set."""
    first, _, last = os.environ.get("BENCH_PORTS", "").partition("-")
    if not first or not last:
        return None
    try:
        return range(int(first), int(last) + 1)
    except ValueError:
        raise RuntimeError(f"BENCH_PORTS must be FIRST-LAST (e.g. 20400-20499), not {os.environ['BENCH_PORTS']!r}")


def _bindable(port: int, host: str) -> int | None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError:
            return None
        return s.getsockname()[1]


def free_port(host: str = "127.0.0.1", *, after: int = 0, top_down: bool = False) -> int:
    """A free port on ``host`` not handed out before in this process (above ``after`` when a range is set)."""
    allowed = port_range()
    # without a range the kernel picks: it may pick a port handed out earlier and closed since, so ask again
    candidates = [0] * 200 if allowed is None else (reversed(allowed) if top_down else allowed)
    for wanted in candidates:
        if wanted and (wanted in _taken or wanted <= after):
            continue
        port = _bindable(wanted, host)
        if port is not None and port not in _taken:
            _taken.add(port)
            return port
    raise RuntimeError(f"no free port in BENCH_PORTS={os.environ.get('BENCH_PORTS')}")


def free_port_base(count: int, host: str = "127.0.0.1") -> int:
    """A base port with ``count`` free ports after it (``base + 1`` .. ``base + count``: run_all's layout)."""
    allowed = port_range()
    if allowed is not None:
        bases = range(allowed.start, allowed.stop - count)
    else:  # below the ephemeral ports (32768-60999) that outgoing connections take
        bases = range(20000, 28000)
    for base in bases if allowed is not None else random.sample(bases, 200):
        ports = range(base + 1, base + count + 1)
        if not any(p in _taken for p in ports) and all(_bindable(p, host) for p in ports):
            _taken.update(ports)
            return base
    raise RuntimeError(f"no {count} free ports in a row{' in BENCH_PORTS' if allowed is not None else ''}")
