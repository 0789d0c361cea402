"""DomainError -> google.rpc.Status with ErrorInfo (and BadRequest for bad input)."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from services.common import errors


def details_of(status: grpc.Status) -> tuple[status_pb2.Status, list]:
    """Decodes the grpc-status-details-bin trailer a Status carries."""
    (raw,) = [value for key, value in status.trailing_metadata if key == "grpc-status-details-bin"]
    proto = status_pb2.Status.FromString(raw)
    unpacked = []
    for detail in proto.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                unpacked.append(message)
    return proto, unpacked


@pytest.mark.parametrize(
    ("error_type", "code"),
    [
        (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound, grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
        (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
        (errors.Aborted, grpc.StatusCode.ABORTED),
        (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
        (errors.DomainError, grpc.StatusCode.INTERNAL),
    ],
)
def test_each_error_maps_to_its_code_and_default_reason(error_type, code):
    status = error_type("it failed").to_status()
    assert status.code == code
    assert status.details == "it failed"
    proto, unpacked = details_of(status)
    assert proto.code == code.value[0]
    (info,) = unpacked
    assert info.reason == code.name
    assert info.domain == "bxb.dev"
    assert dict(info.metadata) == {}


def test_invalid_argument_with_a_field_carries_error_info_and_bad_request():
    error = errors.InvalidArgument("amount must be positive", field="charges[0].properties.amount")
    assert str(error) == "amount must be positive"
    _, (info, bad_request) = details_of(error.to_status())
    assert info.reason == "INVALID_ARGUMENT"
    assert dict(info.metadata) == {"field": "charges[0].properties.amount"}
    (violation,) = bad_request.field_violations
    assert violation.field == "charges[0].properties.amount"
    assert violation.description == "amount must be positive"


def test_other_codes_name_the_field_without_bad_request():
    error = errors.NotFound("no such plan", reason="PLAN_NOT_FOUND", field="plan_code", metadata={"code": "gold"})
    _, unpacked = details_of(error.to_status())
    (info,) = unpacked
    assert info.reason == "PLAN_NOT_FOUND"
    assert dict(info.metadata) == {"code": "gold", "field": "plan_code"}


def test_metadata_argument_is_copied_not_shared():
    given = {"code": "gold"}
    error = errors.AlreadyExists("exists", metadata=given)
    error.metadata["extra"] = "x"
    assert given == {"code": "gold"}
    errors.status_proto(grpc.StatusCode.ALREADY_EXISTS, "exists", "ALREADY_EXISTS", field="code", metadata=given)
    assert given == {"code": "gold"}


def test_internal_status_leaks_nothing():
    status = errors.internal_status()
    assert status.code == grpc.StatusCode.INTERNAL
    assert status.details == "internal error"
    _, (info,) = details_of(status)
    assert info.reason == "INTERNAL"
    assert dict(info.metadata) == {}
