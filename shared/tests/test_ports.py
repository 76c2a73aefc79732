"""The one free-port rule of the tests, benchmarks and local runs (seteli_shared.ports)."""
from __future__ import annotations

import socket

import pytest

from seteli_shared import ports


def test_ports_handed_out_are_free_and_never_twice(monkeypatch):
    monkeypatch.delenv("BENCH_PORTS", raising=False)
    got = [ports.free_port() for _ in range(20)]
    assert len(set(got)) == 20
    with socket.socket() as s:
        s.bind(("127.0.0.1", got[-1]))  # still free: handed out, not held


def test_bench_ports_confines_them_bottom_up_or_top_down_and_says_when_none_is_left(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        held = s.getsockname()[1]
        first = held - 2 if held > 3000 else held
        monkeypatch.setenv("BENCH_PORTS", f"{first}-{first + 5}")
        bottom = ports.free_port()
        top = ports.free_port(top_down=True)
        assert first <= bottom < top <= first + 5 and held not in (bottom, top)
        assert ports.free_port(after=first + 3) > first + 3
        rest = []
        with pytest.raises(RuntimeError, match="no free port in BENCH_PORTS"):
            for _ in range(6):
                rest.append(ports.free_port())
        assert held not in rest


def test_a_base_has_its_run_of_free_ports_after_it(monkeypatch):
    monkeypatch.delenv("BENCH_PORTS", raising=False)
    base = ports.free_port_base(5)
    assert 20000 <= base < 28000
    for p in range(base + 1, base + 6):
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))
    assert ports.free_port_base(5) not in range(base - 4, base + 5)


def test_a_malformed_range_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("BENCH_PORTS", "low-high")
    with pytest.raises(RuntimeError, match="BENCH_PORTS must be FIRST-LAST"):
        ports.free_port()


def test_a_port_the_kernel_picks_again_after_handing_it_out_is_not_handed_out_twice(monkeypatch):
    """Without a range the kernel picks; once a port handed out is closed it may pick that one again."""
    monkeypatch.delenv("BENCH_PORTS", raising=False)
    first = ports.free_port()
    picks = iter([first, first, None])
    real = ports._bindable
    monkeypatch.setattr(ports, "_bindable", lambda wanted, host: next(picks, None) or real(wanted, host))
    second = ports.free_port()
    assert second != first
