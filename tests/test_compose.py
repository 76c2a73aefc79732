"""docker-compose.yml, deploy/Dockerfile and the PostgreSQL init script agree with the manifest
(``seteli_shared.manifest``) and the code.

No Docker is needed: the files are parsed and compared with what the services really do — the
manifest's names and ports, the port each ``__main__.py`` serves on by default, the fields of each
service's settings class, the databases the init script creates. The compose file stays written by
hand; renaming a port, adding a service to only one of them, adding an unknown environment variable
or pointing a service at another service's database makes a test here fail.
"""
from __future__ import annotations

import importlib
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from seteli_shared.manifest import BY_NAME, FRONTENDS, NAMES, WITH_DATABASE

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
INIT_SQL = ROOT / "deploy" / "postgres" / "init-databases.sql"

DOCKERFILE = ROOT / "deploy" / "Dockerfile"

SETTINGS_CLASSES = {name: f"{name}.settings:{name.capitalize()}Settings" for name in NAMES}
SERVICES = list(NAMES)
INFRASTRUCTURE = ("rabbitmq", "postgres")
POSTGRES_USER = "seteli"


# ------------------------------------------------------------------ helpers

def _load_compose() -> dict:
    with COMPOSE_FILE.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "compose file has no services"
    return data


COMPOSE = _load_compose()


def _service(name: str) -> dict:
    return COMPOSE["services"][name]


_INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}|\$(?P<bare>\w+)")


def _interpolate(value: str) -> str:
    """Compose-style ``${VAR:-default}`` with the defaults only (deterministic, ignores the caller's env)."""
    return _INTERPOLATION.sub(lambda m: m.group("default") or "", str(value))


