"""deploy/stack.py at function level: the secrets a home keeps (its API key
and the key that signs page tokens)."""

from __future__ import annotations

import stat
from pathlib import Path

from deploy.stack import kept_secret

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
