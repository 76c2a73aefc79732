"""Property-based API tests: schemathesis generates requests from each service's own OpenAPI document
(valid and invalid bodies, parameters and headers) and sends them to the running service, as
operator staff and as a funder's and a provider's staff. No request may give a 5xx, and every
response must match what the document says (status codes, content types, body schemas).

Every operation of every service is tested (the report must name each one), with a bounded number of
examples per operation (``SETELI_FUZZ_EXAMPLES``, 15; the coverage phase adds the boundary cases of every
parameter): the three callers of a service run side by side, about 20-40 s a service on 2 cores. A deeper
run (``SETELI_FUZZ_EXAMPLES=300``) is for a developer's machine, not CI.

The four services run as processes on PostgreSQL and RabbitMQ (the ``system`` fixture)."""
from __future__ import annotations

import asyncio
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest

from seteli_shared.auth import mint
from seteli_shared.manifest import NAMES

ST = Path(sys.executable).parent / "st"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
CALLERS = {
    "operator": mint("fuzz:operator", ["operator"]),
    "funder": mint("fuzz:funder", ["funder_decision_maker", "funder_provider_approver", "funder_finance"],
                   funder_id="091"),
    "provider": mint("fuzz:provider", ["provider_manager", "provider_charger"], provider_id="fuzz-provider"),
}
MAX_EXAMPLES = int(os.environ.get("SETELI_FUZZ_EXAMPLES", "15"))  # more for a deeper run


async def _fuzz(url: str, caller: str, report: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(ST), "run", f"{url}/openapi.json", "--url", url, "--checks", CHECKS,
        "--header", f"Authorization: Bearer {CALLERS[caller]}",
        "--max-examples", str(MAX_EXAMPLES), "--seed", "20261125", "--workers", "1",  # 2 workers crash the generator on CPython 3.11 (gh-106905)
        "--phases", "examples,coverage,fuzzing", "--generation-allow-x00", "true",
        "--report", "junit", "--report-junit-path", str(report),
        "--no-color", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=report.parent,
    )
    out, _ = await proc.communicate()
    return proc.returncode, out.decode(errors="replace")


def _tested_operations(report: Path) -> set[str]:
    """The operations the junit report has a test case of that ran (``GET /charges`` ...), not skipped."""
    return {case.get("name", "") for case in ET.parse(report).getroot().iter("testcase")
            if case.find("skipped") is None}


@pytest.mark.parametrize("service", NAMES)
async def test_no_server_errors_and_every_response_as_documented(system, service, tmp_path):  # noqa: ANN001
    url = system.urls[service]
    async with httpx.AsyncClient() as client:
        document = (await client.get(f"{url}/openapi.json")).json()
    operations = {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item}
    reports = {caller: tmp_path / caller / "report.xml" for caller in CALLERS}
    for report in reports.values():
        report.parent.mkdir()
    results = await asyncio.gather(*(_fuzz(url, caller, reports[caller]) for caller in CALLERS))
    for caller, (returncode, text) in zip(CALLERS, results):
        assert returncode == 0, f"{service} as {caller}:\n{text[-6000:]}"
        tested = _tested_operations(reports[caller])
        assert operations <= tested, f"{service} as {caller}: not tested: {sorted(operations - tested)}"
