"""Generate the Kubernetes deployment, deploy/kubernetes/<profile>/, from the service manifest
(``seteli_shared.manifest``), the settings classes and the broker definitions (``seteli_shared.broker``).

Each profile (``small``: one municipality; ``large``: a wellbeing services county) is four files that an
operator applies in order with ``kubectl apply -f`` (README, "Running on Kubernetes"):

  0-namespace.yaml   the namespace
  1-platform.yaml    settings, service accounts, network policies, RabbitMQ (RabbitmqCluster and its
                     topology as Messaging Topology Operator resources), one CloudNativePG Cluster per
                     database with its backups
  2-migrate.yaml     one migration Job per database and release (``<service>-migrate-<release>``)
  3-services.yaml    Deployments, Services, PodDisruptionBudgets, HorizontalPodAutoscalers, the Ingress

No kustomize transforms and no templates: the files are what is applied, and every document in them is
validated here before it is written (``k8s_schemas``: Kubernetes ``KUBERNETES_VERSION`` and the CRDs kept
in deploy/kubernetes/crds/). Secrets are referenced, never written: ``operator_secrets()`` lists them, and
``gen_kubernetes.py secrets`` prints a first set with fresh random values for the operator to apply.

  .venv/bin/python scripts/gen_kubernetes.py            # rewrite deploy/kubernetes/{small,large}/
  .venv/bin/python scripts/gen_kubernetes.py --check    # fail when the committed files differ
  .venv/bin/python scripts/gen_kubernetes.py --domain seteli.kunta.fi --image-registry reg.kunta.fi/seteli \\
      --release 0.2.0 --out my-deploy                   # the same for a site of one's own
  .venv/bin/python scripts/gen_kubernetes.py secrets > secrets.yaml   # never commit it
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import re
import secrets
import sys
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from k8s_schemas import KUBERNETES_VERSION, validate_all  # noqa: E402

from seteli_shared.broker import USER_TEMPLATES, definitions  # noqa: E402
from seteli_shared.manifest import EVERYTHING, NAMES, ServiceInfo  # noqa: E402
from seteli_shared.settings import ServiceSettings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "deploy" / "kubernetes"
PART_OF = "seteli"
#: the uid and gid of the image's ``seteli`` user (deploy/Dockerfile creates it with these)
UID = 10001
#: seconds a terminating pod keeps serving after it is told to stop, so that every endpoint list (kube-proxy,
#: the ingress controller) has dropped it before the process gets SIGTERM
PRE_STOP_SLEEP_SECONDS = 10
RABBITMQ_CLUSTER = "seteli-rabbitmq"
#: the image the RabbitMQ Cluster Operator v2.22.3 deploys by default (deploy/kubernetes/crds/SOURCES.json)
RABBITMQ_IMAGE = "rabbitmq:4.2.6-management"
POSTGRES_IMAGE = "ghcr.io/cloudnative-pg/postgresql:15"
BARMAN_PLUGIN = "barman-cloud.cloudnative-pg.io"
OBJECT_STORE = "seteli-backups"
BACKUP_SECRET = "seteli-backup-s3"
#: the ConfigMap the operator creates with the identity provider's facts (``IDENTITY_KEYS``)
IDENTITY_CONFIGMAP = "seteli-identity"
IDENTITY_DIR = "/etc/seteli/identity"
JWKS_FILE = "jwks.json"
TLS_SECRET = "seteli-tls"
#: every consumer queue's delivery limit: the services declare their queues with ``DELIVERY_LIMIT`` and the
#: topology declares the same queues; RabbitMQ refuses a second declaration with other arguments
DELIVERY_LIMIT = ServiceSettings.model_fields["delivery_limit"].default
#: the prefix of every exchange and queue (``BUS_NAMESPACE``), as in deploy/rabbitmq/definitions.json
BUS_NAMESPACE = ServiceSettings.model_fields["bus_namespace"].default
#: addresses that are not the public internet: the webhooks (payments) and the OpenID Connect issuer (portal)
#: are reached on 443 anywhere but here (payments' egress.py refuses them again per delivery)
NOT_PUBLIC_V4 = ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
                 "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4")
NOT_PUBLIC_V6 = ("::/128", "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "100::/64", "2001::/32", "2002::/16",
                 "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8")
#: PostgreSQL connections beyond the services' pools: superuser_reserved_connections, CloudNativePG's
#: instance manager and replication, a migration Job, a person with psql
RESERVED_CONNECTIONS = 15


# ------------------------------------------------------------------ what differs between sites and profiles

@dataclass(frozen=True)
class Site:
    """What one installation chooses (the generator's options); the committed files use the defaults."""

    namespace: str = "seteli"
    #: the portal's host name; each service's API is at ``<service>.<domain>``
    domain: str = "seteli.example.org"
    image_registry: str = "registry.example.org/seteli"
    release: str = ""  # default: the version in pyproject.toml
    #: the cluster's pod network: the ingress controller and the portal, whose X-Forwarded-For is believed
    pod_cidr: str = "10.244.0.0/16"
    ingress_class: str = "nginx"
    ingress_namespace: str = "ingress-nginx"
    #: the namespace of the Prometheus that scrapes the pods' /metrics (the network policies let it in)
    monitoring_namespace: str = "monitoring"
    cluster_issuer: str = "letsencrypt"
    cnpg_namespace: str = "cnpg-system"
    rabbitmq_operator_namespace: str = "rabbitmq-system"
    backup_destination: str = "s3://seteli-backups/"
    storage_class: str = ""  # empty: the cluster's default

    @property
    def tag(self) -> str:
        return self.release or tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

    def image(self, name: str) -> str:
        return f"{self.image_registry}/seteli-{name}:{self.tag}"

    def host(self, name: str) -> str:
        return self.domain if name == "portal" else f"{name}.{self.domain}"


@dataclass(frozen=True)
class Size:
    cpu: str
    memory: str
    cpu_limit: str
    memory_limit: str

    def resources(self) -> dict:
        return {"requests": {"cpu": self.cpu, "memory": self.memory},
                "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit}}


@dataclass(frozen=True)
class Tier:
    """One service in one profile."""

    min_replicas: int
    max_replicas: int
    size: Size
    #: its pool per process (``DB_POOL_SIZE``, ``DB_MAX_OVERFLOW``); None: the portal, which has no such settings
    pool_size: int | None = None
    max_overflow: int | None = None


@dataclass(frozen=True)
class Profile:
    name: str
    about: str
    tiers: dict[str, Tier]
    max_surge: int
    db_instances: int
    db_storage: str
    db_size: Size
    db_parameters: dict[str, str]
    rabbitmq_size: Size
    rabbitmq_storage: str
    backup_retention: str
    cpu_target_percent: int = 70


SMALL_SERVICE = Size("100m", "256Mi", "1", "512Mi")
PROFILES = (
    Profile(
        name="small", about="one municipality: two of everything, room for a third under load",
        tiers={"registry": Tier(2, 3, SMALL_SERVICE, 5, 5),
               "vouchers": Tier(2, 3, SMALL_SERVICE, 5, 5),
               "payments": Tier(2, 4, Size("200m", "384Mi", "1", "768Mi"), 8, 4),
               "reporting": Tier(2, 3, Size("200m", "384Mi", "1", "768Mi"), 5, 5),
               "portal": Tier(2, 3, SMALL_SERVICE)},
        max_surge=1, db_instances=2, db_storage="10Gi", db_size=Size("250m", "512Mi", "1", "1Gi"),
        db_parameters={"shared_buffers": "128MB"},
        rabbitmq_size=Size("250m", "1Gi", "1", "1Gi"), rabbitmq_storage="10Gi", backup_retention="30d"),
    Profile(
        name="large", about="a wellbeing services county: three of everything, payments up to twelve",
        tiers={"registry": Tier(3, 6, Size("250m", "384Mi", "2", "1Gi"), 8, 8),
               "vouchers": Tier(3, 8, Size("250m", "384Mi", "2", "1Gi"), 8, 8),
               "payments": Tier(3, 12, Size("500m", "512Mi", "2", "1536Mi"), 12, 8),
               "reporting": Tier(3, 6, Size("500m", "768Mi", "2", "2Gi"), 8, 8),
               "portal": Tier(3, 8, Size("250m", "384Mi", "2", "1Gi"))},
        max_surge=2, db_instances=3, db_storage="100Gi", db_size=Size("1", "4Gi", "4", "8Gi"),
        db_parameters={"shared_buffers": "1GB", "effective_cache_size": "3GB"},
        rabbitmq_size=Size("1", "4Gi", "2", "4Gi"), rabbitmq_storage="50Gi", backup_retention="90d"),
)
BY_PROFILE = {p.name: p for p in PROFILES}


# ------------------------------------------------------------------ the services, as the code says

def settings_class(name: str):  # noqa: ANN201
    """The service's settings class (environment variables = its fields upper-cased)."""
    return getattr(importlib.import_module(f"{name}.settings"), f"{name.capitalize()}Settings")


def setting_default(name: str, field_name: str):  # noqa: ANN201
    return settings_class(name).model_fields[field_name].default


def pool_per_process(info: ServiceInfo, tier: Tier) -> int:
    """The most connections one process of the service opens to its database."""
    if tier.pool_size is not None:
        return tier.pool_size + tier.max_overflow
    from seteli_shared.db import make_engine  # the portal's session store takes make_engine's pool

    pool = make_engine("postgresql+asyncpg://nobody@nowhere/none").pool
    return pool.size() + pool._max_overflow  # noqa: SLF001  (QueuePool has no public reader of it)


def max_connections(info: ServiceInfo, profile: Profile) -> int:
    """Enough for every process at the autoscaler's most plus a rolling update's surge, and the reserve."""
    tier = profile.tiers[info.name]
    need = (tier.max_replicas + profile.max_surge) * pool_per_process(info, tier) + RESERVED_CONNECTIONS
    return int(math.ceil(need / 10) * 10)


def grace_seconds(info: ServiceInfo) -> int:
    """The drain, then time for requests under way to end: a statement is given up after
    ``DB_STATEMENT_TIMEOUT_SECONDS``; payments' settlement run gets two minutes (a run cut short rolls back
    and is run again)."""
    if info.name == "portal":
        return PRE_STOP_SLEEP_SECONDS + int(setting_default("portal", "request_timeout_seconds")) + 5
    statement = int(setting_default(info.name, "db_statement_timeout_seconds"))
    return PRE_STOP_SLEEP_SECONDS + max(statement + 5, 110 if info.name == "payments" else 0)


def readiness_timeout_seconds(info: ServiceInfo) -> int:
    """Longer than the endpoint's own bound: each check waits ``HEALTH_CHECK_TIMEOUT_SECONDS`` (the broker's half
    a second more); the portal's ping of its session store is bounded by the connect timeout only."""
    if info.name == "portal":
        return 5
    return math.ceil(setting_default(info.name, "health_check_timeout_seconds") + 0.5) + 1


# ------------------------------------------------------------------ names and labels

def labels(name: str, component: str, site: Site | None = None) -> dict[str, str]:
    out = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component,
           "app.kubernetes.io/part-of": PART_OF}
    if site is not None:
        out["app.kubernetes.io/version"] = site.tag
    return out


def selector(name: str, component: str = "server") -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component}


