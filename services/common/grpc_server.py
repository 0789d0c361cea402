"""One way to run a bxb gRPC service: health, reflection, errors, shutdown.

Every service's `server.py` builds a `Service` (its servicers plus start and
stop hooks) and hands it to `run`. The interceptor authenticates the
caller (mutual TLS when BXB_TLS_DIR is set, else the service token:
trust.py): organization metadata from anyone else, and any call of the
organization and key administration (OrganizationService), is refused
UNAUTHENTICATED; a call for an organization that does not exist is refused
PERMISSION_DENIED (reason UNKNOWN_ORGANIZATION), before anything is read or
written. It binds the calling organization from metadata and maps exceptions: a `DomainError` becomes its
google.rpc.Status, a backing service's UNAVAILABLE or DEADLINE_EXCEEDED is
passed on as it came (retry later), text PostgreSQL cannot store (a NUL
character) is the caller's INVALID_ARGUMENT, a dependency out of reach
(PostgreSQL, NATS or ClickHouse: failures.py) is UNAVAILABLE, anything else
is logged and becomes a bare INTERNAL.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, cast

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from sqlalchemy.exc import DBAPIError, IntegrityError

from services.common import channels, metrics, request_ids, tenancy, tls, tracing, trust, validation
from services.common.errors import (
    PASSED_ON,
    Aborted,
    DomainError,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    internal_status,
    passed_on_status,
)
from services.common.failures import is_unavailable
from services.common.known_organizations import KnownOrganizations

ABORTED = Aborted("a concurrent request changed the same resource; retry", reason="CONCURRENT_MODIFICATION")
# PostgreSQL's SQLSTATEs for text it cannot store: a NUL character in a text
# column (character_not_in_repertoire) or a \u0000 escape in JSONB
# (untranslatable_character). Either came from the caller's strings.
UNSTORABLE_TEXT = {"22021", "22P05"}
DEPENDENCY_AWAY = Unavailable("a service this one depends on is unavailable; retry", reason="DEPENDENCY_UNAVAILABLE")
UNSTORABLE = InvalidArgument(
    "a string holds a character that cannot be stored (NUL, \\u0000)", reason="UNSTORABLE_CHARACTER"
)

UNTRUSTED = Unauthenticated(
    "this call is served to bxb's own processes only: present the deployment's client certificate or service token",
    reason="UNTRUSTED_CALLER",
)
UNKNOWN_ORGANIZATION = PermissionDenied("the call's organization does not exist", reason="UNKNOWN_ORGANIZATION")
# The organization and key administration: served to authenticated callers only, not scoped by organization metadata.
ADMINISTRATION = "/bxb.catalog.v1.OrganizationService/"

log = logging.getLogger("bxb.grpc")

Registrar = Callable[[grpc.aio.Server], str]
"""Adds one servicer to a server and returns its full service name."""

Context = grpc.aio.ServicerContext[Message, Message]
"""What a servicer's method is given beside its request."""


def registrar(pb2_module: ModuleType, grpc_module: ModuleType, service: str, servicer: object) -> Registrar:
    """A Registrar for `service` of a generated module pair."""

    def register(server: grpc.aio.Server) -> str:
        getattr(grpc_module, f"add_{service}Servicer_to_server")(servicer, server)
        descriptor: FileDescriptor = pb2_module.DESCRIPTOR
        return descriptor.services_by_name[service].full_name

    return register


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def reflection_v1_descriptor() -> None:
    """Adds grpc/reflection/v1/reflection.proto to the default pool, so that
    reflection describes the v1 service it lists. It is v1alpha's file
    under the package grpc.reflection.v1: the two are the same messages with
    the same numbers (grpcio-reflection ships only v1alpha)."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName("grpc/reflection/v1/reflection.proto")
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto()
        reflection_pb2.DESCRIPTOR.CopyToProto(proto)
        proto.name, proto.package = "grpc/reflection/v1/reflection.proto", "grpc.reflection.v1"
        proto.options.Clear()
        for field in (field for message in proto.message_type for field in message.field if field.type_name):
            field.type_name = field.type_name.replace(".v1alpha.", ".v1.")
        for method in proto.service[0].method:
            method.input_type = method.input_type.replace(".v1alpha.", ".v1.")
            method.output_type = method.output_type.replace(".v1alpha.", ".v1.")
        pool.Add(proto)


def enable_reflection(server: grpc.aio.Server, names: list[str]) -> None:
    """Serves gRPC server reflection v1 (what grpcurl, Postman and buf curl
    ask for first) and v1alpha, listing `names`, health and reflection. One
    servicer answers both: v1 is v1alpha's protocol renamed, message for
    message (grpcio-reflection implements only v1alpha, grpc/grpc#38576)."""
    reflection_v1_descriptor()
    servicer = reflection.aio.ReflectionServicer([*names, health.SERVICE_NAME, REFLECTION_V1, reflection.SERVICE_NAME])
    # typeshed leaves grpcio-reflection's generated registration untyped.
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": handler})]
    )


