"""scripts/walk_flow.py with the system down says so in one line, not with a traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from seteli_shared.ports import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_walk_flow_with_the_system_down_says_to_start_it_first():
    registry = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "REGISTRY_URL": registry, **{f"{name}_URL": f"http://127.0.0.1:{free_port()}"
                                                      for name in ("VOUCHERS", "PAYMENTS", "REPORTING")}}
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "walk_flow.py")], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 1
    assert "Traceback" not in r.stdout + r.stderr
    assert r.stdout == ""
    assert r.stderr.strip() == f"the services are not answering at {registry} — start `make run` first"
