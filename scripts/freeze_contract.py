"""Freeze the bus contract of a release: the JSON schemas of the CloudEvents envelope and of every event's ``data``
as ``shared/src/seteli_shared/events.py`` defined them at that commit, into docs/contract-releases/<commit>.json.

The rolling-update test (tests/test_rolling_update.py) checks this release's events against the frozen contract
of the previous release in both directions (what the previous release's consumers accept, what its producers
send), so that one service can be updated while the others still run the previous release. When a release is
cut, freeze it and point ``PREVIOUS_RELEASE`` at it:

    .venv/bin/python scripts/freeze_contract.py 4a412e4      # writes docs/contract-releases/4a412e4.json
    .venv/bin/python scripts/freeze_contract.py --check      # the frozen file is what that commit gives

It reads the commit with ``git show`` (the repository's history is needed to freeze, not to test).
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASES = ROOT / "docs" / "contract-releases"
#: the last release that landed before this one: the running services an update meets
PREVIOUS_RELEASE = "4a412e4"
EVENTS_PATH = "shared/src/seteli_shared/events.py"


def events_module_at(commit: str, name: str = "seteli_shared._events_at_release"):  # noqa: ANN201
    """``events.py`` as it was at ``commit``, imported as a module of the ``seteli_shared`` package (so that its
    relative imports of the package's helpers work) under a name of its own: its ``Event`` classes are not
    the current ones and register nothing in the current ``Event.registry``. Raises ``LookupError`` when git
    or the commit is not available (a shallow clone)."""
    try:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{EVENTS_PATH}"], capture_output=True,
                                text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise LookupError(f"commit {commit} is not in this clone's history") from exc
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=None)
        module = importlib.util.module_from_spec(spec)
        module.__package__ = "seteli_shared"
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        finally:
            sys.modules.pop(name, None)
    return module


def contract_of(module, commit: str) -> dict:  # noqa: ANN001
    """The envelope's schema and each event type's ``data`` schema (what a consumer of that release validates)."""
    return {
        "release": commit,
        "envelope": module.Envelope.model_json_schema(),
        "events": {cls.event_type(): cls.model_json_schema() for cls in module.Event.registry.values()},
    }


def render(contract: dict) -> str:
    return json.dumps(contract, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def frozen(commit: str = PREVIOUS_RELEASE) -> dict:
    return json.loads((RELEASES / f"{commit}.json").read_text())


def main(argv: list[str]) -> int:
    check = "--check" in argv
    commits = [a for a in argv if not a.startswith("--")] or [PREVIOUS_RELEASE]
    for commit in commits:
        text = render(contract_of(events_module_at(commit), commit))
        target = RELEASES / f"{commit}.json"
        if check:
            if not target.exists() or target.read_text() != text:
                print(f"{target.relative_to(ROOT)} is not what commit {commit} gives: run scripts/freeze_contract.py "
                      f"{commit}", file=sys.stderr)
                return 1
            continue
        RELEASES.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