Unary = Callable[[Message, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
"""A unary method's behaviour on a bxb server: a coroutine function of a protobuf request."""


def unary_of[Request, Response](
    handler: grpc.RpcMethodHandler[Request, Response],
) -> Callable[[Message, grpc.aio.ServicerContext[Request, Response]], Awaitable[Response]]:
    """The handler's unary behaviour: an aio server's handlers are coroutine
    functions, of a protobuf request on a bxb server; grpc's stubs type them
    as the synchronous server's."""
    return cast(
        Callable[[Message, grpc.aio.ServicerContext[Request, Response]], Awaitable[Response]], handler.unary_unary
    )


def unary_handler[Request, Response](
    handler: grpc.RpcMethodHandler[Request, Response], unary: Unary
) -> grpc.RpcMethodHandler[Request, Response]:
    """`handler` with `unary` (an interceptor's wrapping of it) as its behaviour."""
    return grpc.unary_unary_rpc_method_handler(
        unary, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


class ErrorAndTenancyInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tls: bool = False, organizations: KnownOrganizations | None = None):
        """`tls`: the transport has authenticated every caller already;
        `organizations`: which organizations exist (None: no check)."""
        self.tls = tls
        self.organizations = organizations

    async def intercept_service[Request, Response](
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Request, Response] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Request, Response] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        metadata = handler_call_details.invocation_metadata
        org = tenancy.from_metadata(metadata)
        method = handler_call_details.method
        administration = method.startswith(ADMINISTRATION)
        untrusted = (bool(org) or administration) and not (self.tls or trust.from_service(metadata))
        organizations = None if administration or not org else self.organizations
        inner = unary_of(handler)

        async def unary_unary(request: Message, context: grpc.aio.ServicerContext[Request, Response]) -> Response:
            token = tenancy.bind(org)
            try:
                if untrusted:
                    raise UNTRUSTED
                if organizations is not None and not await organizations.exists(org):
                    raise UNKNOWN_ORGANIZATION
                validation.check(request)
                return await inner(request, context)
            except DomainError as error:
                await context.abort_with_status(error.to_status())
            except IntegrityError:
                # Two concurrent writes raced for the same unique key; the
                # loser may retry and will then see the winner's row.
                await context.abort_with_status(ABORTED.to_status())
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except grpc.aio.AioRpcError as error:
                if error.code() in PASSED_ON:  # abort raises: the lines below run for other codes
                    await context.abort_with_status(passed_on_status(error))
                log.exception("unhandled error in %s", method)
                await context.abort_with_status(internal_status())
            except Exception as error:
                if isinstance(error, DBAPIError) and getattr(error.orig, "sqlstate", None) in UNSTORABLE_TEXT:
                    await context.abort_with_status(UNSTORABLE.to_status())  # its transaction rolled back
                if is_unavailable(error):  # PostgreSQL, NATS or ClickHouse away: retry, not a bug
                    log.warning("%s: a dependency is unavailable: %r", method, error)
                    await context.abort_with_status(DEPENDENCY_AWAY.to_status())
                log.exception("unhandled error in %s", method)
                await context.abort_with_status(internal_status())
            finally:
                tenancy.reset(token)

        return unary_handler(handler, unary_unary)


class ObservingInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times each unary call by method and final status code
    (metrics.py) and binds the caller's request id (request_ids.py) for its logs."""

    def __init__(self, service: str):
        self.service = service

    async def intercept_service[Request, Response](
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Request, Response] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Request, Response] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = unary_of(handler)
        method = handler_call_details.method.lstrip("/")
        request_id = request_ids.from_metadata(handler_call_details.invocation_metadata)
        seconds = metrics.GRPC_SECONDS.labels(self.service, method)

        async def unary_unary(request: Message, context: grpc.aio.ServicerContext[Request, Response]) -> Response:
            token = request_ids.REQUEST_ID.set(request_id)
            started = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                response = await inner(request, context)
                code = grpc.StatusCode.OK
                return response
            except grpc.aio.AbortError:
                code = context.code()
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            finally:
                seconds.observe(time.perf_counter() - started)
                metrics.GRPC_REQUESTS.labels(self.service, method, code.name).inc()
                request_ids.REQUEST_ID.reset(token)

        return unary_handler(handler, unary_unary)