def meta(name: str, site: Site, labels_: dict | None = None, **extra) -> dict:
    out = {"name": name, "namespace": site.namespace}
    if labels_:
        out["labels"] = labels_
    out.update(extra)
    return out


def db_cluster(name: str) -> str:
    return f"{name}-db"


def settings_configmap(name: str) -> str:
    return f"{name}-settings"


def env_secret(name: str) -> str:
    return f"{name}-secrets"


def db_owner_secret(name: str) -> str:
    return f"{name}-db-owner"


def broker_user_secret(name: str) -> str:
    return f"{name}-broker-user"


def broker_user(name: str) -> str:
    return USER_TEMPLATES["service"]["user"].replace("{id}", name)


def migrate_job(name: str, site: Site) -> str:
    return f"{name}-migrate-{re.sub(r'[^a-z0-9]+', '-', site.tag.lower()).strip('-')}"


# ------------------------------------------------------------------ settings, secrets and identity

def settings_env(info: ServiceInfo, profile: Profile, site: Site) -> dict[str, str]:
    """The service's non-secret settings (its ConfigMap): every key a field of its settings class."""
    tier = profile.tiers[info.name]
    env = {"ENVIRONMENT": "production", "LOG_LEVEL": "INFO", "LOG_JSON": "true", "MIGRATE_ON_START": "false",
           "BUS_NAMESPACE": BUS_NAMESPACE, "JWKS_URL": f"{IDENTITY_DIR}/{JWKS_FILE}"}
    if info.kind == "frontend":
        env.update({f"{s.upper()}_URL": f"http://{s}:{BY_INFO[s].port}" for s in NAMES})
        env["PORTAL_URL"] = f"https://{site.host(info.name)}"
        env["TRUSTED_PROXIES"] = site.pod_cidr  # the ingress controller
        return env
    env.update({"RELAY": "in_process", "DELIVERY_LIMIT": str(DELIVERY_LIMIT),
                "DB_POOL_SIZE": str(tier.pool_size), "DB_MAX_OVERFLOW": str(tier.max_overflow)})
    if info.name == "vouchers":
        env["TRUSTED_PROXIES"] = site.pod_cidr  # the portal and the ingress controller (network policy: no one else)
    return env


