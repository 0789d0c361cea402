"""The breaking-change guard (scripts/breaking.py, run by `make test`) on a
throwaway git repository holding a copy of proto/: before a release tag it
has nothing to compare with; after one it refuses a removed or renumbered
field and a renamed enum value, and lets an added field through."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
METRICS = Path("proto/bxb/catalog/v1/billable_metrics.proto")
GIT = [
    "git",
    "-c",
    "user.name=bxb",
    "-c",
    "user.email=bxb@example.com",
    "-c",
    "tag.gpgSign=false",
    "-c",
    "commit.gpgSign=false",
]


def git(repo: Path, *args: str) -> None:
    subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True)


def guard(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, ROOT / "scripts" / "breaking.py", "--repo", repo], capture_output=True, text=True
    )


def edit(repo: Path, pattern: str, replacement: str) -> None:
    path = repo / METRICS
    text, count = re.subn(pattern, replacement, path.read_text(), count=1, flags=re.M)
    assert count == 1, pattern
    path.write_text(text)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", "proto")
    git(tmp_path, "commit", "-q", "-m", "protos")
    return tmp_path


def test_before_the_first_release_there_is_nothing_to_compare_with(repo: Path):
    git(repo, "tag", "release-candidate")  # not a v* tag
    edit(repo, r"^  string name = 3[^;\n]*;\n", "")
    result = guard(repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no release tag (v*) yet, nothing to compare with" in result.stdout


@pytest.mark.parametrize(
    ("pattern", "replacement", "complaint"),
    [
        (r"^  string name = 3[^;\n]*;\n", "", 'message "BillableMetric" was deleted without reserving the number "3"'),
        # renumbered: field 3 is gone
        (r"^  string name = 3[^;\n]*;", "  string name = 30;", 'was deleted without reserving the number "3"'),
        # renamed: the wire is the same, JSON clients break
        (r"^  string name = 3[^;\n]*;", "  string title = 3;", 'changed name from "name" to "title"'),
        (
            r"AGGREGATION_TYPE_MAX = 3;",
            "AGGREGATION_TYPE_MAXIMUM = 3;",
            'from "AGGREGATION_TYPE_MAX" to "AGGREGATION_TYPE_MAXIMUM"',
        ),
    ],
)
def test_a_breaking_change_since_the_last_release_fails(repo: Path, pattern: str, replacement: str, complaint: str):
    git(repo, "tag", "v0.1.0")
    edit(repo, pattern, replacement)  # in the work tree, not committed: what `make test` sees
    result = guard(repo)
    assert result.returncode == 1, result.stdout + result.stderr
    assert complaint in result.stdout + result.stderr
    assert "the protos break the API of v0.1.0" in result.stdout


def test_an_added_field_passes(repo: Path):
    git(repo, "tag", "v0.1.0")
    edit(repo, r"^(  string name = 3[^;\n]*;\n)", r"\1  // A note for people.\n  string note = 99;\n")
    result = guard(repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "compatible with v0.1.0" in result.stdout


def test_the_highest_release_is_the_one_compared_with(repo: Path):
    git(repo, "tag", "v0.9.0")
    edit(repo, r"^  string name = 3[^;\n]*;\n", "")
    git(repo, "commit", "-q", "-am", "drop the name, in a major release")
    git(repo, "tag", "v0.10.0")  # higher than v0.9.0 by version, lower as text
    result = guard(repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "compatible with v0.10.0" in result.stdout
