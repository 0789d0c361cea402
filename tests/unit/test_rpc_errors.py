"""Errors read back from real failed gRPC calls: `error_info` and the
gateway's gRPC -> HTTP mapping (`from_rpc`). A tiny grpc.aio server fails
each call the way its request asks."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from urllib.parse import quote

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway.errors import from_rpc
from services.common import errors


def _bad_request_only() -> grpc.Status:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[{"field": "name", "description": "too long"}]))
    return rpc_status.to_status(
        status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message="too long", details=[detail])
    )


class Exhausted(errors.DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "TOO_MANY_REQUESTS"


STATUSES = {
    "invalid": lambda: errors.InvalidArgument("amount must be positive", field="charges[0].properties.amount"),
    "not_found": lambda: errors.NotFound("no plan 'gold'", reason="PLAN_NOT_FOUND"),
    "exhausted": lambda: Exhausted("slow down"),
    "long": lambda: errors.NotFound(f"invoice {'x' * 20000!r} not found", field="id", metadata={"id": "y" * 20000}),
    "accented": lambda: errors.NotFound(f"parked message {'é' * 5000!r} not found", field="id"),
}


async def _fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    kind, _, arg = request.decode().partition(":")
    if kind == "domain":
        await context.abort_with_status(STATUSES[arg]().to_status())
    if kind == "internal":
        await context.abort_with_status(errors.internal_status())
    if kind == "bad_request_only":
        await context.abort_with_status(_bad_request_only())
    if kind == "mismatched":  # details saying NOT_FOUND on an INVALID_ARGUMENT call
        details = STATUSES["not_found"]().to_status().trailing_metadata
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad", trailing_metadata=details)
    if kind == "code":  # a bare status: no details at all
        code_name, _, message = arg.partition(":")
        await context.abort(grpc.StatusCode[code_name], message)
    raise RuntimeError("boom")  # grpc answers UNKNOWN


@pytest.fixture
async def fail() -> AsyncIterator:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(_fail)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Failing", {"Fail": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")

    async def call(request: str) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/test.Failing/Fail")(request.encode(), timeout=10)
        return caught.value

    yield call
    await channel.close()
    await server.stop(None)


def body(response) -> dict:
    return json.loads(response.body)["error"]


async def test_error_info_reads_reason_and_field(fail):
    error = await fail("domain:invalid")
    info = errors.error_info(error)
    assert info.reason == "INVALID_ARGUMENT"
    assert info.domain == "bxb.dev"
    assert info.metadata["field"] == "charges[0].properties.amount"


async def test_error_info_is_none_without_status_details(fail):
    error = await fail("code:NOT_FOUND:plain")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert errors.error_info(error) is None


async def test_error_info_is_none_when_details_lack_error_info(fail):
    error = await fail("bad_request_only")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert errors.error_info(error) is None


async def test_from_rpc_carries_reason_and_field_to_the_json_body(fail):
    response = from_rpc(await fail("domain:invalid"))
    assert response.status_code == 400
    assert body(response) == {
        "status": 400,
        "code": "INVALID_ARGUMENT",
        "reason": "INVALID_ARGUMENT",
        "message": "amount must be positive",
        "field": "charges[0].properties.amount",
    }


async def test_from_rpc_without_a_field_omits_it(fail):
    response = from_rpc(await fail("domain:not_found"))
    assert response.status_code == 404
    assert body(response) == {
        "status": 404,
        "code": "NOT_FOUND",
        "reason": "PLAN_NOT_FOUND",
        "message": "no plan 'gold'",
    }


async def test_from_rpc_without_error_info_uses_the_code_as_reason(fail):
    response = from_rpc(await fail("code:ALREADY_EXISTS:taken"))
    assert body(response) == {"status": 409, "code": "ALREADY_EXISTS", "reason": "ALREADY_EXISTS", "message": "taken"}


async def test_from_rpc_with_an_empty_message_uses_the_code_name(fail):
    response = from_rpc(await fail("code:FAILED_PRECONDITION:"))
    assert body(response)["message"] == "failed_precondition"


async def test_from_rpc_unavailable_says_retry_not_the_transport_detail(fail):
    response = from_rpc(await fail("code:UNAVAILABLE:connect failed to 10.0.0.5"))
    assert response.status_code == 503
    assert body(response)["message"] == "a backing service is unavailable; retry"


@pytest.mark.parametrize(
    ("code", "http"),
    [
        ("INVALID_ARGUMENT", 400),
        ("OUT_OF_RANGE", 400),
        ("UNAUTHENTICATED", 401),
        ("PERMISSION_DENIED", 403),
        ("NOT_FOUND", 404),
        ("ALREADY_EXISTS", 409),
        ("ABORTED", 409),
        ("FAILED_PRECONDITION", 409),
        ("CANCELLED", 499),
        ("UNIMPLEMENTED", 501),
        ("UNAVAILABLE", 503),
        ("DEADLINE_EXCEEDED", 504),
    ],
)
async def test_from_rpc_maps_grpc_codes_to_http_statuses(fail, code, http):
    response = from_rpc(await fail(f"code:{code}:x"))
    assert response.status_code == http
    assert body(response)["status"] == http
    assert body(response)["code"] == code


@pytest.mark.parametrize(
    "request_text",
    ["internal", "code:DATA_LOSS:disk gone", "crash", "code:RESOURCE_EXHAUSTED:Received message larger than max"],
)
async def test_from_rpc_hides_unexpected_failures_and_logs_them(fail, caplog, request_text):
    error = await fail(request_text)
    with caplog.at_level(logging.ERROR, logger="bxb.gateway"):
        response = from_rpc(error)
    assert response.status_code == 500
    assert body(response) == {"status": 500, "code": "INTERNAL", "reason": "INTERNAL", "message": "internal error"}
    assert str(error.code()) in caplog.text


async def test_a_service_s_own_resource_exhausted_is_a_429(fail):
    response = from_rpc(await fail("domain:exhausted"))
    assert (response.status_code, body(response)["reason"]) == (429, "TOO_MANY_REQUESTS")


@pytest.mark.parametrize(("code", "http"), [("UNAVAILABLE", 503), ("DEADLINE_EXCEEDED", 504)])
async def test_a_dependency_away_asks_the_client_to_retry_after_a_second(fail, code, http):
    response = from_rpc(await fail(f"code:{code}:x"))
    assert (response.status_code, response.headers["retry-after"]) == (http, "1")


async def test_an_error_echoing_an_id_of_any_length_reaches_the_caller_cut(fail):
    error = await fail("domain:long")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    info = errors.error_info(error)
    assert len(error.details()) == errors.MAX_MESSAGE - 8 and error.details().endswith("…")  # "…" takes 9 bytes
    assert len(info.metadata["id"]) == errors.MAX_METADATA_VALUE and info.metadata["field"] == "id"
    assert from_rpc(error).status_code == 404


async def test_details_that_contradict_the_call_are_ignored(fail):
    error = await fail("mismatched")
    assert errors.error_info(error) is None
    assert body(from_rpc(error))["reason"] == "INVALID_ARGUMENT"


async def test_an_error_echoing_an_id_of_multibyte_characters_is_cut_by_its_size_on_the_wire(fail):
    """grpc-message percent-encodes all but printable ASCII: 5,000 "é" cut at
    1,000 characters took 6,000 bytes, and with the status details the
    trailers passed gRPC's 8 KiB soft limit, now and then a 500."""
    error = await fail("domain:accented")
    assert error.code() == grpc.StatusCode.NOT_FOUND and error.details().endswith("…")
    assert len(quote(error.details(), safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")) <= errors.MAX_MESSAGE
    assert from_rpc(error).status_code == 404