#: what each service reads from its Secret ``<service>-secrets`` (key = environment variable), and why
SECRET_SETTINGS: dict[str, dict[str, str]] = {
    **{name: {"DATABASE_URL": "postgresql+asyncpg://<owner>:<password>@<service>-db-rw:5432/<service>",
              "AMQP_URL": f"amqp://svc-<service>:<password>@{RABBITMQ_CLUSTER}:5672/"} for name in NAMES},
    "portal": {"DATABASE_URL": "postgresql+asyncpg://portal:<password>@portal-db-rw:5432/portal (sessions)",
               "AMQP_URL": f"amqp://svc-portal:<password>@{RABBITMQ_CLUSTER}:5672/ (counts dead letters only)",
               "PORTAL_SESSION_SECRET": "32 characters or more: the sessions' encryption key",
               "OIDC_CLIENT_SECRET": "the portal's client secret at the OpenID Connect issuer (optional: a public "
                                     "client has none)"},
}
SECRET_SETTINGS["payments"]["IDEMPOTENCY_KEY_SECRET"] = "32 characters or more: the HMAC key of Idempotency-Keys"
SECRET_SETTINGS["vouchers"]["TOKEN_SIGNING_KEY"] = ("PEM private key (RS256) of the clients' light-login tokens; "
                                                    "its public key must be in the JWKS")
SECRET_SETTINGS["vouchers"]["TOKEN_SIGNING_KID"] = "the key id of that key in the JWKS"
OPTIONAL_SECRET_SETTINGS = {("portal", "OIDC_CLIENT_SECRET")}
#: what every service (and the portal) reads from the operator's ConfigMap ``seteli-identity``
IDENTITY_SETTINGS = {"JWT_ISSUER": "the issuer (``iss``) of the platform's bearer tokens",
                     "JWT_AUDIENCE": "their audience (``aud``)"}
PORTAL_IDENTITY_SETTINGS = {"OIDC_ISSUER": "the OpenID Connect issuer the portal signs staff in with",
                            "OIDC_CLIENT_ID": "the portal's client id there"}
IDENTITY_KEYS = {JWKS_FILE: "the JWKS (public keys) the services verify bearer tokens with, mounted as a file at "
                            f"{IDENTITY_DIR}/{JWKS_FILE} (a key added later: update it, then restart the pods)",
                 **IDENTITY_SETTINGS, **PORTAL_IDENTITY_SETTINGS}


def operator_secrets() -> dict[str, dict[str, str]]:
    """Every Secret the manifests reference (the operator creates them): name -> key -> what it holds."""
    out: dict[str, dict[str, str]] = {}
    for info in EVERYTHING:
        out[env_secret(info.name)] = dict(SECRET_SETTINGS[info.name])
        out[db_owner_secret(info.name)] = {"username": info.name, "password": "the database owner's password "
                                           "(type kubernetes.io/basic-auth; the same as in DATABASE_URL)"}
        out[broker_user_secret(info.name)] = {"username": broker_user(info.name),
                                              "password": "the broker user's password (the same as in AMQP_URL)"}
    out[BACKUP_SECRET] = {"ACCESS_KEY_ID": "the object store's access key id",
                          "ACCESS_SECRET_KEY": "its secret access key"}
    return out


