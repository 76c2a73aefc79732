"""The published bus and HTTP contracts are generated from the code and cannot drift."""
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_committed_contract_documents_match_the_code(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_contracts.py"), "--check"],
                       capture_output=True, text=True, env={"DATA_DIR": str(tmp_path), "PATH": ""})
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_event_has_a_documented_channel_and_schema():
    from seteli_shared.events import ALL_EVENTS

    doc = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
    for ev in ALL_EVENTS:
        channel = doc["channels"][ev.routing_key()]
        schema = doc["components"]["messages"][ev.__name__]["payload"]
        assert schema["properties"]["type"]["const"] == ev.event_type()
        assert set(ev.model_fields) <= set(schema["properties"]["data"]["properties"])
        assert channel["bindings"]["amqp"]["exchange"]["type"] == "topic"
