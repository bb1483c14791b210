"""The studio deployment files (infra/): docker-compose.yml, .env.example, prefect.yaml, the
Dockerfile and the Postgres / MinIO init scripts.

Docker does not run here, so nothing is started: the files are parsed and checked against each
other and against the code — the settings foleyflow reads (flows.settings.Settings), the roles
db/grants.sql creates, the flow prefect.yaml deploys."""
from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
COMPOSE_FILE = INFRA / "docker-compose.yml"
ENV_EXAMPLE = INFRA / ".env.example"
PREFECT_FILE = INFRA / "prefect.yaml"
DOCKERFILE = INFRA / "Dockerfile"
GRANTS = REPO / "db" / "grants.sql"
PG_INIT = INFRA / "postgres" / "init.sh"
MINIO_INIT = INFRA / "minio" / "init.sh"
MINIO_POLICY = INFRA / "minio" / "foleyflow-policy.json"

SERVICES = {"postgres", "minio", "minio-init", "prefect-server", "migrate", "worker", "review"}
ONE_SHOTS = {"minio-init", "migrate", "db-grants", "deployments"}
FOLEYFLOW_SERVICES = {"migrate", "worker", "review", "deployments"}
# What each service listens on inside its container.
LISTENS = {"postgres": {5432}, "minio": {9000, 9001}, "prefect-server": {4200}, "review": {8080}}
# Published beyond the host by default: the review app, for the supervisors' browsers.
EXPOSED_BY_DEFAULT = {"review"}
# Settings fields (flows/settings.py) a studio worker cannot do without.
STUDIO_FIELDS = ("db_url", "store_url", "s3_endpoint_url", "s3_access_key_id",
                 "s3_secret_access_key", "s3_region")
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

# ${VAR}, ${VAR:-default}, ${VAR:?message} (compose interpolation); $$ escapes a literal $.
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
BARE_INTERPOLATION = re.compile(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)")
CONTAINER_REF = re.compile(r"\$\$\{?[A-Za-z_][A-Za-z0-9_]*\}?")  # $$VAR: the container's own env
SECRET_WORDS = ("password", "secret")
SECRET_KEYS = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|AUTH_STRING|ROOT_USER", re.I)


# --- helpers -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: str(v) for k, v in env.items()}


def documented_variables() -> dict[str, str | None]:
    """Variables in .env.example: name -> value (None for a commented, optional one)."""
    out: dict[str, str | None] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"^(#\s*)?([A-Z_][A-Z0-9_]*)=(.*)$", line.strip())
        if m:
            name, value = m.group(2), (None if m.group(1) else m.group(3))
            if out.get(name) is None:
                out[name] = value
    return out


def without_references(value: str) -> str:
    return CONTAINER_REF.sub("", INTERPOLATION.sub("", value))


def only_reference(value: str) -> str | None:
    """The variable when `value` is exactly one ${VAR...} reference."""
    m = INTERPOLATION.fullmatch(value.strip())
    return m.group(1) if m else None


