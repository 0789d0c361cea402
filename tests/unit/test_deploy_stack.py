"""deploy/stack.py at function level: the secrets a home keeps (its API key
and the key that signs page tokens), the banner `make run` prints, and the
replicas BXB_REPLICAS asks for and where each listens."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from deploy.stack import Stack, banner, kept_secret, replicas

# kept_secret


def test_api_key_from_the_environment_wins_and_is_not_stored(tmp_path: Path):
    assert kept_secret(tmp_path, {"BXB_API_KEY": "bxb_sk_given"}, "BXB_API_KEY") == "bxb_sk_given"
    assert not (tmp_path / "api_key").exists()


def test_api_key_is_made_on_the_first_run_and_kept_private(tmp_path: Path):
    key = kept_secret(tmp_path, {"BXB_API_KEY": ""}, "BXB_API_KEY", prefix="bxb_sk_")
    assert key.startswith("bxb_sk_") and len(key) > 40
    assert stat.S_IMODE((tmp_path / "api_key").stat().st_mode) == 0o600
    assert kept_secret(tmp_path, {}, "BXB_API_KEY", prefix="bxb_sk_") == key  # the next run gets the same key


def test_api_key_already_in_the_home_is_reused(tmp_path: Path):
    (tmp_path / "api_key").write_text("bxb_sk_from_an_earlier_run\n")
    assert kept_secret(tmp_path, {}, "BXB_API_KEY", prefix="bxb_sk_") == "bxb_sk_from_an_earlier_run"
    assert (tmp_path / "api_key").read_text() == "bxb_sk_from_an_earlier_run\n"


def test_the_secret_key_is_kept_apart_from_the_api_key(tmp_path: Path):
    secret = kept_secret(tmp_path, {}, "BXB_SECRET_KEY")
    assert len(secret) > 40 and not secret.startswith("bxb_sk_")
    assert (tmp_path / "secret_key").read_text().strip() == secret
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600
    assert kept_secret(tmp_path, {}, "BXB_SECRET_KEY") == secret
    assert kept_secret(tmp_path, {}, "BXB_API_KEY") != secret


# banner


def test_the_banner_names_the_url_the_key_and_each_service_s_grpc_address():
    addresses = {"catalog": "127.0.0.1:40001", "metering": "127.0.0.1:40002", "invoicing": "127.0.0.1:40003"}
    text = banner("http://127.0.0.1:8080", "bxb_sk_k", addresses)
    assert "bxb is running at http://127.0.0.1:8080\nAPI key: bxb_sk_k\n" in text
    assert "export BXB_API_KEY=bxb_sk_k" in text
    assert text.endswith(
        "gRPC services (metadata x-bxb-organization: <organization id>):\n"
        "  catalog    127.0.0.1:40001\n"
        "  metering   127.0.0.1:40002\n"
        "  invoicing  127.0.0.1:40003\n"
    )


def test_the_banner_names_the_default_organization_s_stripe_webhook_url_when_it_has_a_stripe_key():
    addresses = {"payments": "127.0.0.1:40004"}
    assert "Stripe" not in banner("http://127.0.0.1:8080", "bxb_sk_k", addresses)
    text = banner("http://127.0.0.1:8080", "bxb_sk_k", addresses, stripe=True)
    assert (
        "export BXB_API_KEY=bxb_sk_k\n\nStripe webhooks: http://127.0.0.1:8080/v1/webhooks/stripe/org_default\n\n"
        in text
    )


def test_the_banner_names_every_gateway_when_there_are_several():
    text = banner("http://127.0.0.1:8080", "bxb_sk_k", {"catalog": "a:1,b:2"}, others=["http://127.0.0.1:8081"])
    assert "bxb is running at http://127.0.0.1:8080 (and http://127.0.0.1:8081)\n" in text
    assert text.endswith("  catalog  a:1,b:2\n")


# replicas


def test_one_process_of_each_by_default():
    assert replicas({}) == {"catalog": 1, "metering": 1, "invoicing": 1, "payments": 1, "gateway": 1}


def test_replicas_are_read_per_service():
    env = {"BXB_REPLICAS": " invoicing=2, gateway=3,,payments=1", "BXB_CLICKHOUSE_URL": ""}
    assert replicas(env) == {"catalog": 1, "metering": 1, "invoicing": 2, "payments": 1, "gateway": 3}
    env = {"BXB_REPLICAS": "metering=2", "BXB_CLICKHOUSE_URL": "http://clickhouse:8123"}
    assert replicas(env)["metering"] == 2


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("billing=2", "unknown service 'billing'"),
        ("invoicing=two", "invoicing must be a count from 1 to 16, got 'two'"),
        ("invoicing=0", "invoicing must be a count"),
        ("invoicing=17", "invoicing must be a count"),
        ("invoicing", "invoicing must be a count"),
        ("metering=2", "metering replicas need BXB_CLICKHOUSE_URL"),
    ],
)
def test_a_replica_count_it_cannot_take_exits_naming_it(value: str, named: str):
    with pytest.raises(SystemExit) as caught:
        replicas({"BXB_REPLICAS": value})
    assert "BXB_REPLICAS" in str(caught.value) and named in str(caught.value)


def test_each_replica_listens_on_its_own_port_and_peers_dial_them_all(tmp_path: Path):
    stack = Stack(tmp_path, {"BXB_REPLICAS": "catalog=2"})
    stack.place("catalog")
    stack.place("metering")
    first, second = stack.listen["catalog-1"], stack.listen["catalog-2"]
    assert first != second and stack.env["BXB_CATALOG_ADDRESS"] == f"{first},{second}"
    assert stack.listen["metering"] == stack.env["BXB_METERING_ADDRESS"]  # one process: its name, as before
    assert stack.processes("catalog") == ["catalog-1", "catalog-2"]
    assert stack.processes("catalog-2") == ["catalog-2"]
    assert stack.processes("gateway") == ["gateway"]
    with pytest.raises(KeyError):
        stack.processes("catalog-3")


def test_given_addresses_are_kept_one_per_replica(tmp_path: Path):
    env = {
        "BXB_REPLICAS": "payments=2",
        "BXB_PAYMENTS_ADDRESS": "127.0.0.1:7001,127.0.0.1:7002",
        "BXB_CATALOG_ADDRESS": "127.0.0.1:7003",
        "BXB_INVOICING_ADDRESS": "dns:///invoicing:7004",
        "BXB_INVOICING_LISTEN": "0.0.0.0:7005",
        "BXB_METERING_ADDRESS": "dns:///metering:7006",
    }
    stack = Stack(tmp_path, env)
    for name in ("payments", "catalog", "invoicing", "metering"):
        stack.place(name)
    assert stack.listen == {
        "payments-1": "127.0.0.1:7001",
        "payments-2": "127.0.0.1:7002",
        "catalog": "127.0.0.1:7003",
        "invoicing": "0.0.0.0:7005",
        "metering": "[::]:7006",
    }
    stack = Stack(tmp_path, {"BXB_REPLICAS": "payments=3", "BXB_PAYMENTS_ADDRESS": "127.0.0.1:7001,127.0.0.1:7002"})
    with pytest.raises(SystemExit) as caught:
        stack.place("payments")
    assert "BXB_PAYMENTS_ADDRESS must list 3 host:port" in str(caught.value)


async def test_stopping_a_service_none_of_whose_processes_runs_is_a_key_error(tmp_path: Path):
    stack = Stack(tmp_path, {"BXB_REPLICAS": "catalog=2"})
    stack.place("catalog")
    with pytest.raises(KeyError):
        await stack.stop_service("catalog")
