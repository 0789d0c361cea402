"""Resource ids, environment configuration and the calling organization."""

from __future__ import annotations

import asyncio
import re

import pytest

from services.common import config, tenancy, trust
from services.common.errors import Unauthenticated
from services.common.ids import new_id


def test_new_id_is_prefix_and_24_lower_base32_characters():
    value = new_id("sub")
    assert re.fullmatch(r"sub_[a-z2-7]{24}", value)


def test_new_ids_do_not_repeat():
    assert len({new_id("evt") for _ in range(1000)}) == 1000


def test_env_str_prefers_a_non_empty_variable(monkeypatch):
    monkeypatch.setenv("BXB_TEST_STR", "value")
    assert config.env_str("BXB_TEST_STR", "default") == "value"
    monkeypatch.setenv("BXB_TEST_STR", "")
    assert config.env_str("BXB_TEST_STR", "default") == "default"
    monkeypatch.delenv("BXB_TEST_STR")
    assert config.env_str("BXB_TEST_STR", "default") == "default"


def test_env_float_reads_numbers_and_defaults(monkeypatch):
    monkeypatch.delenv("BXB_TEST_FLOAT", raising=False)
    assert config.env_float("BXB_TEST_FLOAT", 2.5) == 2.5
    monkeypatch.setenv("BXB_TEST_FLOAT", "")
    assert config.env_float("BXB_TEST_FLOAT", 2.5) == 2.5
    monkeypatch.setenv("BXB_TEST_FLOAT", "0.25")
    assert config.env_float("BXB_TEST_FLOAT", 2.5) == 0.25


def test_env_floats_reads_a_list_and_exits_naming_the_variable_on_garbage(monkeypatch):
    monkeypatch.delenv("BXB_TEST_FLOATS", raising=False)
    assert config.env_floats("BXB_TEST_FLOATS", (1.0, 2.0)) == (1.0, 2.0)
    monkeypatch.setenv("BXB_TEST_FLOATS", "5,300,0.5")
    assert config.env_floats("BXB_TEST_FLOATS", (1.0,)) == (5.0, 300.0, 0.5)
    monkeypatch.setenv("BXB_TEST_FLOATS", "5,soon")
    with pytest.raises(SystemExit) as caught:
        config.env_floats("BXB_TEST_FLOATS", (1.0,))
    assert "BXB_TEST_FLOATS" in str(caught.value) and "'5,soon'" in str(caught.value)


def test_env_float_exits_naming_the_variable_on_garbage(monkeypatch):
    monkeypatch.setenv("BXB_TEST_FLOAT", "soon")
    with pytest.raises(SystemExit) as caught:
        config.env_float("BXB_TEST_FLOAT", 1.0)
    assert "BXB_TEST_FLOAT" in str(caught.value)
    assert "'soon'" in str(caught.value)


def test_grpc_address_defaults_to_loopback_and_reads_the_override(monkeypatch):
    monkeypatch.delenv("BXB_METERING_ADDRESS", raising=False)
    assert config.grpc_address("metering", 50052) == "127.0.0.1:50052"
    monkeypatch.setenv("BXB_METERING_ADDRESS", "10.0.0.5:9000")
    assert config.grpc_address("metering", 50052) == "10.0.0.5:9000"


def test_nats_url_default_and_override(monkeypatch):
    monkeypatch.delenv("BXB_NATS_URL", raising=False)
    assert config.nats_url() == "nats://127.0.0.1:4222"
    monkeypatch.setenv("BXB_NATS_URL", "nats://nats:4222")
    assert config.nats_url() == "nats://nats:4222"


def test_database_url_is_per_service(monkeypatch):
    monkeypatch.delenv("BXB_INVOICING_DATABASE_URL", raising=False)
    assert config.database_url("invoicing") == "postgresql://postgres@127.0.0.1:5432/bxb_invoicing"
    monkeypatch.setenv("BXB_INVOICING_DATABASE_URL", "postgresql://db/inv")
    assert config.database_url("invoicing") == "postgresql://db/inv"


def test_organization_id_without_a_bound_organization_is_unauthenticated():
    with pytest.raises(Unauthenticated) as caught:
        tenancy.organization_id()
    assert caught.value.reason == "MISSING_ORGANIZATION"


def test_bind_and_reset_scope_the_organization():
    token = tenancy.bind("org_a")
    try:
        assert tenancy.organization_id() == "org_a"
        inner = tenancy.bind("org_b")
        assert tenancy.organization_id() == "org_b"
        tenancy.reset(inner)
        assert tenancy.organization_id() == "org_a"
    finally:
        tenancy.reset(token)
    with pytest.raises(Unauthenticated):
        tenancy.organization_id()


async def test_concurrent_tasks_each_see_their_own_organization():
    async def act_as(org: str) -> str:
        tenancy.bind(org)
        await asyncio.sleep(0)
        return tenancy.organization_id()

    assert await asyncio.gather(act_as("org_1"), act_as("org_2")) == ["org_1", "org_2"]


def test_metadata_round_trips_through_from_metadata():
    pairs = tenancy.metadata("org_x")
    assert pairs == (("x-bxb-organization", "org_x"), ("x-bxb-service", trust.service_token()))
    assert tenancy.from_metadata((("user-agent", "grpc"), *pairs)) == "org_x"


def test_from_metadata_without_the_entry_is_empty():
    assert tenancy.from_metadata(None) == ""
    assert tenancy.from_metadata(()) == ""
    assert tenancy.from_metadata((("authorization", "Bearer x"),)) == ""
