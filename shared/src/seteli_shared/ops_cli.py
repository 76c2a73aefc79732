"""``seteli-ops``: the operator's tool for dead letters, parked notices and scheduled jobs, over the services'
operator endpoints (``/ops/dead-letters``, ``/notices/parked``, ``/health/jobs``; every action is recorded in the
service's audit trail under the token's subject).

Where the services are: ``SETELI_<SERVICE>_URL`` (e.g. ``SETELI_PAYMENTS_URL=https://payments.example``), else
``http://127.0.0.1:<port>`` as ``make run`` serves them. The operator's bearer token: ``--token`` or
``SETELI_TOKEN`` (in development: ``export SETELI_TOKEN=$(seteli-token --role operator)``).

    seteli-ops dead-letters list                       every consuming service's dead-letter queues and letters
    seteli-ops dead-letters show ID -s payments        one letter: reason, attempts, headers (never its body)
    seteli-ops dead-letters replay ID -s payments      back to its consumer (its inbox drops one already done)
    seteli-ops dead-letters replay --reason prerequisite -s payments     all whose reason contains it
    seteli-ops dead-letters replay --all               every dead letter of every consuming service
    seteli-ops dead-letters discard ID -s payments --yes
    seteli-ops notices list | show ID | retry [ID | --provider P | --all] | discard ID --yes
    seteli-ops jobs                                    each service's scheduled jobs and their latest runs
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Annotated, Any, Optional

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .manifest import BY_NAME, NAMES

app = typer.Typer(help="The operator's tool: dead letters, parked notices, scheduled jobs.", no_args_is_help=True,
                  add_completion=False)
dead_letters = typer.Typer(help="Dead-lettered messages of the services' consumers.", no_args_is_help=True)
notices = typer.Typer(help="Settlement notices nobody could receive (payments).", no_args_is_help=True)
app.add_typer(dead_letters, name="dead-letters")
app.add_typer(notices, name="notices")
console = Console()
#: the services with consumers (dead-letter queues); the registry consumes nothing
CONSUMING = ("vouchers", "payments", "reporting")
_state: dict[str, Any] = {"token": None, "timeout": 30.0}

Service = Annotated[Optional[list[str]], typer.Option("--service", "-s", help="a service (repeat for several; "
                                                      "default: every consuming one)")]


def url_of(service: str) -> str:
    if service not in NAMES:
        raise typer.BadParameter(f"no service {service!r} (one of {', '.join(NAMES)})")
    return os.environ.get(f"SETELI_{service.upper()}_URL", f"http://127.0.0.1:{BY_NAME[service].port}").rstrip("/")


def _client(service: str) -> httpx.Client:
    token = _state["token"] or os.environ.get("SETELI_TOKEN")
    if not token:
        console.print("[red]no token[/red]: give --token or set SETELI_TOKEN "
                      "(development: export SETELI_TOKEN=$(seteli-token --role operator))")
        raise typer.Exit(2)
    return httpx.Client(base_url=url_of(service), headers={"Authorization": f"Bearer {token}"},
                        timeout=_state["timeout"])


def call(service: str, method: str, path: str, *, missing_ok: bool = False, **kwargs: Any) -> Any:
    """The answer's JSON; a refusal is printed with its reason and ends the command (exit 1). ``missing_ok``:
    a 404 answers None."""
    try:
        with _client(service) as client:
            r = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        console.print(f"[red]{service}[/red] at {url_of(service)}: {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from exc
    if missing_ok and r.status_code == 404:
        return None
    if r.status_code >= 400:
        try:
            error = r.json()["error"]
            text = f"{error['reason']}: {error.get('message', '')}"
        except (ValueError, KeyError, TypeError):
            text = r.text[:300]
        console.print(f"[red]{service}: {r.status_code}[/red] {text}")
        raise typer.Exit(1)
    return r.json()


@app.callback()
def main(token: Annotated[Optional[str], typer.Option(help="the operator's bearer token (else SETELI_TOKEN)")] = None,
         timeout: Annotated[float, typer.Option(help="seconds to wait for each answer")] = 30.0) -> None:
    _state["token"], _state["timeout"] = token, timeout


def _services(given: list[str] | None) -> list[str]:
    return list(given or CONSUMING)


def _short(text: str | None, n: int = 60) -> str:
    text = text or ""
    return text if len(text) <= n else text[:n - 1] + "…"


# ------------------------------------------------------------------ dead letters
@dead_letters.command("list")
def list_dead_letters(service: Service = None, queue: Optional[str] = None, type: Optional[str] = None,  # noqa: A002
                      reason: Optional[str] = None, limit: int = 100) -> None:
    """The dead-letter queues with their counts, and the letters matching the filter (oldest first)."""
    params = {k: v for k, v in {"queue": queue, "type": type, "reason": reason, "limit": limit}.items() if v}
    counts = Table(title="dead-letter queues")
    for column in ("service", "queue", "dead-letter queue", "messages"):
        counts.add_column(column, justify="right" if column == "messages" else "left")
    letters = Table(title="dead letters")
    for column in ("service", "id", "type", "reason", "attempts", "replays", "dead-lettered at"):
        letters.add_column(column, overflow="fold")
    for name in _services(service):
        body = call(name, "GET", "/ops/dead-letters", params=params)
        for q in body["queues"]:
            counts.add_row(name, q["queue"], q["dead_letter_queue"], str(q["messages"]))
        for x in body["items"]:
            letters.add_row(name, x["id"], _short(x["type"], 40), _short(x["reason"]), str(x["attempts"]),
                            str(x["replays"]), x["dead_lettered_at"] or "")
    console.print(counts)
    console.print(letters)


@dead_letters.command("show")
def show_dead_letter(message_id: str, service: Annotated[str, typer.Option("--service", "-s")]) -> None:
    """One dead letter: identity, reason, attempts and headers (never its body)."""
    x = call(service, "GET", f"/ops/dead-letters/{message_id}")
    table = Table(title=f"dead letter {x['id']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key in ("id", "type", "queue", "dead_letter_queue", "routing_key", "correlation_id", "reason", "attempts",
                "replays", "dead_lettered_at", "body_bytes"):
        table.add_row(key, str(x[key]) if x[key] is not None else "")
    for key, value in sorted(x["headers"].items()):
        table.add_row(f"header {key}", _short(str(value), 100))
    console.print(table)


def _act(action: str, message_id: str | None, services: list[str], queue: str | None, type_: str | None,
         reason: str | None, every: bool) -> None:
    verb = "replayed" if action == "replay" else "discarded"
    if message_id is not None:
        if len(services) != 1:
            raise typer.BadParameter("name the service of the message (--service)")
        done = [(services[0], call(services[0], "POST", f"/ops/dead-letters/{message_id}/{action}"))]
    else:
        if not (every or queue or type_ or reason):
            raise typer.BadParameter("name a message id, --queue, --type or --reason, or give --all")
        selection = {"queue": queue, "type": type_, "reason": reason, "all": every}
        done = []
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task(f"{action} dead letters", total=len(services))
            for name in services:
                progress.update(task, description=f"{action}: {name}")
                done.append((name, call(name, "POST", f"/ops/dead-letters/{action}", json=selection)))
                progress.advance(task)
    table = Table(title=f"{verb}")
    for column in ("service", "id", "type", "queue", "reason"):
        table.add_column(column)
    for name, acted in done:
        for x in acted["items"]:
            table.add_row(name, x["id"], _short(x["type"], 40), x["queue"], _short(x["reason"]))
    console.print(table)
    console.print(f"{sum(a['count'] for _, a in done)} {verb}")


@dead_letters.command("replay")
def replay(message_id: Annotated[Optional[str], typer.Argument()] = None, service: Service = None,
           queue: Optional[str] = None, type: Optional[str] = None, reason: Optional[str] = None,  # noqa: A002
           all_: Annotated[bool, typer.Option("--all", help="every dead letter of the services")] = False) -> None:
    """Put dead letters back on their consumers' queues (one, those matching a filter, or all). A message its
    consumer has processed already is dropped by its inbox: a replay takes effect at most once."""
    _act("replay", message_id, _services(service), queue, type, reason, all_)


@dead_letters.command("discard")
def discard(message_id: Annotated[Optional[str], typer.Argument()] = None, service: Service = None,
            queue: Optional[str] = None, type: Optional[str] = None, reason: Optional[str] = None,  # noqa: A002
            all_: Annotated[bool, typer.Option("--all", help="every dead letter of the services")] = False,
            yes: Annotated[bool, typer.Option("--yes", help="no question")] = False) -> None:
    """Drop dead letters for good (one, those matching a filter, or all)."""
    if not yes:
        typer.confirm("Discard for good?", abort=True)
    _act("discard", message_id, _services(service), queue, type, reason, all_)


# ------------------------------------------------------------------ parked notices (payments)
def _notice_table(items: list[dict], title: str) -> Table:
    table = Table(title=title)
    for column in ("id", "channel", "provider", "type", "subject", "attempts", "reason", "created at"):
        table.add_column(column)
    for n in items:
        table.add_row(n["id"], n["channel"], n["provider_id"], _short(n["notice_type"], 40), n["subject"],
                      str(n["attempts"]), _short(n["reason"], 40), n["created_at"])
    return table


@notices.command("list")
def list_notices(provider: Optional[str] = None) -> None:
    """The parked notices, oldest first (every page)."""
    items, cursor = [], None
    while True:
        params = {k: v for k, v in {"provider_id": provider, "cursor": cursor, "limit": 500}.items() if v}
        page = call("payments", "GET", "/notices/parked", params=params)
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    console.print(_notice_table(items, f"parked notices: {len(items)}"))


@notices.command("show")
def show_notice(notice_id: str) -> None:
    """One parked notice (never its body)."""
    console.print(_notice_table([call("payments", "GET", f"/notices/parked/{notice_id}")], "parked notice"))


@notices.command("retry")
def retry_notices(notice_id: Annotated[Optional[str], typer.Argument()] = None, provider: Optional[str] = None,
                  all_: Annotated[bool, typer.Option("--all")] = False) -> None:
    """Try parked notices again now: one, one provider's, or all."""
    if notice_id is not None:
        acted = call("payments", "POST", f"/notices/parked/{notice_id}/retry")
        console.print(_notice_table([acted["notice"]], "retried"))
        return
    if not (provider or all_):
        raise typer.BadParameter("name a notice id or --provider, or give --all")
    retried = call("payments", "POST", "/notices/parked/retry", params={"provider_id": provider} if provider else {})
    console.print(f"retried: {retried['queue']} queue notice(s), {retried['webhook']} webhook delivery(ies)")


