"""deploy/stack.py at function level: the API key a home keeps."""

from __future__ import annotations

import stat
from pathlib import Path

from deploy.stack import api_key

# api_key


def test_api_key_from_the_environment_wins_and_is_not_stored(tmp_path: Path):
    assert api_key(tmp_path, {"BXB_API_KEY": "bxb_sk_given"}) == "bxb_sk_given"
    assert not (tmp_path / "api_key").exists()


def test_api_key_is_made_on_the_first_run_and_kept_private(tmp_path: Path):
    key = api_key(tmp_path, {"BXB_API_KEY": ""})
    assert key.startswith("bxb_sk_") and len(key) > 40
    assert stat.S_IMODE((tmp_path / "api_key").stat().st_mode) == 0o600
    assert api_key(tmp_path, {}) == key  # the next run gets the same key


def test_api_key_already_in_the_home_is_reused(tmp_path: Path):
    (tmp_path / "api_key").write_text("bxb_sk_from_an_earlier_run\n")
    assert api_key(tmp_path, {}) == "bxb_sk_from_an_earlier_run"
    assert (tmp_path / "api_key").read_text() == "bxb_sk_from_an_earlier_run\n"
