"""The webhook signature as docs/webhooks.md writes it: its test vector is what payments' own signing
function makes, and the sample client's ``verify`` (written from the page) accepts exactly what it should."""
from __future__ import annotations

import re
from pathlib import Path

from payments.notices.notices import sign, verify as payments_verify
from seteli_client import webhooks

PAGE = (Path(__file__).resolve().parent.parent / "docs" / "webhooks.md").read_text()


def vector() -> dict[str, str]:
    return dict(re.findall(r"^    (secret|timestamp|body|header): +(.+)$", PAGE, re.MULTILINE))


def test_the_documented_vector_is_what_payments_signs():
    v = vector()
    assert set(v) == {"secret", "timestamp", "body", "header"}
    assert sign(v["secret"], int(v["timestamp"]), v["body"].encode()) == v["header"]
    second = re.search(r"`(whsec_second_secret_do_not_use)`.*?`v1=([0-9a-f]{64})`", PAGE, re.DOTALL)
    assert sign(second[1], int(v["timestamp"]), v["body"].encode()).endswith(f"v1={second[2]}")


def test_the_sample_client_verifies_as_the_page_says():
    v = vector()
    body, t = v["body"].encode(), int(v["timestamp"])
    assert webhooks.sign(v["secret"], t, body) == v["header"]
    assert webhooks.verify(v["secret"], v["header"], body, now=t + 300)
    assert payments_verify(v["secret"], v["header"], body, now=t + 300), "payments' own receiver agrees"
    assert not webhooks.verify(v["secret"], v["header"], body, now=t + 301), "older than 300 s: a replay"
    assert not webhooks.verify(v["secret"], v["header"], body + b" ", now=t), "the body exactly as received"
    assert not webhooks.verify("whsec_other", v["header"], body, now=t)
    assert webhooks.verify(["whsec_other", v["secret"]], v["header"], body, now=t), "during a rotation: either"
    both = v["header"] + ",v1=" + "0" * 64
    assert webhooks.verify(v["secret"], both, body, now=t), "one of several v1 values is enough"
    for broken in ("", "t=abc,v1=00", "v1=" + v["header"].split("v1=")[1], f"t={t}", "garbage"):
        assert not webhooks.verify(v["secret"], broken, body, now=t)


def test_the_command_line_checks_a_request(tmp_path):  # noqa: ANN001
    import subprocess
    import sys

    v = vector()
    tool = Path(sys.executable).parent / "seteli-verify-webhook"
    args = [str(tool), "--secret", v["secret"], "--signature", v["header"], "--now", v["timestamp"]]
    ok = subprocess.run(args, input=v["body"].encode(), capture_output=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.strip() == b"valid"
    bad = subprocess.run(args, input=v["body"].encode() + b"x", capture_output=True, timeout=60)
    assert bad.returncode == 1
