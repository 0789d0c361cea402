"""A plaintext port that serves grpc.health.v1 and nothing else
(BXB_<SERVICE>_HEALTH_LISTEN; unset: none), for probes that cannot present a
client certificate, such as Kubernetes' native gRPC probes, once BXB_TLS_DIR
puts the service's own port behind mutual TLS. It answers what the service's
health servicer says: NOT_SERVING until the service has started, SERVING
while it serves, NOT_SERVING again once it drains."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import config, grpc_server


def listen_address(service: str) -> str:
    return config.env_str(f"BXB_{service.upper()}_HEALTH_LISTEN", "")


async def start(service: grpc_server.Service, address: str) -> tuple[grpc.aio.Server, int]:
    """Serves `service`'s health on `address`, NOT_SERVING until grpc_server.start says otherwise."""
    await service.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(service.health, server)
    port = server.add_insecure_port(address)
    await server.start()
    return server, port
