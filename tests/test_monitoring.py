"""deploy/monitoring: the alerting rules pass ``promtool check rules`` and their unit tests on example series
(``promtool test rules``), the Prometheus configurations pass ``promtool check config``, the Grafana dashboards
are valid JSON as scripts/gen_dashboards.py writes them. (That every metric they name is one the services
expose: tests/test_metrics.py, on the running services.)

promtool comes with Debian's ``prometheus`` package (.ci/run installs it when missing); where it is not
installed the promtool tests skip, saying so."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "deploy" / "monitoring"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="no promtool: apt-get install prometheus")

#: a metric name in a PromQL expression: seteli's own and the client library's process figures
METRIC = re.compile(r"\b((?:seteli|process|python)_[a-zA-Z0-9_]+)\b")


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=MONITORING, capture_output=True, text=True, timeout=120)


@needs_promtool
def test_rules_pass_promtool_check():
    r = promtool("check", "rules", "rules.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 11 rules found" in r.stdout


@needs_promtool
def test_rules_pass_their_unit_tests():
    tests = sorted(str(p.relative_to(MONITORING)) for p in (MONITORING / "tests").glob("*.yml"))
    assert len(tests) >= 3
    r = promtool("test", "rules", *tests)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(tests), r.stdout


@needs_promtool
def test_every_alert_has_a_unit_test():
    alerts = {rule["alert"] for group in yaml.safe_load((MONITORING / "rules.yml").read_text())["groups"]
              for rule in group["rules"]}
    tested = {case["alertname"] for p in (MONITORING / "tests").glob("*.yml")
              for test in yaml.safe_load(p.read_text())["tests"] for case in test.get("alert_rule_test", [])}
    assert alerts - {"DeadLetterQueueNotEmpty"} <= tested, alerts - tested  # (that one waits a day)


@needs_promtool
def test_a_broken_expectation_fails(tmp_path):
    """The unit tests can fail: the guarantee's test expecting no alert where one fires is refused."""
    text = (MONITORING / "tests" / "payments.yml").read_text()
    broken = text.replace("      - eval_time: 620m  # past the mark, but not yet for 10 minutes",
                          "      - eval_time: 640m", 1).replace("../rules.yml", str(MONITORING / "rules.yml"))
    assert broken != text
    (tmp_path / "broken.yml").write_text(broken)
    r = subprocess.run([PROMTOOL, "test", "rules", str(tmp_path / "broken.yml")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and "PaymentGuaranteeAtRisk" in r.stdout + r.stderr


@needs_promtool
def test_local_prometheus_configuration_is_valid(tmp_path):
    r = promtool("check", "config", "prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    # the one `PROMETHEUS=1 make run` writes, for instances on other ports
    from .fleet import script

    run_all = script("run_all")
    config = tmp_path / "prometheus.yml"
    config.write_text(run_all.prometheus_config([("registry", "registry", "127.0.0.1:9001"),
                                                 ("payments", "payments#2", "127.0.0.1:9013")]))
    r = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert yaml.safe_load(config.read_text())["scrape_configs"][0]["static_configs"][1]["labels"] == {
        "service": "payments", "seteli_instance": "payments#2"}


def test_kubernetes_scrape_job_matches_the_manifests():
    """The Kubernetes scrape job keeps the pods annotated by gen_kubernetes.py and labels them with the name
    the manifests give them (Debian's promtool is built without Kubernetes discovery: checked here by reading)."""
    job = yaml.safe_load((MONITORING / "prometheus-kubernetes.yml").read_text())["scrape_configs"][0]
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == ["seteli"]
    sources = {s for r in job["relabel_configs"] for s in r["source_labels"]}
    manifests = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "small" / "3-services.yaml").read_text()))
    deployments = [m for m in manifests if m and m["kind"] == "Deployment"]
    assert len(deployments) == 5
    for d in deployments:
        pod = d["spec"]["template"]
        annotations, labels = pod["metadata"]["annotations"], pod["metadata"]["labels"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
        port = d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        assert annotations["prometheus.io/port"] == str(port)
        assert labels["app.kubernetes.io/name"] == d["metadata"]["name"]
    for key in ("prometheus.io/scrape", "prometheus.io/path", "prometheus.io/port", "app.kubernetes.io/name"):
        assert "__meta_kubernetes_pod_" + ("annotation_" if key.startswith("prometheus") else "label_") + \
            re.sub(r"[^a-zA-Z0-9]", "_", key) in sources, key


def test_dashboards_are_generated_valid_json():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_dashboards.py"), "--check"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    boards = sorted((MONITORING / "dashboards").glob("*.json"))
    assert [p.name for p in boards] == sorted(f"seteli-{s}.json" for s in (
        "registry", "vouchers", "payments", "reporting", "portal", "month-end"))
    for p in boards:
        board = json.loads(p.read_text())
        assert board["uid"] == p.stem and board["panels"]
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in board["panels"]:
            assert panel["targets"] and all(METRIC.search(t["expr"]) for t in panel["targets"]), panel["title"]


def metric_names_used() -> dict[str, set[str]]:
    """Every metric name the rules, their Prometheus configurations and the dashboards name, by file."""
    used: dict[str, set[str]] = {}
    rules = yaml.safe_load((MONITORING / "rules.yml").read_text())
    used["rules.yml"] = {m for g in rules["groups"] for r in g["rules"] for m in METRIC.findall(r["expr"])}
    for p in sorted((MONITORING / "dashboards").glob("*.json")):
        used[p.name] = {m for panel in json.loads(p.read_text())["panels"] for t in panel["targets"]
                        for m in METRIC.findall(t["expr"])}
    return used


def test_names_are_found_in_rules_and_dashboards():
    used = metric_names_used()
    assert "seteli_unpaid_charge_oldest_age_seconds" in used["rules.yml"]
    assert "seteli_charges_total" in used["seteli-payments.json"]
    assert all(used.values())
