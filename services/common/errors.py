"""The one error model of bxb.

Domain code raises a `DomainError`; the gRPC layer turns it into a
`google.rpc.Status` whose details carry an `ErrorInfo` (machine-readable
reason, plus the offending field in its metadata) and, for bad input, a
`BadRequest` naming the field. The gateway reads those details back to build
its JSON error body, so a field named deep in a service reaches the client.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "bxb.dev"


class DomainError(Exception):
    """An expected failure with a gRPC code, a reason and an optional field."""

    code = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"

    def __init__(
        self, message: str, *, reason: str | None = None, field: str = "", metadata: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.field = field
        self.metadata = dict(metadata or {})

    def to_status(self) -> grpc.Status:
        return rpc_status.to_status(status_proto(self.code, self.message, self.reason, self.field, self.metadata))


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


# A status travels in response metadata, which gRPC caps at 8 KiB by default:
# what a message or a metadata value echoes of the caller's input (an id of
# 20,000 characters) is cut, so every error reaches its caller. The message
# is cut to MAX_MESSAGE bytes as it travels: grpc-message percent-encodes
# every byte but printable ASCII (an "é" takes 6), and the status details
# carry it again.
MAX_MESSAGE = 1000
MAX_METADATA_VALUE = 300
ELLIPSIS = "…"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def _sent_size(char: str) -> int:
    """The bytes a character takes in grpc-message."""
    return 1 if " " <= char <= "~" and char != "%" else 3 * len(char.encode("utf-8", "surrogatepass"))


def _cut_message(text: str) -> str:
    """`text`, cut so that it takes at most MAX_MESSAGE bytes in grpc-message."""
    if sum(map(_sent_size, text)) <= MAX_MESSAGE:
        return text
    room, kept = MAX_MESSAGE - _sent_size(ELLIPSIS), 0
    for index, char in enumerate(text):
        kept += _sent_size(char)
        if kept > room:
            return text[:index] + ELLIPSIS
    raise AssertionError("unreachable: the text is longer than the room")


def status_proto(
    code: grpc.StatusCode, message: str, reason: str, field: str = "", metadata: dict[str, str] | None = None
) -> status_pb2.Status:
    message = _cut_message(message)
    field = _cut(field, MAX_METADATA_VALUE)
    info_metadata = {key: _cut(value, MAX_METADATA_VALUE) for key, value in (metadata or {}).items()}
    if field:
        info_metadata["field"] = field
    details = [_pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=info_metadata))]
    if field and code == grpc.StatusCode.INVALID_ARGUMENT:
        violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    return status_pb2.Status(code=code.value[0], message=message, details=details)


# A backing service's answer that the caller should see as it is: retry later.
PASSED_ON = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def passed_on_status(error: grpc.aio.AioRpcError) -> grpc.Status:
    """A backing service's answer as it is, status details included (the
    metering service's INGESTION_BEHIND reaches the client as a 503)."""
    # grpc_status reads any call's trailing metadata; its stubs name only the synchronous grpc.Call.
    status: status_pb2.Status | None = rpc_status.from_call(error)  # type: ignore[arg-type]
    return rpc_status.to_status(status or status_proto(error.code(), error.details() or "", error.code().name))


class Relayed(DomainError):
    """A peer's answer to what our caller asked, passed on as it is, status
    details and all (a billing run that refuses an amount out of range is
    the caller's 409, not our 500)."""

    def __init__(self, error: grpc.aio.AioRpcError):
        super().__init__(error.details() or error.code().name.lower())
        self.error = error

    def to_status(self) -> grpc.Status:
        return passed_on_status(self.error)


def internal_status() -> grpc.Status:
    """The status for an unexpected exception: no detail leaks to the caller."""
    return rpc_status.to_status(status_proto(grpc.StatusCode.INTERNAL, "internal error", "INTERNAL"))


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo detail of a failed call, when the server sent one (and
    it arrived whole: none when the transport dropped or cut it)."""
    try:
        # As in passed_on_status: from_call takes an aio call too, whatever its stubs say.
        status: status_pb2.Status | None = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:  # its details do not match the call's status
        return None
    if status is None:
        return None
    info = error_details_pb2.ErrorInfo()
    for detail in status.details:
        if detail.Unpack(info):  # False, leaving `info` as it was, for a detail of another type
            return info
    return None


__all__ = [
    "Aborted",
    "AlreadyExists",
    "DomainError",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "Unauthenticated",
    "error_info",
    "internal_status",
    "status_proto",
]