def _environment(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        env = {k: v for k, v in pairs}
    return {str(k): _interpolate(v) for k, v in env.items()}


def _published_ports(svc: dict) -> list[tuple[int, int]]:
    """(host, container) pairs of a service's ``ports``, short or long syntax."""
    out = []
    for entry in svc.get("ports") or []:
        if isinstance(entry, dict):
            out.append((int(entry["published"]), int(entry["target"])))
            continue
        spec = str(entry).split("/", 1)[0]  # drop /tcp
        parts = spec.split(":")
        assert len(parts) in (2, 3), f"port {entry!r} does not publish a host port"
        out.append((int(parts[-2]), int(parts[-1])))
    return out


def _dockerfile_path(name: str) -> Path:
    build = _service(name)["build"]
    assert isinstance(build, dict), f"{name}: build must name a context and a dockerfile"
    context = ROOT / build.get("context", ".")
    return (context / build["dockerfile"]).resolve()


def _build_args(name: str) -> dict[str, str]:
    args = _service(name)["build"].get("args") or {}
    if isinstance(args, list):
        args = dict(item.split("=", 1) for item in args)
    return {str(k): str(v) for k, v in args.items()}


_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def _expand(text: str, variables: dict[str, str]) -> str:
    """Docker's ``${VAR}``/``$VAR`` substitution for the variables we know; others stay as written."""
    return _VARIABLE.sub(lambda m: variables.get(m[1] or m[2], m[0]), text)


def _resolved_final_stage(name: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The last stage's instructions with the service's build arguments (and the stage's ``ENV``)
    substituted where Docker substitutes them, and that stage's environment."""
    final, _ = _dockerfile_instructions(_dockerfile_path(name))
    given, variables, out = _build_args(name), {}, []
    for word, args in final:
        if word == "ARG":
            key, _, default = args.partition("=")
            variables[key] = given.get(key, default)
        elif word == "ENV":
            for key, value in (pair.split("=", 1) for pair in shlex.split(args)):
                variables[key] = _expand(value, variables)
        out.append((word, _expand(args, variables) if word in ("EXPOSE", "ENV", "USER", "WORKDIR") else args))
    env = {k: v for word, args in out if word == "ENV" for k, v in (p.split("=", 1) for p in shlex.split(args))}
    return out, env


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the last build stage, continuation lines joined."""
    logical, current = [], ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # comment inside a continued instruction
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            logical.append(current.strip())
        current = ""
    if current.strip():
        logical.append(current.strip())
    instructions = []
    for line in logical:
        word, _, rest = line.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:], instructions


def _exec_form(args: str) -> list[str]:
    args = args.strip()
    if args.startswith("["):
        return json.loads(args)
    return shlex.split(args)


def _default_port(name: str) -> int:
    """The port ``seteli-<name> serve`` uses by default: the manifest's, unless __main__ overrides it."""
    source = (ROOT / "services" / name / "src" / name / "__main__.py").read_text(encoding="utf-8")
    found = re.findall(r"default_port\s*=\s*(\d+)", source)
    assert not found, f"{name}/__main__.py hard-codes a port; the manifest is the one place for it"
    return BY_NAME[name].port


def _settings_class(name: str):
    module, _, cls = SETTINGS_CLASSES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def _created_databases() -> set[str]:
    sql = INIT_SQL.read_text(encoding="utf-8")
    sql = re.sub(r"--[^\n]*", "", sql)
    sql = re.sub(r"/\*.*?\*/", "", sql, flags=re.S)
    return {m.lower() for m in re.findall(r"\bCREATE\s+DATABASE\s+\"?(\w+)\"?", sql, flags=re.I)}


def _database_of(name: str) -> tuple[str, str, str, str]:
    """(scheme, user, host, database) of a service's DATABASE_URL."""
    url = _environment(_service(name)).get("DATABASE_URL")
    assert url, f"{name}: DATABASE_URL is not set"
    m = re.fullmatch(r"(?P<scheme>[\w+]+)://(?P<user>[^:@/]+)(?::[^@]*)?@(?P<host>[^:/]+)(?::\d+)?/(?P<db>\w+)",
                     url)
    assert m, f"{name}: DATABASE_URL {url!r} is not scheme://user:password@host:port/database"
    return m["scheme"], m["user"], m["host"], m["db"]


def _healthcheck_test(svc: dict) -> str:
    test = (svc.get("healthcheck") or {}).get("test")
    assert test, "no healthcheck"
    return " ".join(test) if isinstance(test, list) else str(test)


# ------------------------------------------------------------------ the compose file

def test_compose_runs_exactly_the_manifests_services_and_the_infrastructure():
    assert set(COMPOSE["services"]) == set(NAMES) | {f.name for f in FRONTENDS} | set(INFRASTRUCTURE)


@pytest.mark.parametrize("name", [f.name for f in FRONTENDS])
def test_a_frontend_is_built_from_the_one_dockerfile_and_calls_the_services_by_their_compose_names(name):
    """The portal: the same Dockerfile and port rules, its own database (its sessions), every variable a
    settings field, each service's URL its compose host and manifest port, started once the services
    and the database are healthy."""
    svc, port = _service(name), BY_NAME[name].port
    assert _dockerfile_path(name) == DOCKERFILE.resolve()
    assert _build_args(name) == {"SERVICE": name, "PORT": str(port)}
    assert _published_ports(svc) == [(port, port)]
    assert f":{port}/health/live" in _healthcheck_test(svc)
    assert _default_port(name) == port
    settings_cls = getattr(importlib.import_module(f"{name}.settings"), f"{name.capitalize()}Settings")
    env = _environment(svc)
    unknown = sorted(var for var in env if var.lower() not in settings_cls.model_fields)
    assert not unknown, f"{name}: compose sets {unknown}, which {settings_cls.__name__} does not read"
    assert _database_of(name) == ("postgresql+asyncpg", POSTGRES_USER, "postgres", name)
    assert name in _created_databases()
    assert env.get("AMQP_URL") == "amqp://guest:guest@rabbitmq:5672/"  # only to count dead letters
    for service in NAMES:
        assert env.get(f"{service.upper()}_URL") == f"http://{service}:{BY_NAME[service].port}", service
    depends = svc.get("depends_on") or {}
    needed = (*NAMES, "postgres")
    assert {s: (depends.get(s) or {}).get("condition") for s in needed} == {s: "service_healthy" for s in needed}


def test_the_vouchers_service_believes_x_forwarded_for_from_the_portal_and_nobody_else():
    """The light login slows wrong codes per browser address, which the portal passes on: the portal has a
    fixed address on the system's network, and that address (only) is the vouchers service's trusted proxy."""
    from ipaddress import ip_address, ip_network

    from seteli_shared.addresses import TrustedProxies

    subnets = [ip_network(c["subnet"]) for c in COMPOSE["networks"]["default"]["ipam"]["config"]]
    portal = ip_address(_service("portal")["networks"]["default"]["ipv4_address"])
    assert any(portal in net for net in subnets), "the portal's address is not on the system's network"
    proxies = TrustedProxies.parse(_environment(_service("vouchers"))["TRUSTED_PROXIES"])
    assert proxies.trusts(portal)
    assert all(net.num_addresses == 1 for net in proxies.networks), "a trusted network wider than the portal"
    others = [n for n in COMPOSE["services"] if n != "vouchers" and "TRUSTED_PROXIES" in _environment(_service(n))]
    assert not others, others


def test_every_service_is_built_from_the_one_dockerfile_with_its_name_and_port():
    for name in NAMES:
        assert _dockerfile_path(name) == DOCKERFILE.resolve(), name
        assert _build_args(name) == {"SERVICE": name, "PORT": str(BY_NAME[name].port)}, name
    assert not list((ROOT / "services").glob("*/Dockerfile")), "per-service Dockerfiles are replaced by deploy/Dockerfile"


def test_the_dockerfile_refuses_to_build_without_a_service():
    _, every = _dockerfile_instructions(DOCKERFILE)
    declared = [args.split("=")[0] for word, args in every if word == "ARG"]
    assert declared.count("SERVICE") == 2 and "PORT" in declared  # an ARG is per stage
    runs = [args for word, args in every if word == "RUN"]
    assert any('test -n "${SERVICE}"' in r and "exit 1" in r for r in runs)


def test_no_two_services_publish_the_same_host_port():
    seen: dict[int, str] = {}
    for name, svc in COMPOSE["services"].items():
        for host, _ in _published_ports(svc):
            assert host not in seen, f"host port {host} published by both {seen[host]} and {name}"
            seen[host] = name


def test_rabbitmq():
    svc = _service("rabbitmq")
    assert svc["image"] == "rabbitmq:3.10-management"
    test = _healthcheck_test(svc)
    assert "rabbitmq-diagnostics" in test and "ping" in test


def test_postgres_user_and_init_script_is_mounted():
    svc = _service("postgres")
    assert svc["image"] == "postgres:15"
    env = _environment(svc)
    assert env.get("POSTGRES_USER") == POSTGRES_USER
    assert env.get("POSTGRES_PASSWORD"), "POSTGRES_PASSWORD must be set"
    assert _healthcheck_test(svc)
    mounts = []
    for volume in svc.get("volumes") or []:
        if isinstance(volume, dict):
            mounts.append((volume.get("source", ""), volume.get("target", "")))
        else:
            source, target = str(volume).split(":")[:2]
            mounts.append((source, target))
    init = [(s, t) for s, t in mounts if t.startswith("/docker-entrypoint-initdb.d")]
    assert init, "no init script mounted into /docker-entrypoint-initdb.d"
    sources = {(ROOT / s).resolve() for s, _ in init}
    assert INIT_SQL.resolve() in sources, f"{INIT_SQL.relative_to(ROOT)} is not mounted (mounted: {init})"
    for source, target in init:
        if (ROOT / source).resolve() == INIT_SQL.resolve():
            assert target.endswith(".sql") or target.rstrip("/") == "/docker-entrypoint-initdb.d"


def test_init_sql_creates_exactly_one_database_per_service_and_the_portal():
    assert _created_databases() == set(WITH_DATABASE) == set(SERVICES) | {"portal"}


# ------------------------------------------------------------------ per service

@pytest.mark.parametrize("name", SERVICES)
def test_port_is_the_same_in_manifest_main_dockerfile_and_compose(name):
    port = BY_NAME[name].port
    assert _default_port(name) == port, f"{name}: __main__ serves on {_default_port(name)}, the manifest says {port}"
    dockerfile = _dockerfile_path(name)
    assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
    final, env = _resolved_final_stage(name)
    assert env["SETELI_SERVICE"] == name and env["SETELI_PORT"] == str(port), env

    exposed = {int(p.split("/")[0]) for word, args in final if word == "EXPOSE" for p in args.split()}
    assert exposed == {port}, f"{name}: Dockerfile EXPOSEs {exposed}, __main__ serves on {port}"

    published = _published_ports(_service(name))
    assert published == [(port, port)], f"{name}: compose publishes {published}, expected {port}:{port}"

    cmds = [_exec_form(args) for word, args in final if word == "CMD"]
    assert cmds, f"{name}: Dockerfile has no CMD"
    cmd = cmds[-1]
    if cmd[:2] == ["sh", "-c"]:  # a shell only to read the image's environment, then exec
        cmd = shlex.split(_expand(cmd[2], env))
        assert cmd[0] == "exec", cmd
        cmd = cmd[1:]
    assert cmd[:2] == [f"seteli-{name}", "serve"], cmd
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0", cmd
    assert int(cmd[cmd.index("--port") + 1]) == port, cmd

    checks = [args for word, args in final if word == "HEALTHCHECK"]
    assert checks and "urllib" in checks[-1] and "/health/live" in checks[-1], checks
    assert f":{port}/health/live" in checks[-1] or "os.environ['SETELI_PORT']" in checks[-1], checks
    assert f":{port}/health/live" in _healthcheck_test(_service(name))


@pytest.mark.parametrize("name", SERVICES)
def test_dockerfile_builds_only_this_package_as_non_root(name):
    build = _service(name)["build"]
    assert build.get("context", ".") in (".", "./"), f"{name}: build context must be the repository root"
    final, every = _dockerfile_instructions(_dockerfile_path(name))
    assert all(args.split()[0] == "python:3.11-slim" for word, args in every if word == "FROM")
    runs = " ".join(args for word, args in every if word == "RUN")
    assert "pip install" in runs and "uv" in runs
    sync = re.search(r"uv sync\b[^&;]*", runs)
    assert sync, f"{name}: no uv sync"
    for flag in ("--frozen", "--no-dev", "--package seteli-${SERVICE}"):
        assert flag in sync.group(0), f"{name}: uv sync lacks {flag}"
    copied = " ".join(args for word, args in every if word == "COPY")
    for needed in ("pyproject.toml", "uv.lock", "shared", "services"):
        assert needed in copied, f"{name}: Dockerfile does not copy {needed}"
    users = [args for word, args in final if word == "USER"]
    assert users and users[-1] not in ("root", "0"), f"{name}: the image must not run as root"


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_uses_only_its_own_database(name):
    scheme, user, host, database = _database_of(name)
    assert scheme == "postgresql+asyncpg"
    assert host == "postgres"
    assert user == POSTGRES_USER
    assert database == name, f"{name}: DATABASE_URL names database {database!r}"
    assert database in _created_databases(), f"{name}: database {database!r} is not created by the init SQL"


def test_no_two_services_share_a_database():
    databases = [_database_of(name)[3] for name in SERVICES]
    assert len(databases) == len(set(databases)), databases


@pytest.mark.parametrize("name", SERVICES)
def test_every_environment_variable_is_a_settings_field(name):
    settings_cls = _settings_class(name)
    env = _environment(_service(name))
    unknown = sorted(var for var in env if var.lower() not in settings_cls.model_fields)
    assert not unknown, f"{name}: compose sets {unknown}, which {settings_cls.__name__} does not read"
    assert env.get("ENVIRONMENT") == "development"
    assert env.get("AMQP_URL") == "amqp://guest:guest@rabbitmq:5672/"
    # and the values are valid for those fields
    settings = settings_cls(**{var.lower(): value for var, value in env.items()})
    assert settings.service_name == name
    assert settings.database_url.endswith(f"/{name}")


@pytest.mark.parametrize("name", SERVICES)
def test_depends_on_healthy_broker_and_database(name):
    depends = _service(name).get("depends_on") or {}
    if isinstance(depends, list):
        pytest.fail(f"{name}: depends_on must wait for condition: service_healthy")
    for dep in INFRASTRUCTURE:
        assert dep in depends, f"{name} does not depend on {dep}"
        assert depends[dep].get("condition") == "service_healthy", f"{name}: {dep} condition"


def test_dockerignore_keeps_local_state_out_of_the_context():
    lines = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for pattern in (".venv", "var", ".git"):
        assert pattern in lines or f"**/{pattern}" in lines, pattern
    assert any("__pycache__" in line for line in lines)
    assert any(line.endswith("*.db") for line in lines)
