"""The HTTP routes the protos declare: each RPC's `google.api.http` rule and
its `additional_bindings`, read off the descriptors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import FileDescriptor, MethodDescriptor

if TYPE_CHECKING:
    from google.protobuf.descriptor_pb2 import MethodOptions
    from google.protobuf.internal.extension_dict import _ExtensionFieldDescriptor

VERBS = ("get", "put", "post", "delete", "patch")
VARIABLE = re.compile(r"\{([a-z_][a-z0-9_.]*)\}")
# `google.api.http`, typed as what it holds (googleapis-common-protos' stubs
# type their extensions as plain FieldDescriptors).
HTTP = cast("_ExtensionFieldDescriptor[MethodOptions, http_pb2.HttpRule]", annotations_pb2.http)


@dataclass(frozen=True)
class Binding:
    """One HTTP route of one RPC."""

    method: MethodDescriptor
    verb: str  # GET, POST, ...
    template: str  # /v1/customers/{id}
    body: str  # "" (none), "*" (the request) or a field of the request
    response_body: str  # "" (the response) or a field of it

    @property
    def route_path(self) -> str:
        """The template as a Starlette path ({customer.id} is {customer__id})."""
        return VARIABLE.sub(lambda m: "{" + m.group(1).replace(".", "__") + "}", self.template)

    @property
    def variables(self) -> list[str]:
        return VARIABLE.findall(self.template)


def bindings(files: list[FileDescriptor]) -> Iterator[Binding]:
    """Every HTTP binding the files' services declare, in declaration order."""
    for file in files:
        for service in file.services_by_name.values():
            for method in service.methods:
                if method.GetOptions().HasExtension(HTTP):
                    rule = method.GetOptions().Extensions[HTTP]
                    yield _binding(method, rule)
                    for extra in rule.additional_bindings:
                        yield _binding(method, extra)


def _binding(method: MethodDescriptor, rule: http_pb2.HttpRule) -> Binding:
    verb = rule.WhichOneof("pattern")
    if verb not in VERBS:
        raise ValueError(f"{method.full_name}: unsupported HTTP pattern {verb}")
    return Binding(method, verb.upper(), getattr(rule, verb), rule.body, rule.response_body)
