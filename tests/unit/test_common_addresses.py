"""Where services listen and what peers dial: BXB_<SVC>_LISTEN and
BXB_<SVC>_ADDRESS (one host:port, a replica list, a gRPC target), and the
channel's gRPC target and service config made of them."""

from __future__ import annotations

import json

import pytest

from services.common import channels, config


@pytest.mark.parametrize(
    ("address", "parsed"),
    [
        ("127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("catalog:50051", ("catalog", 50051)),
        (" [::1]:7 ", ("::1", 7)),
        ("catalog", None),
        ("catalog:http", None),
        (":50051", None),
        ("::1:7", None),
        ("dns:///catalog:50051", None),
        ("dns:catalog:50051", None),
        ("unix:/tmp/socket", None),
    ],
)
def test_host_port_reads_only_host_and_port(address, parsed):
    assert config.host_port(address) == parsed


def test_a_replica_list_must_be_host_port_items(monkeypatch):
    monkeypatch.setenv("BXB_CATALOG_ADDRESS", "10.0.0.1:50051,10.0.0.2:50051")
    assert config.grpc_address("catalog", 50051) == "10.0.0.1:50051,10.0.0.2:50051"
    monkeypatch.setenv("BXB_CATALOG_ADDRESS", "ipv4:10.0.0.1:50051,10.0.0.2:50051")
    assert config.grpc_address("catalog", 50051) == "ipv4:10.0.0.1:50051,10.0.0.2:50051"
    monkeypatch.setenv("BXB_CATALOG_ADDRESS", "10.0.0.1:50051,10.0.0.2")
    with pytest.raises(SystemExit) as caught:
        config.grpc_address("catalog", 50051)
    assert "BXB_CATALOG_ADDRESS" in str(caught.value) and "'10.0.0.1:50051,10.0.0.2'" in str(caught.value)


def test_a_process_listens_on_listen_else_on_a_single_address(monkeypatch):
    monkeypatch.delenv("BXB_METERING_LISTEN", raising=False)
    monkeypatch.delenv("BXB_METERING_ADDRESS", raising=False)
    assert config.listen_address("metering", 50052) == "127.0.0.1:50052"
    monkeypatch.setenv("BXB_METERING_ADDRESS", "10.0.0.5:9000")
    assert config.listen_address("metering", 50052) == "10.0.0.5:9000"
    monkeypatch.setenv("BXB_METERING_ADDRESS", "127.0.0.1:9001,127.0.0.1:9002")
    assert config.listen_address("metering", 50052) == "[::]:9001"
    monkeypatch.setenv("BXB_METERING_ADDRESS", "dns:///metering:9003")
    assert config.listen_address("metering", 50052) == "[::]:9003"
    monkeypatch.setenv("BXB_METERING_ADDRESS", "unix:/run/metering")
    assert config.listen_address("metering", 50052) == "[::]:50052"
    monkeypatch.setenv("BXB_METERING_LISTEN", "0.0.0.0:9004")
    assert config.listen_address("metering", 50052) == "0.0.0.0:9004"


def test_targets_of_addresses():
    assert channels.target("catalog:50051") == "catalog:50051"
    assert channels.target("dns:///catalog:50051") == "dns:///catalog:50051"
    assert channels.target("ipv4:10.0.0.1:1,10.0.0.2:2") == "ipv4:10.0.0.1:1,10.0.0.2:2"
    assert channels.target("10.0.0.1:1,10.0.0.2:2") == "ipv4:10.0.0.1:1,10.0.0.2:2"
    assert channels.target("[::1]:1,[fe80::2]:2") == "ipv6:[::1]:1,[fe80::2]:2"
    # A name is resolved; IPv4 addresses are preferred when both families answer.
    assert channels.target("localhost:3,10.0.0.2:2,[::1]:1") == "ipv4:127.0.0.1:3,10.0.0.2:2"


def test_a_name_that_does_not_resolve_is_left_out():
    assert channels.target("nowhere.invalid:1,10.0.0.2:2") == "ipv4:10.0.0.2:2"
    assert channels.target("nowhere.invalid:1,elsewhere.invalid:2") == "nowhere.invalid:1"


def test_the_service_config_balances_and_retries_only_idempotent_calls():
    parsed = json.loads(channels.service_config())
    assert parsed["loadBalancingConfig"] == [{"round_robin": {}}]
    [method] = parsed["methodConfig"]
    names = {f"{name['service']}/{name['method']}" for name in method["name"]}
    assert {"bxb.catalog.v1.PlanService/GetPlan", "bxb.invoicing.v1.InvoiceService/GetInvoice"} <= names
    assert names >= channels.SAFE
    assert not names & {"bxb.catalog.v1.PlanService/CreatePlan", "bxb.payments.v1.PaymentService/ChargeInvoice"}
    assert not names & {"bxb.metering.v1.EventService/IngestEvents", "bxb.invoicing.v1.BillingRunService/RunBilling"}
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