def strings(node: Any) -> list[str]:
    """Every string value (not key) in a parsed YAML tree."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return []


def command_of(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def pg_url(value: str) -> dict[str, str]:
    m = re.fullmatch(r"postgresql(?:\+(?P<driver>\w+))?://(?P<user>[^:@/]+):(?P<password>\$\{[^}]*\})"
                     r"@(?P<host>[^:/]+):(?P<port>\d+)/(?P<db>\w+)", value)
    assert m, f"not a postgres URL with a ${{…}} password: {value!r}"
    return m.groupdict()


def grants_default(variable: str) -> str:
    m = re.search(rf"\\set\s+{variable}\s+(\w+)", GRANTS.read_text())
    assert m, f"db/grants.sql sets no default for {variable}"
    return m.group(1)


def settings_env_names() -> dict[str, list[str]]:
    """Field -> the environment names flows.settings.Settings reads it from (upper case)."""
    from pydantic import AliasChoices

    from flows.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    out: dict[str, list[str]] = {}
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias or field.alias
        if alias is None:
            names = [f"{prefix}{name}"]
        elif isinstance(alias, AliasChoices):
            names = [c for c in alias.choices if isinstance(c, str)]
        else:
            names = [str(alias)]
        out[name] = [n.upper() for n in names]
    return out


def port_targets(service: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in service.get("ports") or []:
        assert isinstance(p, dict), f"use the long port syntax (target/published/host_ip): {p!r}"
        out.append(p)
    return out


def default_of(value: str) -> str:
    """`value` with each ${VAR:-default} replaced by its default (what an unset .env gives)."""
    return INTERPOLATION.sub(lambda m: m.group(3) if m.group(2) in (":-", "-") else "", value)


# --- the services ------------------------------------------------------------------------------
def test_compose_spec_file_with_every_service(compose: dict[str, Any], services: dict) -> None:
    assert "version" not in compose, "the compose spec has no version key"
    missing = (SERVICES | ONE_SHOTS) - set(services)
    assert not missing, f"missing services: {sorted(missing)}"
    for name in FOLEYFLOW_SERVICES:
        svc = services[name]
        assert svc["build"]["dockerfile"] == "infra/Dockerfile", name
        assert (INFRA / svc["build"]["context"]).resolve() == REPO, name
    for name in ONE_SHOTS:
        assert services[name].get("restart") == "no", f"{name} is a one-shot"


def test_healthchecks_on_the_state_services(services: dict) -> None:
    for name in ("postgres", "minio", "prefect-server", "worker"):
        hc = services[name].get("healthcheck")
        assert hc and hc.get("test") and not hc.get("disable"), f"{name} has no healthcheck"
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    assert services["minio"]["healthcheck"]["test"][1:] == ["mc", "ready", "local"]


def test_every_variable_is_documented_in_env_example(compose: dict[str, Any]) -> None:
    text = "\n".join(strings(compose))  # what compose interpolates: values, not comments
    used = {m.group(1) for m in INTERPOLATION.finditer(text)}
    bare = {m.group(1) for m in BARE_INTERPOLATION.finditer(text)}
    assert not bare, f"write ${{VAR}} (or $$VAR for the container's own environment): {bare}"
    documented = documented_variables()
    assert not used - set(documented), f"not in infra/.env.example: {sorted(used - set(documented))}"
    assert not set(documented) - used, f"documented but unused: {sorted(set(documented) - used)}"

    # Required ones (${VAR:?…}) are set in the example; optional ones have one default each.
    defaults: dict[str, set[str]] = {}
    for m in INTERPOLATION.finditer(text):
        name, op, arg = m.groups()
        if op == ":?":
            assert documented[name] is not None, f"{name} is required: give it a placeholder"
        elif op == ":-":
            defaults.setdefault(name, set()).add(arg)
        else:
            pytest.fail(f"${{{name}}} without a default or a :? message")
    for name, values in defaults.items():
        assert len(values) == 1, f"{name} has different defaults: {values}"
        if documented[name] is None:  # the commented example shows the default
            assert re.search(rf"^#\s*{name}={re.escape(next(iter(values)))}$",
                             ENV_EXAMPLE.read_text(), re.M), f"{name}: example != default"


def test_env_example_holds_placeholders_not_secrets() -> None:
    for name, value in documented_variables().items():
        if SECRET_KEYS.search(name):
            assert value is not None and "change-me" in value, f"{name}: a placeholder, please"


def test_no_literal_secrets_in_compose(compose: dict[str, Any], services: dict) -> None:
    for value in strings(compose):
        rest = without_references(value).lower()
        for word in SECRET_WORDS:
            assert word not in rest, f"literal {word!r} in {value!r}"
    for name, svc in services.items():
        for key, value in env_of(svc).items():
            if SECRET_KEYS.search(key):
                assert only_reference(value), f"{name}: {key} must be a ${{…}} reference"
            if "://" in value and "@" in value:  # credentials in a URL
                userinfo = value.split("://", 1)[1].rsplit("@", 1)[0]
                assert ":" not in without_references(userinfo).rstrip(":"), \
                    f"{name}: {key} holds a literal password"
    for arg in (a for svc in services.values() for a in command_of(svc)):
        if "://" in arg and "@" in arg:
            pg_url(arg)  # the password part is a ${…} reference


def test_worker_and_review_get_what_the_code_reads(services: dict) -> None:
    names = settings_env_names()
    known = {n for ns in names.values() for n in ns}
    assert set(STUDIO_FIELDS) <= set(names), "flows.settings.Settings lost a studio field"
    for svc in ("worker", "review"):
        env = {k.upper(): v for k, v in env_of(services[svc]).items()}
        for field in STUDIO_FIELDS:
            assert any(n in env for n in names[field]), f"{svc}: none of {names[field]} set"
        # Anything that looks like a foleyflow setting is one the code reads (no typos).
        ours = {k for k in env if k.startswith(("FOLEY_", "AWS_"))}
        assert ours <= known, f"{svc}: the code reads no {sorted(ours - known)}"
        assert env["FOLEY_STORE_URL"].startswith("s3://")
        assert env["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    worker = {k: v for k, v in env_of(services["worker"]).items()
              if not k.startswith("PREFECT_WORKER_")}  # the worker's own health endpoint
    assert worker == env_of(services["review"]), "worker and review app see the same settings"


def test_database_roles(services: dict) -> None:
    app, migrator = grants_default("app_role"), grants_default("migrator_role")
    for svc in ("worker", "review"):
        url = pg_url(env_of(services[svc])["FOLEY_DB_URL"])
        assert (url["user"], url["host"], url["db"]) == (app, "postgres", "foley"), svc
        assert "FOLEY_APP_PASSWORD" in url["password"]
    cmd = command_of(services["migrate"])
    assert cmd[:2] == ["db", "upgrade"] and "--url" in cmd
    url = pg_url(cmd[cmd.index("--url") + 1])
    assert (url["user"], url["host"], url["db"]) == (migrator, "postgres", "foley")
    assert "FOLEY_MIGRATOR_PASSWORD" in url["password"]
    # The Prefect server has its own database and role on the same Postgres.
    url = pg_url(env_of(services["prefect-server"])["PREFECT_API_DATABASE_CONNECTION_URL"])
    assert (url["driver"], url["user"], url["host"], url["db"]) == \
        ("asyncpg", "prefect", "postgres", "prefect")


def test_ports_are_the_ones_the_services_listen_on(services: dict) -> None:
    for name, svc in services.items():
        ports = port_targets(svc)
        assert {int(p["target"]) for p in ports} == LISTENS.get(name, set()), name
        for p in ports:
            bind = default_of(str(p.get("host_ip", "")))
            if name in EXPOSED_BY_DEFAULT:
                assert bind == "0.0.0.0", name
            else:
                assert bind == "127.0.0.1", f"{name}:{p['target']} must default to loopback"
    assert command_of(services["prefect-server"])[-4:] == ["--host", "0.0.0.0", "--port", "4200"]
    assert command_of(services["review"])[-4:] == ["--host", "0.0.0.0", "--port", "8080"]
    minio = command_of(services["minio"])
    assert minio[minio.index("--address") + 1] == ":9000"
    assert minio[minio.index("--console-address") + 1] == ":9001"


def test_depends_on_forms_no_cycle(services: dict) -> None:
    graph: dict[str, set[str]] = {}
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = spec.get("condition", "service_started")
            assert condition in CONDITIONS, condition
            if condition == "service_healthy":
                assert services[dep].get("healthcheck"), f"{dep} has no healthcheck"
            if dep in ONE_SHOTS:
                assert condition == "service_completed_successfully", f"{name} -> {dep}"
        graph[name] = set(deps)

    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"depends_on cycle: {' -> '.join(path + (node,))}"
        if node not in done:
            for dep in graph[node]:
                visit(dep, path + (node,))
            done.add(node)

    for name in graph:
        visit(name, ())
    worker = services["worker"]["depends_on"]
    assert worker["migrate"]["condition"] == "service_completed_successfully"
    assert worker["minio-init"]["condition"] == "service_completed_successfully"
    assert worker["prefect-server"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_worker_volumes(services: dict, compose: dict[str, Any]) -> None:
    mounts = {m["target"]: m for m in services["worker"]["volumes"] if isinstance(m, dict)}
    assert mounts["/media"]["read_only"] is True
    assert not mounts["/deliveries"].get("read_only")
    for m in mounts.values():
        assert m["bind"]["create_host_path"] is False  # a typo in .env fails, not mkdir as root
    named = {v.split(":")[0] for s in services.values() for v in s.get("volumes") or []
             if isinstance(v, str) and not v.startswith((".", "/"))}
    assert named <= set(compose["volumes"]), named - set(compose["volumes"])


# --- Postgres init: databases, roles, grants.sql ----------------------------------------------
def test_grants_sql_is_mounted_into_postgres_init(services: dict) -> None:
    env = env_of(services["postgres"])
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in services["postgres"]["volumes"]
                  if isinstance(v, str) and v.endswith(":ro"))
    grants_src = [s for s, t in mounts.items() if t == env["FOLEY_GRANTS_SQL"]]
    assert grants_src, f"nothing is mounted at FOLEY_GRANTS_SQL={env['FOLEY_GRANTS_SQL']}"
    assert (INFRA / grants_src[0]).resolve() == GRANTS
    init = [s for s, t in mounts.items() if t.startswith("/docker-entrypoint-initdb.d/")]
    assert init, "no init script in /docker-entrypoint-initdb.d"
    assert (INFRA / init[0]).resolve() == PG_INIT and mounts[init[0]].endswith(".sh")
    script = PG_INIT.read_text()
    assert r"\i $grants" in script and "FOLEY_GRANTS_SQL" in script
    for db in ("foley", "prefect"):
        assert f"{db}_db={db}" in script, f"init.sh creates no database {db}"
    for var in ("FOLEY_MIGRATOR_PASSWORD", "FOLEY_APP_PASSWORD", "PREFECT_DB_PASSWORD"):
        assert rf"\getenv" in script and var in script and var in env
    # The same script re-applies the grants after the first upgrade (db-grants).
    grants = services["db-grants"]
    assert grants["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert {"./postgres/init.sh:/foleyflow/init.sh:ro", "../db/grants.sql:/foleyflow/grants.sql:ro"} \
        <= set(grants["volumes"])
    assert grants["depends_on"] and "db-grants" in services["worker"]["depends_on"]


# --- MinIO: one bucket, named alike everywhere -------------------------------------------------
def test_bucket_and_policy_agree(services: dict) -> None:
    bucket = env_of(services["worker"])["FOLEY_STORE_URL"].removeprefix("s3://").split("/")[0]
    assert re.search(rf"^BUCKET={bucket}$", MINIO_INIT.read_text(), re.M), \
        f"minio/init.sh does not create the bucket of FOLEY_STORE_URL ({bucket})"
    policy = json.loads(MINIO_POLICY.read_text())
    resources = {r for st in policy["Statement"] for r in st["Resource"]}
    assert resources == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}
    actions = {a for st in policy["Statement"] for a in st["Action"]}
    assert not {a for a in actions if "Delete" in a or a == "s3:*"}, "the app key deletes nothing"
    mounts = {v.split(":")[1] for v in services["minio-init"]["volumes"]}
    assert {"/foleyflow/init.sh", "/foleyflow/foleyflow-policy.json"} <= mounts


# --- prefect.yaml ------------------------------------------------------------------------------
def test_prefect_yaml_deploys_the_pass_flow(services: dict) -> None:
    from prefect import Flow

    spec = yaml.safe_load(PREFECT_FILE.read_text())
    deployments = spec["deployments"]
    assert deployments
    workdir = re.search(r"^WORKDIR\s+(\S+)", DOCKERFILE.read_text(), re.M).group(1)
    pull = spec["pull"][0]["prefect.deployments.steps.set_working_directory"]
    assert pull["directory"] == workdir
    worker = command_of(services["worker"])
    pool = worker[worker.index("--pool") + 1]
    assert worker[worker.index("--type") + 1] == "process"
    assert f"prefect work-pool create {pool} --type process" in " ".join(
        command_of(services["deployments"]))

    names = set()
    for d in deployments:
        path, func = d["entrypoint"].split(":")
        assert (REPO / path).is_file(), path
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, func)
        assert isinstance(flow, Flow), f"{d['entrypoint']} is not a Prefect flow"
        params = flow.parameters.properties
        assert set(d.get("parameters") or {}) <= set(params), d["name"]
        assert d["work_pool"]["name"] == pool
        names.add(f"{flow.name}/{d['name']}")
        if flow.name == "foley-pass":
            assert {"timeline", "out", "approve"} <= set(params)
            assert set(flow.parameters.required or []) == {"timeline", "out"}  # given per run
            assert d["parameters"]["approve"] in ("auto", "queue")
        else:  # nightly and shot runs: nothing required that a schedule could not give
            assert not set(flow.parameters.required or []) - set(d.get("parameters") or {}) \
                or flow.name == "foley-shots", d["name"]
    assert {"foley-nightly/nightly", "foley-shots/shots"} <= names
    from flows.settings import Settings

    assert Settings.model_fields["shots_deployment"].default == "foley-shots/shots"
    [nightly] = [d for d in deployments if d["name"] == "nightly"]
    [schedule] = nightly["schedules"]
    assert schedule["active"] is True
    # the cron and zone come from the deployments service's environment, with the defaults
    deploy_env = env_of(services["deployments"])
    assert schedule["cron"] == "{{ $FOLEY_NIGHTLY_CRON }}"
    assert schedule["timezone"] == "{{ $FOLEY_TIMEZONE }}"
    assert deploy_env["FOLEY_NIGHTLY_CRON"] == "${FOLEY_NIGHTLY_CRON:-0 1 * * *}"
    assert "FOLEY_TIMEZONE" in deploy_env
    assert "foley-pass/studio" in names  # the name infra/README.md submits to
    assert "foley-pass/studio" in (INFRA / "README.md").read_text()


# --- Dockerfile --------------------------------------------------------------------------------
def test_dockerfile(services: dict) -> None:
    text = DOCKERFILE.read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert "apt-get" not in text
    torch = next(i for i, ln in enumerate(lines) if "torch==" in ln and ln.startswith("RUN"))
    base = next(i for i, ln in enumerate(lines) if "requirements/base.txt" in ln and ln.startswith("RUN"))
    package = next(i for i, ln in enumerate(lines) if "pip install --no-deps ." in ln)
    assert torch < base < package
    assert re.search(r"torch==\$\{TORCH_VERSION\}", lines[torch])
    pinned = re.search(r"^torch==(\S+)$", (REPO / "requirements/constraints.txt").read_text(), re.M)
    assert re.search(rf"ARG TORCH_VERSION={re.escape(pinned.group(1))}$", text, re.M)
    user = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert user and user[-1] not in ("root", "0")
    assert lines[-2:] == ['ENTRYPOINT ["foley"]', 'CMD ["--help"]']
    # What is copied exists and passes the context's whitelist.
    ignore = (INFRA / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {ln[1:].rstrip("/") for ln in ignore if ln.startswith("!")}
    for ln in lines:
        if ln.startswith("COPY "):
            for src in ln.split()[1:-1]:
                assert (REPO / src).exists(), src
                assert src.rstrip("/") in allowed, f"{src} is excluded by Dockerfile.dockerignore"
    assert ".env" not in allowed and "*" in ignore
    uid_args = services["worker"]["build"]["args"]
    for arg in uid_args:
        assert re.search(rf"^ARG {arg}=", text, re.M), arg
