"""deploy/compose.yaml, checked structurally (no compose runtime here, and no
compose-spec schema on PyPI for Python 3.12): what each container runs exists
in the image, every variable it is given is read by bxb, it starts after what
it needs (migrations after their server is healthy, services after their
migration), and the secrets come from deploy/.env (compose.env.example)."""

from __future__ import annotations

import re
from graphlib import TopologicalSorter
from typing import Any

import pytest
import yaml

from tests.unit.deploy_checks import DATABASES, GRPC_PORTS, ROOT, SERVICES, check_command, unknown_names

COMPOSE = ROOT / "deploy" / "compose.yaml"
INFRA = {"postgres", "nats", "clickhouse"}
BXB = {*SERVICES, "gateway", *(f"migrate-{service}" for service in SERVICES)}
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?([-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def test_the_stack_is_the_three_servers_the_migrations_the_services_and_the_gateway(services):
    assert set(services) == INFRA | BXB


def test_every_bxb_container_runs_the_image_built_from_the_dockerfile(services):
    for name in BXB:
        service = services[name]
        assert service["image"] == "${BXB_IMAGE:-bxb:dev}"
        build = service["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == ROOT / "deploy" / "Dockerfile"
        assert service["read_only"] is True and "/tmp" in service["tmpfs"]
        check_command(service["command"])


def test_each_migration_runs_its_services_migrate_once(services):
    for service in SERVICES:
        job = services[f"migrate-{service}"]
        assert job["command"] == ["python", "-m", f"services.{service}", "migrate"]
        assert job["restart"] == "no"
        assert services[service]["command"] == ["python", "-m", f"services.{service}"]


def test_every_variable_given_to_bxb_is_one_it_reads(services):
    for name in BXB:
        assert unknown_names(services[name]["environment"]) == [], name


def test_services_listen_where_their_peers_dial(services):
    for service, port in GRPC_PORTS.items():
        env = services[service]["environment"]
        assert env[f"BXB_{service.upper()}_LISTEN"] == f"0.0.0.0:{port}"
        for peer in BXB:
            assert services[peer]["environment"][f"BXB_{service.upper()}_ADDRESS"] == f"dns:///{service}:{port}"
        assert env["BXB_MIGRATE_ON_START"] == "0"  # the migrate-* one-shots did it
    gateway = services["gateway"]
    assert gateway["environment"]["BXB_GATEWAY_HOST"] == "0.0.0.0"
    assert gateway["ports"] == ["${BXB_GATEWAY_PUBLISH:-127.0.0.1:8080}:" + gateway["environment"]["BXB_GATEWAY_PORT"]]


def test_start_order(services):
    graph = {name: set(service.get("depends_on", {})) for name, service in services.items()}
    for name, needs in graph.items():
        assert needs <= set(services), f"{name} depends on what is not defined"
    TopologicalSorter(graph).prepare()  # raises CycleError on a cycle
    conditions = {
        (name, need): spec["condition"]
        for name, service in services.items()
        for need, spec in service.get("depends_on", {}).items()
    }
    for (name, need), condition in conditions.items():
        if condition == "service_healthy":
            assert "healthcheck" in services[need], f"{name} waits for {need} to be healthy, which it never reports"
    for service in SERVICES:
        server = "clickhouse" if service == "metering" else "postgres"
        assert conditions[(f"migrate-{service}", server)] == "service_healthy"
        assert conditions[(service, f"migrate-{service}")] == "service_completed_successfully"
        assert conditions[(service, "nats")] == "service_healthy"
        assert ("gateway", service) in conditions


def test_each_database_url_names_a_database_the_init_script_creates(services):
    created = set(
        re.findall(r"CREATE DATABASE (\w+);", (ROOT / "deploy" / "compose" / "postgres-init.sql").read_text())
    )
    env = services["catalog"]["environment"]
    urls = {service: env[f"BXB_{service.upper()}_DATABASE_URL"] for service in DATABASES}
    assert {url.rsplit("/", 1)[1] for url in urls.values()} == created
    for url in urls.values():
        assert url.startswith("postgresql://bxb:${POSTGRES_PASSWORD")
    mounted = services["postgres"]["volumes"]
    assert "./compose/postgres-init.sql:/docker-entrypoint-initdb.d/10-bxb.sql:ro" in mounted
    assert services["postgres"]["environment"]["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"


def test_nats_runs_jetstream_with_the_credentials_the_services_use(services):
    command = services["nats"]["command"]
    assert "-js" in command
    assert command[command.index("--user") + 1] == services["catalog"]["environment"]["BXB_NATS_USER"]
    assert command[command.index("--pass") + 1] == "${NATS_PASSWORD}"


def test_every_required_value_is_in_the_env_file_template(compose):
    text = COMPOSE.read_text()
    template = (ROOT / "deploy" / "compose.env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", template, re.MULTILINE))
    required = {name for name, kind, _ in INTERPOLATION.findall(text) if kind == "?"}
    assert required == {"BXB_SECRET_KEY", "BXB_API_KEY", "POSTGRES_PASSWORD", "NATS_PASSWORD", "CLICKHOUSE_PASSWORD"}
    unset = {name for name, kind, _ in INTERPOLATION.findall(text) if kind == ""}
    assert unset <= required, "a bare ${VAR} must be one compose already requires"
    optional = {name for name, kind, _ in INTERPOLATION.findall(text) if kind == "-"}
    assert required | optional <= documented
    assert (ROOT / "deploy" / "tls" / ".gitignore").read_text().splitlines()[1:] == ["*", "!.gitignore"]