def env_from_references(info: ServiceInfo) -> list[dict]:
    """Secrets and the identity ConfigMap, each as its own environment variable (a missing one stops the pod)."""
    env = []
    for key in SECRET_SETTINGS[info.name]:
        ref = {"name": env_secret(info.name), "key": key}
        if (info.name, key) in OPTIONAL_SECRET_SETTINGS:
            ref["optional"] = True
        env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    identity = {**IDENTITY_SETTINGS, **(PORTAL_IDENTITY_SETTINGS if info.kind == "frontend" else {})}
    for key in identity:
        env.append({"name": key, "valueFrom": {"configMapKeyRef": {"name": IDENTITY_CONFIGMAP, "key": key}}})
    return env


def checksum(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ the pods

def security_context() -> dict:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "runAsUser": UID, "runAsGroup": UID, "capabilities": {"drop": ["ALL"]}}


def pod_security() -> dict:
    return {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def volumes() -> list[dict]:
    """The root file system is read-only: /tmp (uploads spooled, matplotlib's cache) and ./var are scratch."""
    return [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
            {"name": "var", "emptyDir": {"sizeLimit": "64Mi"}},
            {"name": "identity", "configMap": {"name": IDENTITY_CONFIGMAP,
                                               "items": [{"key": JWKS_FILE, "path": JWKS_FILE}]}}]


def volume_mounts() -> list[dict]:
    return [{"name": "tmp", "mountPath": "/tmp"}, {"name": "var", "mountPath": "/app/var"},
            {"name": "identity", "mountPath": IDENTITY_DIR, "readOnly": True}]


def container(info: ServiceInfo, profile: Profile, site: Site, command: list[str]) -> dict:
    return {
        "name": info.name, "image": site.image(info.name), "imagePullPolicy": "IfNotPresent", "command": command,
        "envFrom": [{"configMapRef": {"name": settings_configmap(info.name)}}],
        "env": env_from_references(info),
        "resources": profile.tiers[info.name].size.resources(),
        "securityContext": security_context(), "volumeMounts": volume_mounts(),
    }


def probes(info: ServiceInfo) -> dict:
    """``/health/live`` says the process is up (it answers once the app has started: broker connected,
    consumers running); ``/health/ready`` that its database answers and its broker confirms a publish."""
    def get(path: str) -> dict:
        return {"httpGet": {"path": path, "port": "http"}}

    return {
        "startupProbe": {**get("/health/live"), "periodSeconds": 2, "timeoutSeconds": 2, "failureThreshold": 90},
        "livenessProbe": {**get("/health/live"), "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3},
        "readinessProbe": {**get("/health/ready"), "periodSeconds": 5,
                           "timeoutSeconds": readiness_timeout_seconds(info), "failureThreshold": 3},
    }


def pod_template(info: ServiceInfo, profile: Profile, site: Site, component: str, command: list[str],
                 settings: dict[str, str]) -> dict:
    return {
        "metadata": {"labels": labels(info.name, component, site),
                     "annotations": {"seteli.fi/settings-checksum": checksum(settings)}},
        "spec": {"serviceAccountName": info.name, "automountServiceAccountToken": False,
                 "securityContext": pod_security(), "volumes": volumes(),
                 "containers": [container(info, profile, site, command)]},
    }


def deployment(info: ServiceInfo, profile: Profile, site: Site, settings: dict[str, str]) -> dict:
    template = pod_template(info, profile, site, "server", [info.command, "serve", "--host", "0.0.0.0",
                                                            "--port", str(info.port)], settings)
    pod = template["spec"]
    pod["terminationGracePeriodSeconds"] = grace_seconds(info)
    pod["topologySpreadConstraints"] = [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                         "whenUnsatisfiable": "ScheduleAnyway",
                                         "labelSelector": {"matchLabels": selector(info.name)}}]
    # Prometheus' usual pod annotations: its kubernetes_sd "pods" role scrapes /metrics on the http port
    template["metadata"]["annotations"].update({"prometheus.io/scrape": "true", "prometheus.io/port": str(info.port),
                                                "prometheus.io/path": "/metrics"})
    main = pod["containers"][0]
    main["ports"] = [{"name": "http", "containerPort": info.port, "protocol": "TCP"}]
    main.update(probes(info))
    main["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_SLEEP_SECONDS)]}}}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(info.name, site, labels(info.name, "server", site)),
        # no replicas: the HorizontalPodAutoscaler owns the count (an apply would otherwise reset it)
        "spec": {"revisionHistoryLimit": 5, "minReadySeconds": 5, "progressDeadlineSeconds": 600,
                 "selector": {"matchLabels": selector(info.name)},
                 "strategy": {"type": "RollingUpdate",
                              "rollingUpdate": {"maxUnavailable": 0, "maxSurge": profile.max_surge}},
                 "template": template},
    }


def migration(info: ServiceInfo, profile: Profile, site: Site, settings: dict[str, str]) -> dict:
    template = pod_template(info, profile, site, "migration", [info.command, "migrate"], settings)
    template["spec"]["restartPolicy"] = "Never"
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": meta(migrate_job(info.name, site), site, labels(info.name, "migration", site)),
        "spec": {"backoffLimit": 3, "activeDeadlineSeconds": 1800, "ttlSecondsAfterFinished": 7 * 24 * 3600,
                 "template": template},
    }


def service(info: ServiceInfo, site: Site) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(info.name, site, labels(info.name, "server")),
            "spec": {"type": "ClusterIP", "selector": selector(info.name),
                     "ports": [{"name": "http", "port": info.port, "targetPort": "http", "protocol": "TCP"}]}}


def disruption_budget(info: ServiceInfo, site: Site) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": meta(info.name, site, labels(info.name, "server")),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(info.name)},
                     "unhealthyPodEvictionPolicy": "AlwaysAllow"}}


