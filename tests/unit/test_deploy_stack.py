"""deploy/stack.py at function level: the secrets a home keeps (its API key
and the key that signs page tokens) and the banner `make run` prints."""

from __future__ import annotations

import stat
from pathlib import Path

from deploy.stack import banner, kept_secret

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
