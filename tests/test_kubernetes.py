"""The Kubernetes deployment (deploy/kubernetes/<profile>/) is current, valid, and agrees with the code.

The committed files are read as an operator would apply them, and checked against what the services really
are: the service manifest (names, ports, which have a database), each settings class (every environment
variable a field; production settings complete), each app's health routes, the broker definitions that
deploy/rabbitmq/definitions.json is generated from, and the Dockerfile's user. Every document is validated
offline: built-in kinds with kubernetes-validate's schemas of ``KUBERNETES_VERSION``, custom resources with
the openAPIV3Schema of their CRDs kept in deploy/kubernetes/crds/. Last, each pod's own command is run here
with its own environment against the real PostgreSQL and RabbitMQ: the migration Job migrates an empty
database, and the server then answers its probes on the port the manifest gives it.
"""
from __future__ import annotations

import asyncio
import copy
import importlib
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
import yaml

from seteli_shared.broker import USER_TEMPLATES, definitions
from seteli_shared.manifest import BY_NAME, EVERYTHING, NAMES, WITH_DATABASE

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import gen_kubernetes as gen  # noqa: E402
import k8s_schemas  # noqa: E402
from seteli_shared.ports import free_port as _free_port  # noqa: E402

DEPLOY = ROOT / "deploy" / "kubernetes"
PROFILES = ("small", "large")
STAGES = ("0-namespace.yaml", "1-platform.yaml", "2-migrate.yaml", "3-services.yaml")
ALL = [s.name for s in EVERYTHING]


# ------------------------------------------------------------------ reading what is committed

def _load(profile: str, stage: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / profile / stage).read_text(encoding="utf-8")) if d]


DOCS = {p: {s: _load(p, s) for s in STAGES} for p in PROFILES}


def docs(profile: str, kind: str | None = None) -> list[dict]:
    out = [d for stage in STAGES for d in DOCS[profile][stage]]
    return [d for d in out if kind is None or d["kind"] == kind]


