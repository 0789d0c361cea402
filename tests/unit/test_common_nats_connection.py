"""BXB_NATS_URL and its companions turned into nats-py's connection options,
and BXB_NATS_REPLICAS read."""

from __future__ import annotations

import pytest

from services.common import config, nats_connection


@pytest.fixture(autouse=True)
def no_nats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BXB_NATS_USER", "BXB_NATS_PASSWORD", "BXB_TLS_DIR", "BXB_NATS_REPLICAS"):
        monkeypatch.delenv(name, raising=False)


def test_one_server_without_credentials():
    assert nats_connection.connection("nats://nats:4222") == nats_connection.Connection(["nats://nats:4222"])


def test_several_servers_comma_separated_with_the_environment_credentials(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BXB_NATS_USER", "bxb")
    monkeypatch.setenv("BXB_NATS_PASSWORD", "s3cret")
    found = nats_connection.connection("nats://n1:4222, nats://n2:4222,,nats://n3:4222")
    assert found == nats_connection.Connection(["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"], "bxb", "s3cret")


def test_the_urls_userinfo_is_taken_out_decoded_and_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BXB_NATS_USER", "env-user")
    monkeypatch.setenv("BXB_NATS_PASSWORD", "env-password")
    found = nats_connection.connection("nats://ops%40bxb:p%3Aw%40d@n1:4222,nats://n2:4222")
    assert found == nats_connection.Connection(["nats://n1:4222", "nats://n2:4222"], "ops@bxb", "p:w@d")


def test_a_url_naming_no_server_is_refused():
    with pytest.raises(ValueError, match="no NATS server in ' , '"):
        nats_connection.connection(" , ")


def test_replicas_default_to_one_and_take_a_small_whole_number(monkeypatch: pytest.MonkeyPatch):
    assert config.nats_replicas() == 1
    monkeypatch.setenv("BXB_NATS_REPLICAS", "3")
    assert config.nats_replicas() == 3
    for wrong in ("0", "6", "three", "-1"):
        monkeypatch.setenv("BXB_NATS_REPLICAS", wrong)
        with pytest.raises(SystemExit, match=f"BXB_NATS_REPLICAS must be a whole number from 1 to 5, got '{wrong}'"):
            config.nats_replicas()
