"""`make breaking` (part of `make test`): the protos must not break what the
last release's clients send, receive or read as JSON.

Runs `buf breaking` with proto/buf.yaml's rules (WIRE_JSON: field numbers,
types and names, enum values and their names) on proto/ as it stands in the
work tree, against proto/ of the last release: the highest tag `v*` that
HEAD contains. Before the first release there is nothing to compare with:
it says so and succeeds.

`python scripts/breaking.py [--repo DIR]` (DIR: another checkout, for tests).
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import gen_proto  # noqa: E402 - a sibling script, not a package

BUF = Path(sys.executable).parent / "buf"


def last_release(repo: Path) -> str | None:
    """The highest tag v* (by version order) reachable from HEAD, if any."""
    tags = subprocess.run(
        ["git", "tag", "--list", "v*", "--merged", "HEAD", "--sort=-version:refname"],
        cwd=repo, check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    return tags[0] if tags else None


def check(repo: Path) -> int:
    tag = last_release(repo)
    if tag is None:
        print("buf breaking: no release tag (v*) yet, nothing to compare with")
        return 0
    archive = subprocess.run(
        ["git", "archive", "--format=tar", tag, "proto"], cwd=repo, check=True, capture_output=True
    )
    with tempfile.TemporaryDirectory() as released:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(released, filter="data")
        # Both sides as images protoc builds (buf cannot resolve buf/validate from source).
        now, then = Path(released) / "now.binpb", Path(released) / "then.binpb"
        gen_proto.image(now, proto_dir=repo / "proto")
        gen_proto.image(then, proto_dir=Path(released) / "proto")
        config = repo / "proto" / "buf.yaml"
        result = subprocess.run(
            [BUF, "breaking", now, "--against", then, "--config", config, "--path", "bxb", "--against-config", config]
        )
    if result.returncode != 0:
        print(f"buf breaking: the protos break the API of {tag} (see above)")
        return 1
    print(f"buf breaking: compatible with {tag}")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="the checkout to check (default: this one)")
    return check(parser.parse_args(argv[1:]).repo.resolve())


if __name__ == "__main__":
    sys.exit(main(sys.argv))
