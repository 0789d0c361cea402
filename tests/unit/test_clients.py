"""`make clients` (scripts/clients.py): the descriptor set holds every bxb
proto with the language options of its package (so buf generate works for
Go, Java, C#, PHP, Ruby and Objective-C), googleapis' google/rpc protos that
decode bxb's errors, and the well-known types; protoc's Java generator makes
a class for every bxb message and enum."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTOS = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
OBJC_PREFIX = {"catalog": "BXCA", "common": "BXCO", "metering": "BXME", "invoicing": "BXIN", "payments": "BXPA"}


@pytest.fixture(scope="module")
def generated() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    subprocess.run([sys.executable, ROOT / "scripts" / "clients.py", "descriptors", "java"], cwd=ROOT, check=True)
    image = descriptor_pb2.FileDescriptorSet.FromString((ROOT / "clients" / "bxb.binpb").read_bytes())
    return {file.name: file for file in image.file}


def test_the_descriptor_set_holds_the_protos_the_errors_and_the_well_known_types(generated):
    assert [name for name in sorted(generated) if name.startswith("bxb/")] == PROTOS
    assert {"google/rpc/status.proto", "google/rpc/error_details.proto", "google/rpc/code.proto"} <= set(generated)
    assert {"google/protobuf/timestamp.proto", "google/protobuf/any.proto"} <= set(generated)
    status = generated["google/rpc/status.proto"]
    assert [m.name for m in status.message_type] == ["Status"]
    assert generated["bxb/catalog/v1/customers.proto"].source_code_info.location  # comments, for docs and codegen


@pytest.mark.parametrize("name", PROTOS)
def test_every_proto_names_its_package_in_every_language(generated, name: str):
    file = generated[name]
    _, service, version = file.package.split(".")
    title = f"{service.capitalize()}.{version.upper()}"
    stem = Path(name).stem
    assert (
        file.options.go_package == f"github.com/bxb-billing/bxb/clients/go/bxb/{service}/{version};{service}{version}"
    )
    assert (file.options.java_package, file.options.java_multiple_files) == (f"com.bxb.{service}.{version}", True)
    assert file.options.java_outer_classname == "".join(p.capitalize() for p in stem.split("_")) + "Proto"
    assert file.options.csharp_namespace == f"Bxb.{title}"
    assert file.options.php_namespace == f"Bxb\\{title.replace('.', '\\')}"
    assert file.options.ruby_package == f"Bxb::{title.replace('.', '::')}"
    assert file.options.objc_class_prefix == OBJC_PREFIX[service]


def test_java_has_a_class_for_every_message_and_enum(generated):
    java = ROOT / "clients" / "java"
    for name in PROTOS:
        file = generated[name]
        directory = java / Path(*file.options.java_package.split("."))
        for type_name in [m.name for m in file.message_type] + [e.name for e in file.enum_type]:
            source = (directory / f"{type_name}.java").read_text()
            assert f"package {file.options.java_package};" in source