@notices.command("discard")
def discard_notice(notice_id: str, yes: Annotated[bool, typer.Option("--yes")] = False) -> None:
    """Give one parked notice up for good."""
    if not yes:
        typer.confirm("Discard for good?", abort=True)
    acted = call("payments", "POST", f"/notices/parked/{notice_id}/discard")
    console.print(_notice_table([acted["notice"]], "discarded"))


# ------------------------------------------------------------------ long jobs
def follow_job(service: str, job_id: str, interval: float = 0.5, appear_within: float = 30.0) -> dict:
    """Draw the job's progress (``GET /jobs/{id}``) until it ends; its last state."""
    waited = 0.0
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task(f"{service}: waiting for job {job_id}", total=None)
        while True:
            job = call(service, "GET", f"/jobs/{job_id}", missing_ok=True)
            if job is None:
                if waited >= appear_within:
                    console.print(f"[red]{service}: no job {job_id}[/red]")
                    raise typer.Exit(1)
            else:
                bar.update(task, description=f"{service}: {job['kind']} ({job['outcome']})", total=job["total"],
                           completed=job["done"])
                if job["outcome"] != "running":
                    break
            time.sleep(interval)
            waited += interval
    colour = "green" if job["outcome"] == "ok" else "red"
    console.print(f"[{colour}]{job['kind']} {job['outcome']}[/{colour}]: {job['done']} of {job['total']} item(s)"
                  + (f", {job['detail']}" if job.get("detail") else ""))
    return job


