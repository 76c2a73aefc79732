"""``seteli-ops`` against a running service (uvicorn in this process) on the real RabbitMQ and PostgreSQL: a dead
letter listed and shown in Rich tables, replayed by a filter once its prerequisite exists (taking effect once), a
second replay refused with its reason; the jobs table."""
from __future__ import annotations

import asyncio
import socket

import uvicorn
from sqlalchemy import text
from typer.testing import CliRunner

from seteli_shared.auth import mint
from seteli_shared.ops_cli import app as cli
from seteli_shared.testing import eventually

from .test_dead_letters import _dead, _effects, _publish, _registered, ops  # noqa: F401  (the fixture)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _ops(url: str, *args: str):  # noqa: ANN202
    """The command's result, run as an operator would (in a thread: it makes its own HTTP calls)."""
    env = {"SETELI_VOUCHERS_URL": url, "SETELI_TOKEN": mint("ops-cli-test", ["operator"]), "COLUMNS": "250"}
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env)


async def test_the_cli_lists_shows_and_replays_a_dead_letter_once(ops):  # noqa: ANN001, F811
    app, client, bus = ops
    port = _port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, timeout=10)
        url = f"http://127.0.0.1:{port}"
        env = _registered("091")
        await _publish(bus, env)
        await _dead(client, 1)

        listed = await _ops(url, "dead-letters", "list", "-s", "vouchers")
        assert listed.exit_code == 0, listed.output
        assert "dead-letter queues" in listed.output and f"{app.state.settings.queue_name}.dlq" in listed.output
        assert env.id in listed.output and "prerequisite missing" in listed.output
        shown = await _ops(url, "dead-letters", "show", env.id, "-s", "vouchers")
        assert shown.exit_code == 0, shown.output
        assert "header traceparent" in shown.output and "Testikunta" not in shown.output

        async with app.state.runtime.engine.begin() as conn:
            await conn.execute(text("INSERT INTO ops_prereq VALUES ('091')"))
        replayed = await _ops(url, "dead-letters", "replay", "--reason", "prerequisite", "-s", "vouchers")
        assert replayed.exit_code == 0, replayed.output
        assert "1 replayed" in replayed.output
        await eventually(lambda: _effects(app), timeout=10)
        again = await _ops(url, "dead-letters", "replay", env.id, "-s", "vouchers")
        assert again.exit_code == 1 and "404" in again.output and "dead_letter_not_found" in again.output
        await asyncio.sleep(0.5)
        assert await _effects(app) == [(env.id, "091")]

        refused = await _ops(url, "dead-letters", "replay", "-s", "vouchers")  # no id, no filter, no --all
        assert refused.exit_code != 0 and "--all" in refused.output
        audit = (await client.get("/audit")).json()["items"]
        assert [(a["action"], a["actor"]) for a in audit if a["action"].startswith("dead_letter")] == [
            ("dead_letter.replay", "ops-cli-test")]
        jobs = await _ops(url, "jobs", "-s", "vouchers")
        assert jobs.exit_code == 0 and "scheduled jobs" in jobs.output, jobs.output
    finally:
        server.should_exit = True
        await serving