def one(profile: str, kind: str, name: str) -> dict:
    found = [d for d in docs(profile, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{profile}: {kind}/{name} found {len(found)} times"
    return found[0]


def names(profile: str, kind: str) -> set[str]:
    return {d["metadata"]["name"] for d in docs(profile, kind)}


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def main_container(doc: dict) -> dict:
    containers = pod_spec(doc)["containers"]
    assert len(containers) == 1, doc["metadata"]["name"]
    return containers[0]


def settings_class(name: str):  # noqa: ANN201
    return getattr(importlib.import_module(f"{name}.settings"), f"{name.capitalize()}Settings")


def configmap_env(profile: str, container: dict) -> dict[str, str]:
    out = {}
    for source in container.get("envFrom", []):
        out.update(one(profile, "ConfigMap", source["configMapRef"]["name"])["data"])
    return out


def the_jobs(profile: str) -> dict[str, dict]:
    return {d["metadata"]["labels"]["app.kubernetes.io/name"]: d for d in docs(profile, "Job")}


# ------------------------------------------------------------------ current and valid

def test_the_committed_manifests_are_what_the_generator_makes_now():
    stale = [str(path.relative_to(ROOT)) for path, text in gen.render().items()
             if not path.exists() or path.read_text(encoding="utf-8") != text]
    assert not stale, f"run .venv/bin/python scripts/gen_kubernetes.py: {stale} differ"
    assert sorted(p.name for p in DEPLOY.iterdir() if p.is_dir() and p.name != "crds") == sorted(PROFILES)
    for profile in PROFILES:
        assert sorted(p.name for p in (DEPLOY / profile).iterdir()) == sorted(STAGES), profile


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("stage", STAGES)
def test_every_document_validates_against_kubernetes_or_its_crd(profile, stage):  # noqa: ANN001
    for doc in DOCS[profile][stage]:
        checked = k8s_schemas.validate(doc)
        if k8s_schemas.is_builtin(doc):
            assert checked == k8s_schemas.KUBERNETES_VERSION, (doc["kind"], checked)


def test_the_crds_are_the_released_files_noted_with_their_source():
    sources = k8s_schemas.crd_sources()
    assert {s.file for s in sources} == {p.name for p in k8s_schemas.CRD_DIR.glob("*.yaml")}
    for s in sources:
        assert s.digest_now() == s.sha256, f"{s.file} is not the file of {s.repository} {s.tag}"
        assert re.fullmatch(r"v\d+\.\d+\.\d+", s.tag) and re.fullmatch(r"[0-9a-f]{40}", s.commit), s
        crd = yaml.safe_load((k8s_schemas.CRD_DIR / s.file).read_text(encoding="utf-8"))
        assert crd["kind"] == "CustomResourceDefinition" and s.file.startswith(crd["spec"]["group"] + "_")
    used = {(d["apiVersion"], d["kind"]) for p in PROFILES for d in docs(p) if not k8s_schemas.is_builtin(d)}
    assert used == {("rabbitmq.com/v1beta1", k) for k in ("RabbitmqCluster", "Exchange", "Queue", "Binding",
                                                         "Policy", "User", "Permission")} | {
        ("postgresql.cnpg.io/v1", "Cluster"), ("postgresql.cnpg.io/v1", "ScheduledBackup"),
        ("barmancloud.cnpg.io/v1", "ObjectStore")}


def _refused(doc: dict) -> str:
    with pytest.raises(k8s_schemas.ManifestInvalid) as caught:
        k8s_schemas.validate(doc)
    return str(caught.value)


def test_the_validation_refuses_what_the_api_server_would():
    """Unknown fields (kubectl apply is strict since 1.27), wrong types, a kind without a CRD."""
    deployment = copy.deepcopy(one("small", "Deployment", "payments"))
    deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailabel"] = 0
    assert "maxUnavailabel" in _refused(deployment)
    deployment = copy.deepcopy(one("small", "Deployment", "payments"))
    main_container(deployment)["ports"][0]["containerPort"] = "8003"
    assert "containerPort" in _refused(deployment)
    queue = copy.deepcopy(docs("small", "Queue")[0])
    queue["spec"]["deliveryLimit"] = 5
    assert "deliveryLimit" in _refused(queue)
    cluster = copy.deepcopy(one("small", "Cluster", "payments-db"))
    cluster["spec"]["instances"] = "two"
    assert "instances" in _refused(cluster)
    cluster = copy.deepcopy(one("small", "Cluster", "payments-db"))
    cluster["apiVersion"] = "postgresql.cnpg.io/v2"
    assert "no CRD" in _refused(cluster) or "Couldn't find schema" in _refused(cluster)
    bad_name = copy.deepcopy(one("small", "Service", "payments"))
    bad_name["metadata"]["name"] = "Payments_API"
    assert "DNS-1123" in _refused(bad_name)


def test_the_validation_needs_no_network(monkeypatch):
    """``make test`` validates offline: kubernetes-validate's schemas ship in its wheel, the CRDs here."""
    def no_network(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the validation tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    k8s_schemas.crd_schemas.cache_clear()
    for doc in (one("large", "Deployment", "portal"), one("large", "Cluster", "portal-db"),
                one("large", "RabbitmqCluster", gen.RABBITMQ_CLUSTER), one("large", "Ingress", "seteli")):
        k8s_schemas.validate(doc)


# ------------------------------------------------------------------ the manifest's services

@pytest.mark.parametrize("profile", PROFILES)
def test_the_set_of_services_and_databases_is_the_manifests(profile):  # noqa: ANN001
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ServiceAccount"):
        assert names(profile, kind) == set(ALL), kind
    assert names(profile, "ConfigMap") == {f"{n}-settings" for n in ALL}
    assert set(the_jobs(profile)) == set(WITH_DATABASE)
    assert names(profile, "Cluster") == {f"{n}-db" for n in WITH_DATABASE}
    assert names(profile, "ScheduledBackup") == {f"{n}-db" for n in WITH_DATABASE}
    assert {n.removeprefix("svc-") for n in names(profile, "User")} == set(ALL)
    assert [d["kind"] for d in DOCS[profile]["0-namespace.yaml"]] == ["Namespace"]
    assert {d["metadata"]["namespace"] for d in docs(profile) if d["kind"] != "Namespace"} == {"seteli"}


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", ALL)
def test_ports_commands_and_selectors_agree_with_the_manifest(profile, name):  # noqa: ANN001
    port = BY_NAME[name].port
    dep = one(profile, "Deployment", name)
    c = main_container(dep)
    assert c["command"] == [f"seteli-{name}", "serve", "--host", "0.0.0.0", "--port", str(port)]
    assert c["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert c["image"].rsplit("/", 1)[1].startswith(f"seteli-{name}:")
    svc = one(profile, "Service", name)
    assert svc["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]
    selector = dep["spec"]["selector"]["matchLabels"]
    template_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= template_labels.items()
    assert svc["spec"]["selector"] == selector
    assert one(profile, "PodDisruptionBudget", name)["spec"]["selector"]["matchLabels"] == selector
    hpa = one(profile, "HorizontalPodAutoscaler", name)["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    assert "replicas" not in dep["spec"], "the autoscaler owns the count: an apply would reset it"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["port"] == "http", probe
    rules = {r["host"]: r["http"]["paths"][0]["backend"]["service"]
             for r in one(profile, "Ingress", "seteli")["spec"]["rules"]}
    assert rules[gen.Site().host(name)] == {"name": name, "port": {"name": "http"}}


async def _answers(name: str, path: str) -> int:
    """The status the app gives ``path`` without its lifespan: 404 means no such route."""
    app = importlib.import_module(f"{name}.app").create_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                 base_url="http://pod") as client:
        return (await client.get(path)).status_code


@pytest.mark.parametrize("name", ALL)
async def test_the_probes_are_the_services_own_health_routes(name):  # noqa: ANN001
    settings = settings_class(name)
    assert await _answers(name, "/health/live") == 200
    assert await _answers(name, "/health/ready") != 404
    assert await _answers(name, "/health/nothing") == 404
    for profile in PROFILES:
        c = main_container(one(profile, "Deployment", name))
        assert c["startupProbe"]["httpGet"]["path"] == "/health/live"
        assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        if "health_check_timeout_seconds" in settings.model_fields:  # the broker's check waits 0.5 s more
            bound = settings.model_fields["health_check_timeout_seconds"].default + 0.5
            assert c["readinessProbe"]["timeoutSeconds"] > bound, "the probe would give up before the service"
        assert c["livenessProbe"]["timeoutSeconds"] >= 1


# ------------------------------------------------------------------ environment and settings

def _placeholder(key: str, name: str) -> str:
    return {"DATABASE_URL": f"postgresql+asyncpg://{name}:pw@{name}-db-rw:5432/{name}",
            "AMQP_URL": f"amqp://svc-{name}:pw@{gen.RABBITMQ_CLUSTER}:5672/"}.get(key, "x" * 48)


def pod_environment(profile: str, doc: dict, name: str, values: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the container gets: its ConfigMap, then each referenced value (given, else a placeholder)."""
    c = main_container(doc)
    env = configmap_env(profile, c)
    for entry in c.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            env[entry["name"]] = (values or {}).get(entry["name"], _placeholder(entry["name"], name))
    return env


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", ALL)
def test_every_variable_is_a_setting_and_production_starts_with_them(profile, name, monkeypatch,  # noqa: ANN001
                                                                     tmp_path):
    cls = settings_class(name)
    monkeypatch.chdir(tmp_path)
    for var in list(os.environ):
        if var.lower() in cls.model_fields:
            monkeypatch.delenv(var)
    with pytest.raises(ValueError):  # production has settings it will not start without ...
        cls(environment="production")
    for doc in (one(profile, "Deployment", name), the_jobs(profile)[name]):
        env = pod_environment(profile, doc, name)
        unknown = sorted(var for var in env if var.lower() not in cls.model_fields)
        assert not unknown, f"{name}: the manifests set {unknown}, which {cls.__name__} does not read"
        with monkeypatch.context() as m:
            for var, value in env.items():
                m.setenv(var, value)
            settings = cls()  # ... and the manifests give every one of them
        assert settings.environment == "production"
        assert settings.migrate_on_start is False, "pods must not migrate: the Job does, once, before them"
        assert getattr(settings, "service_name", name) == name
        assert settings.jwks_url == f"{gen.IDENTITY_DIR}/{gen.JWKS_FILE}"
        assert main_container(doc)["env"] == main_container(one(profile, "Deployment", name))["env"]


@pytest.mark.parametrize("profile", PROFILES)
def test_each_pod_reads_only_its_own_secrets_and_settings(profile):  # noqa: ANN001
    for name in ALL:
        for doc in (one(profile, "Deployment", name), the_jobs(profile)[name]):
            c = main_container(doc)
            assert [s["configMapRef"]["name"] for s in c["envFrom"]] == [f"{name}-settings"]
            secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "secretKeyRef" in e["valueFrom"]}
            maps = {e["valueFrom"]["configMapKeyRef"]["name"] for e in c["env"] if "configMapKeyRef" in e["valueFrom"]}
            assert secrets == {f"{name}-secrets"} and maps <= {gen.IDENTITY_CONFIGMAP}, (name, secrets, maps)


@pytest.mark.parametrize("profile", PROFILES)
def test_the_portal_calls_each_service_at_its_service_and_port(profile):  # noqa: ANN001
    env = one(profile, "ConfigMap", "portal-settings")["data"]
    for name in NAMES:
        assert env[f"{name.upper()}_URL"] == f"http://{name}:{BY_NAME[name].port}"
    assert env["PORTAL_URL"] == f"https://{gen.Site().domain}"


# ------------------------------------------------------------------ Secrets: referenced, documented, never here

def _referenced_secrets(profile: str) -> dict[str, set[str]]:
    """Secret name -> keys, wherever a manifest names a Secret the operator creates."""
    refs: dict[str, set[str]] = {}

    def add(name: str, *keys: str) -> None:
        refs.setdefault(name, set()).update(keys)

    for doc in docs(profile):
        if doc["kind"] in ("Deployment", "Job"):
            for e in main_container(doc)["env"]:
                if "secretKeyRef" in e["valueFrom"]:
                    add(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        elif doc["kind"] == "Cluster":
            add(doc["spec"]["bootstrap"]["initdb"]["secret"]["name"], "username", "password")
        elif doc["kind"] == "User":
            add(doc["spec"]["importCredentialsSecret"]["name"], "username", "password")
        elif doc["kind"] == "ObjectStore":
            for ref in doc["spec"]["configuration"]["s3Credentials"].values():
                add(ref["name"], ref["key"])
    return refs


@pytest.mark.parametrize("profile", PROFILES)
def test_no_secret_is_written_and_every_referenced_one_is_documented(profile):  # noqa: ANN001
    assert not docs(profile, "Secret")
    text = "\n".join((DEPLOY / profile / s).read_text() for s in STAGES)
    assert not re.search(r"://[^:/@\s]+:[^@/\s]+@", text), "a URL with a password"
    documented = {name: set(keys) for name, keys in gen.operator_secrets().items()}
    assert _referenced_secrets(profile) == documented
    ingress = one(profile, "Ingress", "seteli")
    assert ingress["spec"]["tls"][0]["secretName"] == gen.TLS_SECRET
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"]


def test_the_readme_tells_the_operator_every_secret_and_identity_key():
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Running on Kubernetes", 1)
    assert len(section) == 2, "README has no section 'Running on Kubernetes'"
    text = section[1].split("\n## ", 1)[0]
    for name, keys in gen.operator_secrets().items():
        generic = re.sub(r"^(registry|vouchers|payments|reporting|portal)-", "<service>-", name)
        assert name in text or generic in text, name
        for key in keys:
            assert key in text, (name, key)
    for key in gen.IDENTITY_KEYS:
        assert key in text, key
    assert gen.IDENTITY_CONFIGMAP in text and gen.TLS_SECRET in text


def test_the_first_secrets_fit_the_manifests_and_agree_with_each_other():
    """``gen_kubernetes.py secrets``: every key the manifests reference, URLs whose passwords are the
    database owners' and broker users' own, a token signing key whose public JWK verifies its tokens."""
    import jwt

    made, jwk = gen.first_secrets()
    for doc in made:
        k8s_schemas.validate(doc)
    data = {d["metadata"]["name"]: d["stringData"] for d in made}
    assert {n: set(v) for n, v in data.items()} == _referenced_secrets("small")
    for name in ALL:
        db = urlparse(data[f"{name}-secrets"]["DATABASE_URL"])
        owner = data[f"{name}-db-owner"]
        assert (db.scheme, db.username, db.password, db.hostname, db.port, db.path) == (
            "postgresql+asyncpg", owner["username"], owner["password"], f"{name}-db-rw", 5432, f"/{name}")
        assert one("small", "Cluster", f"{name}-db")["spec"]["bootstrap"]["initdb"]["owner"] == owner["username"]
        amqp = urlparse(data[f"{name}-secrets"]["AMQP_URL"])
        user = data[f"{name}-broker-user"]
        assert (amqp.username, amqp.password, amqp.hostname, amqp.port) == (
            user["username"], user["password"], gen.RABBITMQ_CLUSTER, 5672)
    assert len({d["password"] for n, d in data.items() if n.endswith(("-db-owner", "-broker-user"))}) == 2 * len(ALL)
    signing = data["vouchers-secrets"]
    token = jwt.encode({"sub": "client:v1"}, signing["TOKEN_SIGNING_KEY"], algorithm="RS256",
                       headers={"kid": signing["TOKEN_SIGNING_KID"]})
    public = jwt.PyJWK(jwk)
    assert jwt.get_unverified_header(token)["kid"] == jwk["kid"]
    assert jwt.decode(token, public.key, algorithms=["RS256"])["sub"] == "client:v1"
    assert gen.first_secrets()[0] != made, "fresh values every time"


# ------------------------------------------------------------------ the broker

@pytest.mark.parametrize("profile", PROFILES)
def test_the_topology_is_the_broker_definitions(profile):  # noqa: ANN001
    """The same source as deploy/rabbitmq/definitions.json, with the delivery limit the services declare."""
    limits = {one(profile, "ConfigMap", f"{n}-settings")["data"]["DELIVERY_LIMIT"] for n in NAMES}
    assert len(limits) == 1
    defs = definitions("seteli", "/", int(limits.pop()))
    committed = json.loads((ROOT / "deploy" / "rabbitmq" / "definitions.json").read_text())
    assert {q["name"]: q["arguments"] for q in committed["queues"]} == {
        q["name"]: q["arguments"] for q in defs["queues"]}
    spec = lambda kind: [d["spec"] for d in docs(profile, kind)]  # noqa: E731
    assert all(s["rabbitmqClusterReference"] == {"name": gen.RABBITMQ_CLUSTER}
               for kind in ("Exchange", "Queue", "Binding", "Policy", "User", "Permission") for s in spec(kind))
    assert {(s["name"], s["type"], s["durable"], s["autoDelete"]) for s in spec("Exchange")} == {
        (e["name"], e["type"], e["durable"], e["auto_delete"]) for e in defs["exchanges"]}
    assert {s["name"]: {"x-queue-type": s["type"], **s.get("arguments", {})} for s in spec("Queue")} == {
        q["name"]: q["arguments"] for q in defs["queues"]}
    assert all(s["durable"] and not s["autoDelete"] and s["deletionPolicy"] == "retain" for s in spec("Queue"))
    assert all(s["type"] == "quorum" for s in spec("Queue"))
    consumer_queues = [s for s in spec("Queue") if not s["name"].endswith(".dlq")]
    assert consumer_queues and all(s["arguments"]["x-delivery-limit"] >= 1 and s["arguments"]["x-dead-letter-exchange"]
                                   for s in consumer_queues)
    assert sorted((s["source"], s["destination"], s["routingKey"]) for s in spec("Binding")) == sorted(
        (b["source"], b["destination"], b["routing_key"]) for b in defs["bindings"])
    assert {s["name"]: (s["pattern"], s["applyTo"], s["definition"]) for s in spec("Policy")} == {
        p["name"]: (p["pattern"], p["apply-to"], p["definition"]) for p in defs["policies"]}
    cluster = one(profile, "RabbitmqCluster", gen.RABBITMQ_CLUSTER)["spec"]
    assert cluster["replicas"] == 3


@pytest.mark.parametrize("profile", PROFILES)
def test_each_service_has_its_broker_user_with_its_templates_permissions(profile):  # noqa: ANN001
    users = {d["metadata"]["name"]: d["spec"] for d in docs(profile, "User")}
    perms = {d["spec"]["userReference"]["name"]: d["spec"] for d in docs(profile, "Permission")}
    assert set(users) == set(perms) == {f"svc-{n}" for n in ALL}
    template = USER_TEMPLATES["service"]
    for name in NAMES:
        expected = {k: template[k].replace("{ns}", "seteli").replace("{id}", name)
                    for k in ("configure", "write", "read")}
        assert perms[f"svc-{name}"]["permissions"] == expected
        assert re.fullmatch(expected["read"], f"seteli.{name}") and not re.fullmatch(expected["read"], "seteli.other")
        assert users[f"svc-{name}"]["importCredentialsSecret"] == {"name": f"{name}-broker-user"}
        assert perms[f"svc-{name}"]["vhost"] == "/"
    assert perms["svc-portal"]["permissions"] == {"configure": "^$", "write": "^$", "read": "^$"}


async def test_a_user_without_permissions_counts_a_queue_with_a_passive_declare(amqp_url):  # noqa: ANN001
    """What the portal's broker user relies on (it only counts the dead-letter queues): checked on the real broker."""
    import aio_pika
    from aiormq.exceptions import ChannelAccessRefused

    if shutil.which("rabbitmqctl") is None or "TEST_AMQP_URL" in os.environ:
        pytest.skip("needs the local broker's rabbitmqctl")
    user, password, queue = f"k8s-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex, f"k8s{uuid.uuid4().hex[:8]}.dlq"

    def ctl(*args: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)

    perms = one("small", "Permission", "svc-portal.root")["spec"]["permissions"]
    await asyncio.to_thread(ctl, "add_user", user, password)
    admin = await aio_pika.connect(amqp_url)
    try:
        await asyncio.to_thread(ctl, "set_permissions", "-p", "/", user, perms["configure"], perms["write"],
                                perms["read"])
        channel = await admin.channel()
        q = await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        await channel.default_exchange.publish(aio_pika.Message(b"dead"), routing_key=queue)
        u = urlparse(amqp_url)
        portal = await aio_pika.connect(f"amqp://{user}:{password}@{u.hostname}:{u.port or 5672}/")
        try:
            counted = await (await portal.channel()).declare_queue(queue, passive=True)
            assert counted.declaration_result.message_count == 1
            queue_there = await (await portal.channel()).get_queue(queue, ensure=False)
            with pytest.raises(ChannelAccessRefused):  # and nothing more: it may not read the message
                await queue_there.get(timeout=5)
        finally:
            await portal.close()
        await q.delete(if_unused=False, if_empty=False)
    finally:
        await admin.close()
        await asyncio.to_thread(ctl, "delete_user", user)


# ------------------------------------------------------------------ databases

@pytest.mark.parametrize("profile", PROFILES)
def test_each_database_is_a_replicated_backed_up_cluster_with_room_for_every_connection(profile):  # noqa: ANN001
    from seteli_shared.db import make_engine

    store = one(profile, "ObjectStore", gen.OBJECT_STORE)["spec"]
    assert store["configuration"]["destinationPath"] and store["retentionPolicy"]
    for name in WITH_DATABASE:
        cluster = one(profile, "Cluster", f"{name}-db")["spec"]
        assert cluster["instances"] >= 2, "a primary and at least one replica"
        assert cluster["bootstrap"]["initdb"]["database"] == name
        assert cluster["plugins"] == [{"name": gen.BARMAN_PLUGIN, "isWALArchiver": True,
                                       "parameters": {"barmanObjectName": gen.OBJECT_STORE}}]
        backup = one(profile, "ScheduledBackup", f"{name}-db")["spec"]
        assert backup["cluster"] == {"name": f"{name}-db"} and backup["method"] == "plugin"
        # every process at the autoscaler's most, plus a rolling update's surge, with its whole pool
        env = configmap_env(profile, main_container(one(profile, "Deployment", name)))
        if "DB_POOL_SIZE" in env:
            per_process = int(env["DB_POOL_SIZE"]) + int(env["DB_MAX_OVERFLOW"])
        else:  # the portal's session store: make_engine's own pool
            pool = make_engine("postgresql+asyncpg://nobody@nowhere/none").pool
            per_process = pool.size() + pool._max_overflow  # noqa: SLF001
        hpa = one(profile, "HorizontalPodAutoscaler", name)["spec"]
        surge = one(profile, "Deployment", name)["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
        need = (hpa["maxReplicas"] + surge) * per_process + 1  # + the migration Job
        have = int(cluster["postgresql"]["parameters"]["max_connections"])
        assert have >= need + 10, f"{profile} {name}: max_connections {have} for {need} connections and a reserve"


# ------------------------------------------------------------------ the pods: safe to run, to stop, to roll

def _dockerfile_uid() -> int:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    uid = re.search(r"useradd [^\n]*--uid (\d+)", text)
    gid = re.search(r"groupadd [^\n]*--gid (\d+)", text)
    assert uid and gid and uid[1] == gid[1], "the Dockerfile's user needs a fixed uid and gid"
    return int(uid[1])


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", ALL)
def test_the_pods_run_as_the_images_user_on_a_read_only_root(profile, name):  # noqa: ANN001
    uid = _dockerfile_uid()
    for doc in (one(profile, "Deployment", name), the_jobs(profile)[name]):
        pod, c = pod_spec(doc), main_container(doc)
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == uid
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == name
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["runAsUser"] == uid
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/tmp", gen.IDENTITY_DIR} <= mounts, "scratch space and the JWKS file"
    assert the_jobs(profile)[name]["spec"]["template"]["spec"]["restartPolicy"] == "Never"


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", ALL)
def test_a_rollout_never_drops_below_the_running_pods_and_a_pod_drains_before_it_stops(profile, name):  # noqa: ANN001
    dep = one(profile, "Deployment", name)
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] >= 1
    c = main_container(dep)
    sleep = c["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep" and int(sleep[1]) >= 5
    grace = pod_spec(dep)["terminationGracePeriodSeconds"]
    fields = settings_class(name).model_fields
    running = fields["db_statement_timeout_seconds"].default if "db_statement_timeout_seconds" in fields else \
        fields["request_timeout_seconds"].default
    assert grace >= int(sleep[1]) + running, "a request under way is cut before its own timeout"
    assert one(profile, "PodDisruptionBudget", name)["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("profile", PROFILES)
def test_a_release_has_its_own_migration_jobs_running_the_same_image(profile):  # noqa: ANN001
    release = gen.Site().tag
    for name, job in the_jobs(profile).items():
        assert job["metadata"]["name"] == f"{name}-migrate-{release.replace('.', '-')}"
        assert job["metadata"]["labels"]["app.kubernetes.io/version"] == release
        assert main_container(job)["command"] == [f"seteli-{name}", "migrate"]
        assert main_container(job)["image"] == main_container(one(profile, "Deployment", name))["image"]
        assert main_container(job)["image"].endswith(f":{release}")


# ------------------------------------------------------------------ network policies, evaluated

def _matches(selector: dict, labels: dict) -> bool:
    return selector.get("matchLabels", {}).items() <= labels.items() and not selector.get("matchExpressions")


def _pods(profile: str) -> dict[str, dict]:
    """Every kind of pod in the namespace: the services' and Jobs', the databases', the broker's."""
    pods = {f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["metadata"]["labels"]
            for d in docs(profile) if d["kind"] in ("Deployment", "Job")}
    pods.update({f"db/{n}-db": {"cnpg.io/cluster": f"{n}-db", "cnpg.io/instanceRole": "primary"}
                 for n in WITH_DATABASE})
    pods["broker"] = {"app.kubernetes.io/name": gen.RABBITMQ_CLUSTER, "app.kubernetes.io/component": "rabbitmq"}
    return pods


def _policies_of(profile: str, labels: dict, kind: str) -> list[dict]:
    return [p for p in docs(profile, "NetworkPolicy")
            if kind in p["spec"]["policyTypes"] and _matches(p["spec"]["podSelector"], labels)]


def _peer_allows(peers: list[dict], ports: list[dict] | None, labels: dict, port: int) -> bool:
    """Whether a rule lets a pod of this namespace with ``labels`` through on ``port``: no peers means any,
    a peer names such a pod by a pod selector alone (a namespace selector names other namespaces here, an
    ipBlock addresses outside the pod network), no ports means any."""
    port_ok = ports is None or any(p.get("port") == port for p in ports)
    peer_ok = not peers or any(set(peer) == {"podSelector"} and _matches(peer["podSelector"], labels)
                               for peer in peers)
    return port_ok and peer_ok


def _allowed(profile: str, selected: dict, kind: str, peer: dict, port: int) -> bool:
    """Whether the policies of a pod (``selected``) let ``peer`` through: a pod no policy of the kind selects is
    open; one that some select is open to what one of their rules allows."""
    policies = _policies_of(profile, selected, kind)
    key = "egress" if kind == "Egress" else "ingress"
    side = "to" if kind == "Egress" else "from"
    return not policies or any(_peer_allows(rule.get(side, []), rule.get("ports"), peer, port)
                               for p in policies for rule in p["spec"].get(key, []))


def reachable(profile: str, pod: str) -> set[tuple[str, int]]:
    """(pod of the namespace, port) that ``pod`` may open a connection to: its egress and the target's ingress
    both allow it."""
    pods = _pods(profile)
    ports = {s.port for s in EVERYTHING} | {5432, 5672, 8000, 15672, 4369, 25672}
    return {(target, port) for target, labels in pods.items() if target != pod for port in ports
            if _allowed(profile, pods[pod], "Egress", labels, port)
            and _allowed(profile, labels, "Ingress", pods[pod], port)}


@pytest.mark.parametrize("profile", PROFILES)
def test_network_policies_let_each_pod_reach_only_its_database_the_broker_and_what_it_calls(profile):  # noqa: ANN001
    for name in ALL:
        expected = {(f"db/{name}-db", 5432), ("broker", 5672)}
        if name == "portal":
            expected |= {(f"Deployment/{s}", BY_NAME[s].port) for s in NAMES}
        got = reachable(profile, f"Deployment/{name}")
        assert got == expected, f"{profile} {name}: reaches {sorted(got - expected)}, misses {sorted(expected - got)}"
        job = f"Job/{the_jobs(profile)[name]['metadata']['name']}"
        assert reachable(profile, job) == {(f"db/{name}-db", 5432)}, f"{profile} {job}: only its database"


@pytest.mark.parametrize("profile", PROFILES)
def test_only_payments_and_the_portal_reach_the_internet_and_never_a_private_address(profile):  # noqa: ANN001
    private = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
                                                 "127.0.0.0/8", "100.64.0.0/10", "fc00::/7", "fe80::/10", "::1/128")]
    for name in ALL:
        policies = _policies_of(profile, one(profile, "Deployment", name)["spec"]["template"]["metadata"]["labels"],
                                "Egress")
        assert policies, f"{name}: no egress policy, so it may reach anything"
        blocks = [(peer["ipBlock"], rule["ports"]) for p in policies for rule in p["spec"]["egress"]
                  for peer in rule["to"] if "ipBlock" in peer]
        dns = [rule for p in policies for rule in p["spec"]["egress"]
               if any(peer.get("podSelector", {}).get("matchLabels") == {"k8s-app": "kube-dns"} for peer in rule["to"])]
        assert dns and {p["port"] for p in dns[0]["ports"]} == {53}
        if name not in ("payments", "portal"):
            assert not blocks, f"{name} reaches addresses outside the cluster"
            continue
        assert blocks
        for block, ports in blocks:
            assert ports == [{"protocol": "TCP", "port": 443}]
            cidr = ipaddress.ip_network(block["cidr"])
            excepted = [ipaddress.ip_network(e) for e in block["except"]]
            for net in private:
                if net.version == cidr.version:
                    assert any(net.subnet_of(e) for e in excepted), f"{name} may reach {net}"


@pytest.mark.parametrize("profile", PROFILES)
def test_the_databases_are_reached_by_their_own_service_only(profile):  # noqa: ANN001
    pods = _pods(profile)
    for name in WITH_DATABASE:
        for pod in pods:
            if not pod.startswith(("Deployment/", "Job/")):
                continue
            own = pods[pod]["app.kubernetes.io/name"] == name
            assert ((f"db/{name}-db", 5432) in reachable(profile, pod)) == own, (pod, name)
    assert any(p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"]
               for p in docs(profile, "NetworkPolicy")), "no default deny of ingress"


# ------------------------------------------------------------------ the pods' own commands, run here


class PodFileSystem:
    """The pod's file system, as near as this machine gets: with root and ``unshare``, each command runs in a
    mount namespace of its own whose root is read-only (``readOnlyRootFilesystem``), with a fresh tmpfs on /tmp
    and on the working directory's ``var`` (the pod's emptyDirs) and the JWKS file in a read-only directory
    (the ConfigMap's volume), the working directory and HOME read-only too (the image's /app). Elsewhere the
    commands run on the ordinary file system, and ``read_only`` says so."""

    MOUNT = "/mnt"
    WRAPPER = ('mount --bind "$0" /mnt && mount -o remount,bind,ro /mnt && mount -t tmpfs -o size=64m tmpfs /mnt/var'
               ' && mount -o remount,bind,ro / && mount -t tmpfs -o size=256m tmpfs /tmp && cd /mnt && exec "$@"')

    def __init__(self, tmp_path: Path, jwk: dict):
        self.app = tmp_path / "app"
        (self.app / "var").mkdir(parents=True)
        (self.app / gen.JWKS_FILE).write_text(json.dumps({"keys": [jwk]}))
        self.read_only = self._possible()

    def _possible(self) -> bool:
        if os.geteuid() != 0 or not shutil.which("unshare"):
            return False
        # (and the interpreter still there: a checkout under /tmp is hidden by the pod's tmpfs on /tmp)
        probe = subprocess.run(self.command(["sh", "-c", "! touch /mnt/x 2>/dev/null && touch /tmp/x var/x && "
                                             f"test -x '{sys.executable}'"]), capture_output=True, timeout=30)
        return probe.returncode == 0

    def command(self, argv: list[str]) -> list[str]:
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", self.WRAPPER, str(self.app), *argv]

    def run(self, argv: list[str]) -> list[str]:
        return self.command(argv) if self.read_only else argv

    @property
    def root(self) -> Path:
        return Path(self.MOUNT) if self.read_only else self.app

    @property
    def jwks(self) -> Path:
        return self.root / gen.JWKS_FILE


def _run_env(profile: str, doc: dict, name: str, values: dict[str, str], fs: PodFileSystem, namespace: str) -> dict:
    """The pod's environment with this machine's servers: the URLs point here, the JWKS file is the test's,
    and the bus namespace is the test's own (the shared broker's ``seteli`` namespace is not touched)."""
    env = pod_environment(profile, doc, name, values)
    env.update({"JWKS_URL": str(fs.jwks), "BUS_NAMESPACE": namespace, "LOG_JSON": "true", "HOME": str(fs.root)})
    if name == "portal":
        env.update({f"{s.upper()}_URL": f"http://127.0.0.1:9/{s}" for s in NAMES})
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # the image's /opt/venv/bin
    return {**{k: v for k, v in os.environ.items() if k == "LANG"}, "PATH": path, **env}


async def test_each_pods_command_with_its_environment_migrates_then_serves_its_probes(pg, amqp_url, namespace,
                                                                                    tmp_path):  # noqa: ANN001
    """The migration Job's command migrates an empty database; the Deployment's command, with
    MIGRATE_ON_START=false, then starts in production on that database and the broker and answers its
    startup, liveness and readiness probes (the port moved to a free one: this machine's 8001-8005 may be
    taken). Both on a read-only root file system where this machine can make one (``PodFileSystem``)."""
    profile = "small"
    made, jwk = gen.first_secrets()
    fs = PodFileSystem(tmp_path, jwk)
    if not fs.read_only:
        warnings.warn("no read-only root here (needs root and unshare): the pods' commands ran on a writable one")
    envs: dict[str, dict[str, str]] = {}
    for name in ALL:
        own = {k: v for d in made if d["metadata"]["name"] == f"{name}-secrets" for k, v in d["stringData"].items()}
        own.update({"DATABASE_URL": await pg.create(f"k8s{name}"), "AMQP_URL": amqp_url,
                    "JWT_ISSUER": "https://login.example.org", "JWT_AUDIENCE": "seteli", "OIDC_ISSUER": "",
                    "OIDC_CLIENT_ID": ""})
        envs[name] = own

    async def migrate(name: str) -> None:
        job = the_jobs(profile)[name]
        done = await asyncio.to_thread(subprocess.run, fs.run(main_container(job)["command"]), cwd=fs.app,
                                       env=_run_env(profile, job, name, envs[name], fs, namespace),
                                       capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{name} migrate: {done.stderr[-2000:]}"

    await asyncio.gather(*(migrate(name) for name in ALL))
    started: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        for name in ALL:
            dep = one(profile, "Deployment", name)
            command = list(main_container(dep)["command"])
            port = _free_port()
            command[command.index("--port") + 1] = str(port)
            with (tmp_path / f"{name}.log").open("w") as log:
                started[name] = (subprocess.Popen(fs.run(command), cwd=fs.app, stdout=log, stderr=subprocess.STDOUT,
                                                  env=_run_env(profile, dep, name, envs[name], fs, namespace)), port)
        await asyncio.gather(*(_answer_probes(main_container(one(profile, "Deployment", name)), port, proc,
                                              tmp_path / f"{name}.log") for name, (proc, port) in started.items()))
    finally:
        for proc, _ in started.values():
            proc.terminate()
        for proc, _ in started.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _answer_probes(container: dict, port: int, proc: subprocess.Popen, log: Path) -> None:
    """Each probe as the kubelet would ask it: the startup probe until it answers (within its budget), then
    the liveness and readiness probes within their timeouts."""
    startup = container["startupProbe"]
    deadline = time.monotonic() + startup["periodSeconds"] * startup["failureThreshold"]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        while True:
            assert proc.poll() is None, f"the server stopped: {log.read_text()[-3000:]}"
            try:
                r = await client.get(startup["httpGet"]["path"], timeout=startup["timeoutSeconds"])
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no startup within the probe's budget: {log.read_text()[-3000:]}"
            await asyncio.sleep(0.5)
        for probe in ("livenessProbe", "readinessProbe"):
            spec = container[probe]
            r = await client.get(spec["httpGet"]["path"], timeout=spec["timeoutSeconds"])
            assert r.status_code == 200, (probe, r.text, log.read_text()[-3000:])