@dataclass
class Service:
    """What a service process serves and what it runs beside the servicers."""

    name: str
    registrars: Iterable[Registrar]
    on_start: Callable[[], Awaitable[None]] | None = None
    on_stop: Callable[[], Awaitable[None]] | None = None
    health: health.aio.HealthServicer = field(default_factory=health.aio.HealthServicer)
    organizations: KnownOrganizations | None = None  # which organizations calls may act for
    # Applies the service's schema: before on_start when migrate_on_start, and by `migrate` (commands.py).
    migrate: Callable[[], Coroutine[object, object, None]] | None = None
    migrate_on_start: bool = True
    # Gauges refreshed in the background while it serves.
    probes: list[metrics.Probe] = field(default_factory=list)
    refresher: metrics.Refresher = field(init=False)

    def __post_init__(self) -> None:
        self.refresher = metrics.Refresher(self.probes)


async def start(service: Service, address: str) -> tuple[grpc.aio.Server, int]:
    """Starts the server on `address` ("127.0.0.1:0" for any free port),
    with mutual TLS when BXB_TLS_DIR is set (tls.py)."""
    material = tls.material()
    interceptors = [
        ObservingInterceptor(service.name),
        *tracing.server_interceptors(),
        ErrorAndTenancyInterceptor(material is not None, service.organizations),
    ]
    server = grpc.aio.server(interceptors=interceptors, options=channels.SERVER_OPTIONS)
    names = [register(server) for register in service.registrars]
    health_pb2_grpc.add_HealthServicer_to_server(service.health, server)
    enable_reflection(server, names)
    if service.migrate is not None and service.migrate_on_start:
        await service.migrate()
    if service.on_start is not None:
        await service.on_start()
    # Bound only now: a port taken but not yet served (while on_start
    # migrates, connects) holds callers until their deadline; refused, they
    # fail at once (503) or a channel tries another replica.
    if material is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, material.server_credentials())
    await server.start()
    service.refresher.start()
    for name in ("", *names):
        await service.health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


async def stop(service: Service, server: grpc.aio.Server, grace: float = 5.0) -> None:
    """Reports NOT_SERVING, lets calls in flight finish, then stops hooks."""
    await service.health.enter_graceful_shutdown()
    await server.stop(grace)
    await service.refresher.stop()
    if service.on_stop is not None:
        await service.on_stop()


async def run(service: Service, address: str) -> None:
    """Serves until SIGTERM or SIGINT, then shuts down gracefully."""
    server, port = await start(service, address)
    log.info("%s listening on port %d", service.name, port)
    exporting = metrics.listen_address(service.name)
    if exporting:
        _, metrics_port = metrics.serve(exporting)
        log.info("%s serves /metrics on port %d", service.name, metrics_port)
    # What startup built (modules, channels, engines) lives as long as the
    # process: out of the collector's sight, a full collection no longer walks
    # it, which stalled requests for tens of milliseconds.
    gc.freeze()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("%s shutting down", service.name)
    await stop(service, server)