@app.command("follow")
def follow(job_id: str, service: Annotated[str, typer.Option("--service", "-s")],
           interval: float = 0.5) -> None:
    """Follow a long job (a settlement run, a bulk import, a reporting rebuild) by its id: the X-Correlation-ID
    of the request that started it, or the id ``seteli-reporting rebuild`` prints."""
    job = follow_job(service, job_id, interval)
    if job["outcome"] != "ok":
        raise typer.Exit(1)


@app.command("settle")
def settle(interval: float = 0.5) -> None:
    """Run an operator's settlement run now (everything accepted is settled) and follow its progress."""
    job_id = str(uuid.uuid4())
    result: dict[str, Any] = {}

    def start() -> None:
        try:
            result["settlements"] = call("payments", "POST", "/settlements/run",
                                         headers={"X-Correlation-ID": job_id})
        except typer.Exit as exc:
            result["exit"] = exc

    worker = threading.Thread(target=start, daemon=True)
    worker.start()
    job = follow_job("payments", job_id, interval)
    worker.join()
    if "exit" in result:
        raise result["exit"]
    table = Table(title=f"settlement run (job {job_id})")
    for column in ("settlement", "funder", "provider", "charges", "net EUR"):
        table.add_column(column, justify="right" if column in ("charges", "net EUR") else "left")
    for s in result["settlements"]:
        table.add_row(s["id"], s["funder_id"], s["provider_id"], str(s["charge_count"]), f"{s['net_cents'] / 100:.2f}")
    console.print(table)
    if job["outcome"] != "ok":
        raise typer.Exit(1)


# ------------------------------------------------------------------ scheduled jobs
@app.command("jobs")
def jobs(service: Annotated[Optional[list[str]], typer.Option("--service", "-s")] = None) -> None:
    """Each service's scheduled jobs: who holds each, its latest run's outcome and duration, the next due time."""
    table = Table(title="scheduled jobs")
    for column in ("service", "job", "schedule", "held by", "last due", "outcome", "detail", "ms", "next due"):
        table.add_column(column)
    for name in service or [n for n in NAMES if BY_NAME[n].kind == "service"]:
        for j in call(name, "GET", "/health/jobs")["jobs"]:
            last = j["last_run"] or {}
            outcome = last.get("outcome") or ""
            style = {"ok": "green", "failed": "red", "running": "yellow"}.get(outcome, "")
            table.add_row(name, j["name"], j["schedule"], _short(j["holder"], 30), last.get("due_at") or "",
                          f"[{style}]{outcome}[/{style}]" if style else outcome, last.get("detail") or "",
                          str(last.get("duration_ms") or ""), j["next_due_at"] or "")
    console.print(table)


def run() -> None:
    app()


if __name__ == "__main__":
    run()
