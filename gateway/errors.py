"""One JSON error body for every failure of the /v1 API:

    {"error": {"status": 400, "code": "INVALID_ARGUMENT", "reason": "UNKNOWN_FIELD",
               "message": "...", "field": "charges[0].properties.amount"}}

`code` is the gRPC canonical code, `reason` the machine-readable ErrorInfo
reason, `field` the offending request field when there is one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import grpc
from starlette.responses import JSONResponse

from services.common.errors import error_info

log = logging.getLogger("bxb.gateway")

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


# Reasons whose HTTP status is not their code's: a payment the provider
# declined, or one the customer must authenticate, is 402 Payment Required.
REASON_STATUS = {"PAYMENT_FAILED": 402, "PAYMENT_REQUIRES_ACTION": 402}

# Seconds a client is asked to wait before retrying what a dependency away refused.
RETRY_AFTER = 1
RETRIED = frozenset({503, 504})


class ApiError(Exception):
    """A failure the gateway itself detects (bad JSON, unknown field, ...)."""

    def __init__(self, status: int, code: str, reason: str, message: str, field: str = ""):
        super().__init__(message)
        self.status, self.code, self.reason, self.message, self.field = status, code, reason, message, field
        # Seconds the client is asked to wait (Retry-After), when it should retry.
        self.retry_after = RETRY_AFTER if status in RETRIED else None

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return error_response(self.status, self.code, self.reason, self.message, self.field, headers)


def invalid(message: str, field: str = "", reason: str = "INVALID_ARGUMENT") -> ApiError:
    return ApiError(400, "INVALID_ARGUMENT", reason, message, field)


def error_response(
    status: int, code: str, reason: str, message: str, field: str = "", headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"status": status, "code": code, "reason": reason, "message": message}
    if field:
        body["field"] = field
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def api_error(error: grpc.aio.AioRpcError) -> ApiError:
    """A failed service call as the error the client gets; the internal ones
    are logged, never detailed. RESOURCE_EXHAUSTED is a 429 only when a
    service said so (its ErrorInfo): gRPC's own, a message or its metadata
    too large, is a bug of ours, not a reason for the client to retry."""
    info = error_info(error)
    status = HTTP_STATUS.get(error.code(), 500)
    if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and info is None:
        status = 500
    if status == 500:
        log.error("service call failed: %s %s", error.code(), error.details())
        return ApiError(500, "INTERNAL", "INTERNAL", "internal error")
    reason = info.reason if info is not None else error.code().name
    status = REASON_STATUS.get(reason, status)
    field = info.metadata.get("field", "") if info is not None else ""
    message = error.details() or error.code().name.lower()
    if error.code() == grpc.StatusCode.UNAVAILABLE:
        message = "a backing service is unavailable; retry"
    return ApiError(status, error.code().name, reason, message, field)


def from_rpc(error: grpc.aio.AioRpcError) -> JSONResponse:
    return api_error(error).response()