def autoscaler(info: ServiceInfo, profile: Profile, site: Site) -> dict:
    tier = profile.tiers[info.name]
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": meta(info.name, site, labels(info.name, "server")),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": info.name},
                     "minReplicas": tier.min_replicas, "maxReplicas": tier.max_replicas,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                         "type": "Utilization", "averageUtilization": profile.cpu_target_percent}}}],
                     "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300,
                                                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}}}


def ingress(site: Site) -> dict:
    """The portal at the domain, each service's API at ``<service>.<domain>``, one certificate for all."""
    bulk = setting_default("payments", "max_bulk_body_bytes")
    rules = [{"host": site.host(info.name),
              "http": {"paths": [{"path": "/", "pathType": "Prefix",
                                  "backend": {"service": {"name": info.name, "port": {"name": "http"}}}}]}}
             for info in EVERYTHING]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": meta(PART_OF, site, {"app.kubernetes.io/part-of": PART_OF}, annotations={
                "cert-manager.io/cluster-issuer": site.cluster_issuer,
                # the services refuse larger bodies themselves (413); the controller must let the bulk ones through
                "nginx.ingress.kubernetes.io/proxy-body-size": f"{math.ceil(bulk / 2**20)}m"}),
            "spec": {"ingressClassName": site.ingress_class,
                     "tls": [{"hosts": [site.host(info.name) for info in EVERYTHING], "secretName": TLS_SECRET}],
                     "rules": rules}}


# ------------------------------------------------------------------ network policies

def _dns() -> dict:
    return {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}


def _own_database(name: str) -> dict:
    return {"to": [{"podSelector": {"matchLabels": {"cnpg.io/cluster": db_cluster(name)}}}],
            "ports": [{"protocol": "TCP", "port": 5432}]}


def _broker() -> dict:
    return {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": RABBITMQ_CLUSTER}}}],
            "ports": [{"protocol": "TCP", "port": 5672}]}


def _public_https() -> dict:
    return {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": list(NOT_PUBLIC_V4)}},
                   {"ipBlock": {"cidr": "::/0", "except": list(NOT_PUBLIC_V6)}}],
            "ports": [{"protocol": "TCP", "port": 443}]}


def _from_ingress_controller(site: Site, port: int) -> dict:
    return {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": site.ingress_namespace}}}],
            "ports": [{"protocol": "TCP", "port": port}]}


def _from_monitoring(site: Site, port: int) -> dict:
    """Prometheus scraping /metrics (on the service's own port)."""
    namespace = {"kubernetes.io/metadata.name": site.monitoring_namespace}
    return {"from": [{"namespaceSelector": {"matchLabels": namespace}}],
            "ports": [{"protocol": "TCP", "port": port}]}


def app_policy(info: ServiceInfo, site: Site) -> dict:
    """A service's pods reach DNS, their own database and the broker; payments also the public internet on 443
    (webhooks), the portal that (its OpenID Connect issuer) and the four services' APIs. They are reached by the
    ingress controller and the monitoring's Prometheus (/metrics), and the services also by the portal."""
    egress = [_dns(), _own_database(info.name), _broker()]
    ingress_ = [_from_ingress_controller(site, info.port), _from_monitoring(site, info.port)]
    if info.name in ("payments", "portal"):
        egress.append(_public_https())
    if info.kind == "frontend":
        egress += [{"to": [{"podSelector": {"matchLabels": selector(s)}}],
                    "ports": [{"protocol": "TCP", "port": BY_INFO[s].port}]} for s in NAMES]
    else:
        ingress_.append({"from": [{"podSelector": {"matchLabels": selector("portal")}}],
                         "ports": [{"protocol": "TCP", "port": info.port}]})
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": meta(info.name, site, labels(info.name, "network-policy")),
            "spec": {"podSelector": {"matchLabels": {**selector(info.name), "app.kubernetes.io/part-of": PART_OF}},
                     "policyTypes": ["Ingress", "Egress"], "ingress": ingress_, "egress": egress}}


