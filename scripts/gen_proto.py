"""Regenerates the Python code of every .proto under proto/ into bxb/.

`python scripts/gen_proto.py` writes into the repository; `--check` generates
into a temporary directory and exits 1 when the committed code differs, which
is how CI catches stale generated code.
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKAGE = "bxb"
# Protos our protos import whose source no package ships: protovalidate's
# buf/validate/validate.proto comes as its descriptor, which protoc reads
# with --descriptor_set_in; its Python is generated beside ours.
VALIDATE = "buf/validate/validate.proto"
PACKAGES = (PACKAGE, "buf")


def dependency_set(directory: Path) -> Path:
    """A FileDescriptorSet of the protos known only by their descriptors."""
    from google.protobuf import descriptor_pb2
    from protovalidate._gen.buf.validate import validate_pb

    found = descriptor_pb2.FileDescriptorSet()
    found.file.add().ParseFromString(validate_pb.desc().proto.to_binary())
    path = directory / "dependencies.binpb"
    path.write_bytes(found.SerializeToString())
    return path


def generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        _protoc(
            [
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
                f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
                f"--mypy_out=quiet:{out}",
                f"--mypy_grpc_out=quiet:{out}",
                *protos,
                VALIDATE,
            ],
            dependency_set(Path(tmp)),
        )
    for package in PACKAGES:
        for directory in [out / package, *(p for p in (out / package).rglob("*") if p.is_dir())]:
            (directory / "__init__.py").touch()


def image(path: Path, extra: Sequence[str] = (), proto_dir: Path = PROTO_DIR) -> None:
    """Writes every proto under proto/ (and the `extra` files found on the
    include path, googleapis' google/rpc for one) with their imports and
    comments as one FileDescriptorSet: what buf lints, generates clients from
    and compares (it cannot resolve buf/validate from source without the
    network). `proto_dir`: another tree of them (a release's, to compare)."""
    protos = sorted(str(p.relative_to(proto_dir)) for p in proto_dir.rglob("*.proto"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        _protoc(
            ["--include_imports", "--include_source_info", f"--descriptor_set_out={path}", *protos, *extra],
            dependency_set(Path(tmp)),
            proto_dir,
        )


def _protoc(outputs: list[str], dependencies: Path, proto_dir: Path = PROTO_DIR) -> None:
    """protoc over proto/, the well-known types, googleapis' protos and the
    descriptor-only dependencies."""
    from google.api import annotations_pb2  # googleapis-common-protos ships google/api and google/rpc

    args = [
        "protoc",
        f"--descriptor_set_in={dependencies}",
        f"-I{proto_dir}",
        f"-I{resources.files('grpc_tools') / '_proto'}",
        f"-I{Path(annotations_pb2.__file__).parents[2]}",
        *outputs,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def tree(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = {f"{p}/{name}": path for p in PACKAGES for name, path in tree(Path(tmp) / p).items()}
        committed = {f"{p}/{name}": path for p in PACKAGES for name, path in tree(ROOT / p).items()}
        stale = sorted(
            name
            for name in fresh.keys() | committed.keys()
            if name not in fresh
            or name not in committed
            or not filecmp.cmp(fresh[name], committed[name], shallow=False)
        )
    if stale:
        print("generated code is stale; run `make proto`:", *stale, sep="\n  ")
        return 1
    return 0


def main(argv: list[str]) -> int:
    if argv[1:] == ["--check"]:
        return check()
    if argv[1:2] == ["--image"] and len(argv) == 3:
        image(Path(argv[2]))
        return 0
    generate(ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
