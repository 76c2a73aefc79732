"""Grafana dashboards of seteli (deploy/monitoring/dashboards/*.json): one per service and one for the month-end
flow, generated from the panels below so that they stay alike. ``--check`` fails when the committed files differ
(tests/test_monitoring.py runs it, and checks that every metric their queries name is one the services expose).

Every query selects by the ``service`` label the scrape configuration gives each target
(deploy/monitoring/prometheus.yml, deploy/monitoring/prometheus-kubernetes.yml). Import a file in Grafana
(Dashboards > New > Import) and pick the Prometheus data source."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "deploy" / "monitoring" / "dashboards"
SERVICES = ("registry", "vouchers", "payments", "reporting", "portal")
CONSUMERS = ("vouchers", "payments", "reporting")
DAY = 86400


def panel(title: str, *targets: tuple[str, str], unit: str = "short", kind: str = "timeseries",
          description: str = "", width: int = 12) -> dict:
    return {"type": kind, "title": title, "description": description, "width": width,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
                        for i, (expr, legend) in enumerate(targets)]}


def http_panels(s: str) -> list[dict]:
    sel = f'service="{s}"'
    return [
        panel("Requests by route and status",
              (f"sum by (route, status) (rate(seteli_http_requests_total{{{sel}}}[5m]))", "{{route}} {{status}}"),
              unit="reqps"),
        panel("Latency p95 by route",
              (f"histogram_quantile(0.95, sum by (le, route) "
               f"(rate(seteli_http_request_duration_seconds_bucket{{{sel}}}[5m])))", "{{route}}"), unit="s"),
        panel("5xx share", (f'sum(rate(seteli_http_requests_total{{{sel},status=~"5.."}}[5m])) / '
                            f"sum(rate(seteli_http_requests_total{{{sel}}}[5m]))", "5xx"), unit="percentunit",
              description="The HttpErrorRate alert fires above 5 % for 5 minutes."),
        panel("CPU and memory per instance", (f"rate(process_cpu_seconds_total{{{sel}}}[5m])", "CPU {{instance}}"),
              (f"process_resident_memory_bytes{{{sel}}} / 2^30", "GiB {{instance}}")),
    ]


def bus_panels(s: str) -> list[dict]:
    sel = f'service="{s}"'
    out = [
        panel("Outbox depth", (f"max(seteli_outbox_depth{{{sel}}})", "unsent events")),
        panel("Oldest unsent event", (f"max(seteli_outbox_oldest_age_seconds{{{sel}}})", "age"), unit="s",
              description="The OutboxStalled alert fires above 5 minutes."),
    ]
    if s in CONSUMERS:
        out += [
            panel("Consumer lag (messages ready)",
                  (f"max by (queue) (seteli_queue_messages_ready{{{sel}}})", "{{queue}}"),
                  (f"sum by (queue) (seteli_consumer_buffered_messages{{{sel}}})", "{{queue}} taken, not done")),
            panel("Messages consumed by outcome",
                  (f"sum by (outcome) (rate(seteli_consumer_messages_total{{{sel}}}[5m]))", "{{outcome}}"), unit="ops"),
            panel("Batch time p95",
                  (f"histogram_quantile(0.95, sum by (le, queue) "
                   f"(rate(seteli_consumer_batch_duration_seconds_bucket{{{sel}}}[5m])))", "{{queue}}"), unit="s"),
            panel("Dead letters", (f"sum by (reason) (increase(seteli_messages_dead_lettered_total{{{sel}}}[1h]))",
                                   "dead-lettered in 1 h: {{reason}}"),
                  (f"max by (queue) (seteli_dead_letter_queue_messages{{{sel}}})", "on {{queue}}.dlq")),
            panel("Inbox duplicates dropped", (f"sum(rate(seteli_inbox_duplicates_dropped_total{{{sel}}}[5m]))",
                                               "redeliveries"), unit="ops"),
        ]
    return out


def reporting_panels() -> list[dict]:
    sel = 'service="reporting"'
    return [
        panel("Latest event folded: how far behind now",
              (f"time() - max(seteli_reporting_latest_event_timestamp_seconds{{{sel}}})", "seconds behind"), unit="s",
              description="The time since the latest event reporting archived; while events still arrive, how far "
                          "behind the funders' reports are."),
    ]


def job_panels(s: str) -> list[dict]:
    sel = f'service="{s}"'
    return [
        panel("Scheduled job runs by outcome",
              (f"sum by (scheduled_job, outcome) (increase(seteli_job_runs_total{{{sel}}}[1h]))",
               "{{scheduled_job}} {{outcome}}")),
        panel("Scheduled jobs: behind their due time",
              (f"time() - max by (scheduled_job) (seteli_job_last_due_timestamp_seconds{{{sel}}})",
               "{{scheduled_job}}"),
              (f"max by (scheduled_job) (seteli_job_last_run_failed{{{sel}}})", "{{scheduled_job}} failed"), unit="s",
              description="ScheduledJobMissed fires when a job is an interval and 15 minutes late; "
                          "ScheduledJobFailed when its latest run failed."),
        panel("Scrape-time figures answering", (f"min by (source) (seteli_metrics_source_up{{{sel}}})", "{{source}}"),
              kind="stat", width=24),
    ]


def payments_panels() -> list[dict]:
    sel = 'service="payments"'
    return [
        panel("Charges by outcome", (f"sum by (outcome) (rate(seteli_charges_total{{{sel}}}[5m]))", "{{outcome}}"),
              unit="ops"),
        panel("Refused charges by reason",
              (f'sum by (reason) (increase(seteli_charges_total{{{sel},outcome="refused"}}[1h]))', "{{reason}}")),
        *guarantee_panels(),
        panel("Webhook deliveries by outcome",
              (f"sum by (outcome) (increase(seteli_webhook_deliveries_total{{{sel}}}[1h]))", "{{outcome}}")),
        panel("Notices parked", (f"max by (channel) (seteli_notices_parked{{{sel}}})", "{{channel}}")),
    ]


def guarantee_panels() -> list[dict]:
    sel = 'service="payments"'
    return [
        panel("Oldest unpaid charge vs the 14-day guarantee",
              (f"max(seteli_unpaid_charge_oldest_age_seconds{{{sel}}}) / {DAY}", "oldest unpaid (days)"),
              (f"max(seteli_payment_guarantee_seconds{{{sel}}}) / {DAY}", "guarantee (days)"),
              (f"(max(seteli_payment_guarantee_seconds{{{sel}}}) - 2 * {DAY}) / {DAY}", "alert (days)"),
              unit="d", description="PaymentGuaranteeAtRisk fires when the oldest unpaid charge is within two days "
                                    "of the guarantee."),
        panel("Charges at risk of missing the guarantee", (f"max(seteli_charges_at_risk{{{sel}}})", "at risk"),
              kind="stat", width=6),
        panel("Waiting under the minimum payout (EUR)",
              (f"max(seteli_payouts_below_minimum_cents{{{sel}}}) / 100", "EUR"),
              (f"max(seteli_payouts_below_minimum_groups{{{sel}}})", "provider-funder groups"), kind="stat", width=6),
    ]


def month_end_panels() -> list[dict]:
    pay = 'service="payments"'
    rep = 'service="reporting"'
    return [
        panel("Unpaid accepted charges", (f"max(seteli_unpaid_charges{{{pay}}})", "charges"),
              (f"max(seteli_unpaid_charges_cents{{{pay}}}) / 100", "EUR")),
        panel("Charges accepted and refused", (f"sum by (outcome) (rate(seteli_charges_total{{{pay}}}[5m]))",
                                               "{{outcome}}"), unit="ops"),
        *guarantee_panels(),
        panel("Settlement and other payments jobs",
              (f"sum by (scheduled_job, outcome) (increase(seteli_job_runs_total{{{pay}}}[1d]))",
               "{{scheduled_job}} {{outcome}}"),
              (f"max by (scheduled_job) (seteli_job_last_run_failed{{{pay}}})", "{{scheduled_job}} failed")),
        panel("Payments' outbox (settlement events and notices)", (f"max(seteli_outbox_depth{{{pay}}})", "unsent"),
              (f"max(seteli_outbox_oldest_age_seconds{{{pay}}})", "oldest (s)")),
        panel("Reporting folds the charge and settlement events",
              (f'sum(rate(seteli_consumer_messages_total{{{rep},outcome="processed"}}[5m]))', "processed / s"),
              (f"max(seteli_queue_messages_ready{{{rep}}})", "waiting"),
              (f"time() - max(seteli_reporting_latest_event_timestamp_seconds{{{rep}}})", "latest event (s ago)")),
        panel("Dead letters (all services)",
              ("sum by (service, reason) (increase(seteli_messages_dead_lettered_total[1h]))",
               "{{service}} {{reason}}"),
              ("sum by (service) (seteli_dead_letter_queue_messages)", "{{service}} on the DLQ")),
        panel("Webhook deliveries and parked notices",
              (f"sum by (outcome) (increase(seteli_webhook_deliveries_total{{{pay}}}[1h]))", "{{outcome}}"),
              (f"sum(seteli_notices_parked{{{pay}}})", "parked")),
    ]


def dashboard(uid: str, title: str, description: str, panels: list[dict]) -> dict:
    placed, x, y, row_height = [], 0, 0, 8
    for i, p in enumerate(panels, start=1):
        width = p.pop("width")
        if x + width > 24:
            x, y = 0, y + row_height
        placed.append({"id": i, **p, "gridPos": {"h": row_height, "w": width, "x": x, "y": y}})
        x += width
    return {
        "uid": uid, "title": title, "description": description, "tags": ["seteli"], "editable": True,
        "schemaVersion": 39, "version": 1, "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
        "timezone": "utc", "graphTooltip": 1,
        "templating": {"list": [{"name": "datasource", "label": "Prometheus", "type": "datasource",
                                 "query": "prometheus", "current": {}, "hide": 0}]},
        "annotations": {"list": []},
        "panels": placed,
    }


def render() -> dict[Path, str]:
    out = {}
    for s in SERVICES:
        if s == "portal":  # pages only: no outbox, queue or scheduled job of its own
            panels, what = http_panels(s), "pages by route, latency, errors"
        else:
            own = payments_panels() if s == "payments" else reporting_panels() if s == "reporting" else []
            panels = http_panels(s) + bus_panels(s) + own + job_panels(s)
            what = "HTTP, outbox, consumers, jobs" + (", charges, the guarantee, webhooks" if s == "payments" else "")
        board = dashboard(f"seteli-{s}", f"seteli {s}", f"The {s} service: {what}", panels)
        out[OUT / f"seteli-{s}.json"] = json.dumps(board, indent=2, ensure_ascii=False) + "\n"
    board = dashboard("seteli-month-end", "seteli month end", "The month-end flow: charges in, settlement against "
                      "the 14-day guarantee and the minimum payout, events to reporting, notices to providers",
                      month_end_panels())
    out[OUT / "seteli-month-end.json"] = json.dumps(board, indent=2, ensure_ascii=False) + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail when the committed files differ")
    args = parser.parse_args(argv)
    files = render()
    if args.check:
        stale = [str(p.relative_to(ROOT)) for p, text in files.items() if not p.exists() or p.read_text() != text]
        known = {p.name for p in files}
        extra = [str(p.relative_to(ROOT)) for p in OUT.glob("*.json") if p.name not in known]
        if stale or extra:
            print("dashboards differ from scripts/gen_dashboards.py: " + ", ".join(stale + extra)
                  + "; run .venv/bin/python scripts/gen_dashboards.py", file=sys.stderr)
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