def migration_policy(info: ServiceInfo, site: Site) -> dict:
    """A migration Job's pod reaches DNS and its own database, nothing else, and is reached by nobody."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": meta(f"{info.name}-migration", site, labels(info.name, "network-policy")),
            "spec": {"podSelector": {"matchLabels": {**selector(info.name, "migration"),
                                                     "app.kubernetes.io/part-of": PART_OF}},
                     "policyTypes": ["Ingress", "Egress"], "ingress": [],
                     "egress": [_dns(), _own_database(info.name)]}}


def database_policy(info: ServiceInfo, site: Site) -> dict:
    """A database is reached by its own service only, its other instances (replication) and the operator."""
    cluster = db_cluster(info.name)
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": meta(cluster, site, labels(cluster, "network-policy")),
            "spec": {"podSelector": {"matchLabels": {"cnpg.io/cluster": cluster}}, "policyTypes": ["Ingress"],
                     "ingress": [
                         {"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": info.name,
                                                                    "app.kubernetes.io/part-of": PART_OF}}}],
                          "ports": [{"protocol": "TCP", "port": 5432}]},
                         {"from": [{"podSelector": {"matchLabels": {"cnpg.io/cluster": cluster}}}],
                          "ports": [{"protocol": "TCP", "port": 5432}, {"protocol": "TCP", "port": 8000}]},
                         {"from": [{"namespaceSelector": {"matchLabels": {
                             "kubernetes.io/metadata.name": site.cnpg_namespace}}}]}]}}


def broker_policy(site: Site) -> dict:
    """The broker is reached by the services and the portal (AMQP), its own nodes (clustering) and the
    operators (the management API)."""
    nodes = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": RABBITMQ_CLUSTER}}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": meta(RABBITMQ_CLUSTER, site, labels(RABBITMQ_CLUSTER, "network-policy")),
            "spec": {"podSelector": nodes["podSelector"], "policyTypes": ["Ingress"], "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": PART_OF}}}],
                 "ports": [{"protocol": "TCP", "port": 5672}]},
                {"from": [nodes], "ports": [{"protocol": "TCP", "port": p} for p in (4369, 5672, 15672, 25672)]},
                {"from": [{"namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": site.rabbitmq_operator_namespace}}}],
                 "ports": [{"protocol": "TCP", "port": 15672}]}]}}


def deny_all_ingress(site: Site) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": meta("default-deny-ingress", site, {"app.kubernetes.io/part-of": PART_OF}),
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}


# ------------------------------------------------------------------ RabbitMQ: the cluster and its topology

def _k8s_name(*parts: str) -> str:
    """A DNS-1123 name for a broker object (routing keys hold ``#`` and ``*``): readable, unique by a digest."""
    readable = re.sub(r"[^a-z0-9.-]+", "-", ".".join(parts).lower()).strip("-.")[:200].strip("-.")
    return f"{readable}-{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:6]}"


def _cluster_ref() -> dict:
    return {"rabbitmqClusterReference": {"name": RABBITMQ_CLUSTER}}


def rabbitmq_cluster(profile: Profile, site: Site) -> dict:
    spec = {"replicas": 3, "image": RABBITMQ_IMAGE, "resources": profile.rabbitmq_size.resources(),
            "persistence": {"storage": profile.rabbitmq_storage},
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app.kubernetes.io/name": RABBITMQ_CLUSTER}},
                 "topologyKey": "kubernetes.io/hostname"}]}}}
    if site.storage_class:
        spec["persistence"]["storageClassName"] = site.storage_class
    return {"apiVersion": "rabbitmq.com/v1beta1", "kind": "RabbitmqCluster",
            "metadata": meta(RABBITMQ_CLUSTER, site, {"app.kubernetes.io/part-of": PART_OF}), "spec": spec}


def topology(site: Site) -> list[dict]:
    """``seteli_shared.broker.definitions()`` (the same source as deploy/rabbitmq/definitions.json) as
    Messaging Topology Operator resources, and a broker user per service with its template's permissions."""
    defs = definitions(BUS_NAMESPACE, "/", DELIVERY_LIMIT)
    docs = []

    def add(kind: str, name: str, spec: dict) -> None:
        docs.append({"apiVersion": "rabbitmq.com/v1beta1", "kind": kind,
                     "metadata": meta(name, site, {"app.kubernetes.io/part-of": PART_OF}),
                     "spec": {**spec, **_cluster_ref()}})

    for e in defs["exchanges"]:
        add("Exchange", _k8s_name("exchange", e["name"]), {"name": e["name"], "vhost": e["vhost"], "type": e["type"],
                                                           "durable": e["durable"], "autoDelete": e["auto_delete"]})
    for q in defs["queues"]:
        arguments = {k: v for k, v in q["arguments"].items() if k != "x-queue-type"}
        spec = {"name": q["name"], "vhost": q["vhost"], "type": q["arguments"]["x-queue-type"],
                "durable": q["durable"], "autoDelete": q["auto_delete"],
                # deleting the resource must not delete the messages waiting in the queue
                "deletionPolicy": "retain"}
        if arguments:
            spec["arguments"] = arguments
        add("Queue", _k8s_name("queue", q["name"]), spec)
    for b in defs["bindings"]:
        add("Binding", _k8s_name("binding", b["source"], b["destination"], b["routing_key"]),
            {"vhost": b["vhost"], "source": b["source"], "destination": b["destination"],
             "destinationType": b["destination_type"], "routingKey": b["routing_key"]})
    for p in defs["policies"]:
        add("Policy", _k8s_name("policy", p["name"]),
            {"name": p["name"], "vhost": p["vhost"], "pattern": p["pattern"], "applyTo": p["apply-to"],
             "priority": p["priority"], "definition": p["definition"]})
    for info in EVERYTHING:
        user = broker_user(info.name)
        add("User", user, {"tags": [], "importCredentialsSecret": {"name": broker_user_secret(info.name)}})
        add("Permission", f"{user}.root", {"vhost": "/", "userReference": {"name": user},
                                           "permissions": broker_permissions(info.name)})
    return docs


def broker_permissions(name: str) -> dict[str, str]:
    """A service's from its template; the portal's none at all: it only counts dead letters with passive
    declares, which RabbitMQ allows any user of the vhost (checked against RabbitMQ 3.10 here)."""
    if name == "portal":
        return {"configure": "^$", "write": "^$", "read": "^$"}
    t = USER_TEMPLATES["service"]
    return {k: t[k].replace("{ns}", BUS_NAMESPACE).replace("{id}", name) for k in ("configure", "write", "read")}


# ------------------------------------------------------------------ PostgreSQL (CloudNativePG)

def object_store(profile: Profile, site: Site) -> dict:
    return {"apiVersion": "barmancloud.cnpg.io/v1", "kind": "ObjectStore",
            "metadata": meta(OBJECT_STORE, site, {"app.kubernetes.io/part-of": PART_OF}),
            "spec": {"retentionPolicy": profile.backup_retention,
                     "configuration": {
                         "destinationPath": site.backup_destination,
                         "s3Credentials": {"accessKeyId": {"name": BACKUP_SECRET, "key": "ACCESS_KEY_ID"},
                                           "secretAccessKey": {"name": BACKUP_SECRET, "key": "ACCESS_SECRET_KEY"}},
                         "wal": {"compression": "gzip"}, "data": {"compression": "gzip"}}}}


def database(info: ServiceInfo, profile: Profile, site: Site) -> dict:
    """A primary and its replicas (streaming, on other nodes), WAL archived and base backups kept in the object
    store through the Barman Cloud plugin (the in-tree ``barmanObjectStore`` is deprecated since 1.26)."""
    storage = {"size": profile.db_storage}
    if site.storage_class:
        storage["storageClass"] = site.storage_class
    parameters = {**profile.db_parameters, "max_connections": str(max_connections(info, profile))}
    return {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
            "metadata": meta(db_cluster(info.name), site, labels(db_cluster(info.name), "database")),
            "spec": {"instances": profile.db_instances, "imageName": POSTGRES_IMAGE,
                     "primaryUpdateStrategy": "unsupervised",
                     "postgresql": {"parameters": parameters},
                     "bootstrap": {"initdb": {"database": info.name, "owner": info.name,
                                              "secret": {"name": db_owner_secret(info.name)}}},
                     "storage": storage, "resources": profile.db_size.resources(),
                     "affinity": {"enablePodAntiAffinity": True, "topologyKey": "kubernetes.io/hostname",
                                  "podAntiAffinityType": "required"},
                     "plugins": [{"name": BARMAN_PLUGIN, "isWALArchiver": True,
                                  "parameters": {"barmanObjectName": OBJECT_STORE}}]}}


def scheduled_backup(info: ServiceInfo, site: Site) -> dict:
    return {"apiVersion": "postgresql.cnpg.io/v1", "kind": "ScheduledBackup",
            "metadata": meta(db_cluster(info.name), site, labels(db_cluster(info.name), "backup")),
            "spec": {"schedule": "0 30 1 * * *", "backupOwnerReference": "self", "method": "plugin",
                     "pluginConfiguration": {"name": BARMAN_PLUGIN}, "cluster": {"name": db_cluster(info.name)}}}


# ------------------------------------------------------------------ the files

BY_INFO = {info.name: info for info in EVERYTHING}


def namespace(site: Site) -> dict:
    """Pods are held to the "baseline" Pod Security Standard and warned about "restricted" (which the seteli
    pods meet; the operators' pods are theirs to keep)."""
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": site.namespace, "labels": {
                "app.kubernetes.io/part-of": PART_OF, "pod-security.kubernetes.io/enforce": "baseline",
                "pod-security.kubernetes.io/warn": "restricted", "pod-security.kubernetes.io/audit": "restricted"}}}


def render_profile(profile: Profile, site: Site) -> dict[str, list[dict]]:
    settings = {info.name: settings_env(info, profile, site) for info in EVERYTHING}
    platform: list[dict] = []
    for info in EVERYTHING:
        platform.append({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": meta(settings_configmap(info.name), site, labels(info.name, "settings")),
                         "data": settings[info.name]})
        platform.append({"apiVersion": "v1", "kind": "ServiceAccount",
                         "metadata": meta(info.name, site, labels(info.name, "server")),
                         "automountServiceAccountToken": False})
    platform += [deny_all_ingress(site), broker_policy(site)]
    platform += [app_policy(info, site) for info in EVERYTHING]
    platform += [migration_policy(info, site) for info in EVERYTHING if info.database]
    platform += [database_policy(info, site) for info in EVERYTHING if info.database]
    platform += [rabbitmq_cluster(profile, site), *topology(site), object_store(profile, site)]
    for info in EVERYTHING:
        if info.database:
            platform += [database(info, profile, site), scheduled_backup(info, site)]
    services: list[dict] = []
    for info in EVERYTHING:
        services += [deployment(info, profile, site, settings[info.name]), service(info, site),
                     disruption_budget(info, site), autoscaler(info, profile, site)]
    services.append(ingress(site))
    return {"0-namespace.yaml": [namespace(site)], "1-platform.yaml": platform,
            "2-migrate.yaml": [migration(info, profile, site, settings[info.name])
                               for info in EVERYTHING if info.database],
            "3-services.yaml": services}


STAGE_NOTES = {
    "0-namespace.yaml": "first; then create the Secrets and the ConfigMap seteli-identity (README)",
    "1-platform.yaml": "then wait: kubectl -n {ns} wait --for=condition=Ready cluster.postgresql.cnpg.io --all "
                       "--timeout=15m; kubectl -n {ns} wait --for=condition=AllReplicasReady "
                       f"rabbitmqcluster/{RABBITMQ_CLUSTER} --timeout=15m",
    "2-migrate.yaml": "then wait: kubectl -n {ns} wait --for=condition=complete job "
                      "-l app.kubernetes.io/component=migration,app.kubernetes.io/version={release} --timeout=30m",
    "3-services.yaml": "last: kubectl -n {ns} rollout status deployment -l app.kubernetes.io/part-of=seteli",
}


def dump(filename: str, profile: Profile, site: Site, docs: list[dict]) -> str:
    head = (f"# Generated by scripts/gen_kubernetes.py from seteli_shared.manifest: do not edit.\n"
            f"# Profile {profile.name} ({profile.about}), release {site.tag}, Kubernetes {KUBERNETES_VERSION}.\n"
            f"# kubectl apply -f {filename}: "
            f"{STAGE_NOTES[filename].format(ns=site.namespace, release=site.tag)}\n")
    return head + yaml.safe_dump_all(docs, sort_keys=False, width=120, explicit_start=True)


def check_settings(profile: Profile, site: Site) -> None:
    """Each service's settings class accepts its ConfigMap with its Secrets in place (stand-ins of the right
    shape): a typo in an option (a pod network that is no network) stops the generator, not the pods."""
    for info in EVERYTHING:
        given = {key.lower(): "x" * 48 for key in SECRET_SETTINGS[info.name]}
        given.update({"database_url": f"postgresql+asyncpg://{info.name}@{db_cluster(info.name)}-rw/{info.name}",
                      "amqp_url": f"amqp://{RABBITMQ_CLUSTER}:5672/"})
        given.update({key.lower(): value for key, value in settings_env(info, profile, site).items()})
        settings_class(info.name)(**given)


def render(site: Site = Site(), out: Path = OUT) -> dict[Path, str]:
    files: dict[Path, str] = {}
    for profile in PROFILES:
        check_settings(profile, site)
        for filename, docs in render_profile(profile, site).items():
            validate_all(docs)
            files[out / profile.name / filename] = dump(filename, profile, site, docs)
    return files


# ------------------------------------------------------------------ a first set of Secrets (never committed)

def _password() -> str:
    return secrets.token_urlsafe(32)  # URL-safe: it goes into DATABASE_URL and AMQP_URL as it is


def _signing_key() -> tuple[str, dict]:
    """An RS256 key for the clients' light-login tokens: the private PEM and its public JWK."""
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return pem, {**jwk, "use": "sig", "alg": "RS256"}


def first_secrets(site: Site = Site()) -> tuple[list[dict], dict]:
    """Every Secret of ``operator_secrets()`` with fresh values (the backup store's keys left for the operator
    to fill in), and the public JWK of the generated token signing key, for the JWKS."""
    values: dict[str, dict[str, str]] = {}
    pem, jwk = _signing_key()
    jwk["kid"] = f"seteli-vouchers-{secrets.token_hex(4)}"
    for info in EVERYTHING:
        db_password, broker_password = _password(), _password()
        env = {"DATABASE_URL": f"postgresql+asyncpg://{info.name}:{db_password}@{db_cluster(info.name)}-rw:5432/"
                               f"{info.name}",
               "AMQP_URL": f"amqp://{broker_user(info.name)}:{broker_password}@{RABBITMQ_CLUSTER}:5672/"}
        if info.name == "payments":
            env["IDEMPOTENCY_KEY_SECRET"] = secrets.token_urlsafe(48)
        if info.name == "vouchers":
            env.update({"TOKEN_SIGNING_KEY": pem, "TOKEN_SIGNING_KID": jwk["kid"]})
        if info.name == "portal":  # the client secret from the OpenID Connect issuer, if the client is confidential
            env.update({"PORTAL_SESSION_SECRET": secrets.token_urlsafe(48), "OIDC_CLIENT_SECRET": ""})
        values[env_secret(info.name)] = env
        values[db_owner_secret(info.name)] = {"username": info.name, "password": db_password}
        values[broker_user_secret(info.name)] = {"username": broker_user(info.name), "password": broker_password}
    values[BACKUP_SECRET] = {"ACCESS_KEY_ID": "", "ACCESS_SECRET_KEY": ""}
    docs = []
    for name, data in values.items():
        docs.append({"apiVersion": "v1", "kind": "Secret",
                     "metadata": meta(name, site, {"app.kubernetes.io/part-of": PART_OF}),
                     "type": "kubernetes.io/basic-auth" if name.endswith("-db-owner") else "Opaque",
                     "stringData": data})
    return docs, jwk


# ------------------------------------------------------------------ command line

SITE_HELP = {
    "namespace": "the Kubernetes namespace of everything",
    "domain": "the portal's host name; each API at <service>.<domain>",
    "image_registry": "where the images seteli-<service>:<release> are pushed",
    "release": "the images' tag, also in the migration Jobs' names (default: the version in pyproject.toml)",
    "pod_cidr": "the pod network, whose X-Forwarded-For the vouchers service and the portal believe",
    "ingress_class": "the IngressClass",
    "ingress_namespace": "the ingress controller's namespace (the network policies let it in)",
    "monitoring_namespace": "the namespace of the Prometheus that scrapes /metrics (the network policies let it in)",
    "cluster_issuer": "cert-manager's ClusterIssuer of the certificate",
    "cnpg_namespace": "the CloudNativePG operator's namespace (the network policies let it in)",
    "rabbitmq_operator_namespace": "the RabbitMQ operators' namespace (the network policies let it in)",
    "backup_destination": "the object store path of the databases' backups",
    "storage_class": "the StorageClass of the volumes",
}


def _site_from(args: argparse.Namespace) -> Site:
    return Site(**{f.name: getattr(args, f.name) for f in fields(Site)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", choices=("manifests", "secrets"), default="manifests")
    parser.add_argument("--check", action="store_true", help="fail when the committed files differ")
    parser.add_argument("--out", type=Path, default=OUT, help="where the profiles' directories go")
    for f in fields(Site):
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=f.default,
                            help=f"{SITE_HELP[f.name]} (default: {f.default or 'none'})")
    args = parser.parse_args(argv)
    site = _site_from(args)
    if args.what == "secrets":
        docs, jwk = first_secrets(site)
        print("# Fresh Secrets for seteli: kubectl apply -f this file, then delete it. Never commit it.\n"
              f"# Fill in {BACKUP_SECRET} (the object store's keys) and, for a confidential client, the portal's\n"
              f"# OIDC_CLIENT_SECRET. Add this public key to the JWKS in the\n"
              f"# ConfigMap {IDENTITY_CONFIGMAP} (and at the identity provider, if it publishes the JWKS):\n"
              f"# {json.dumps(jwk)}")
        print(yaml.safe_dump_all(docs, sort_keys=False, width=120, explicit_start=True), end="")
        return 0
    stale = []
    for path, text in render(site, args.out).items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("Kubernetes manifests out of date (run: .venv/bin/python scripts/gen_kubernetes.py):",
              *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
