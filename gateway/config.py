"""Gateway settings from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.rate_limits import Limits
from services.common import config


@dataclass
class Settings:
    host: str
    port: int
    catalog: str
    metering: str
    invoicing: str
    payments: str
    max_body_bytes: int
    auth_cache_seconds: float
    call_timeout: float
    # Default rate limits (BXB_RATE_LIMIT_*), which organizations may override.
    rate_limits: Limits = field(default_factory=Limits.from_env)

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            host=config.env_str("BXB_GATEWAY_HOST", "127.0.0.1"),
            port=int(config.env_float("BXB_GATEWAY_PORT", 8080)),
            catalog=config.grpc_address("catalog", config.DEFAULT_PORTS["catalog"]),
            metering=config.grpc_address("metering", config.DEFAULT_PORTS["metering"]),
            invoicing=config.grpc_address("invoicing", config.DEFAULT_PORTS["invoicing"]),
            payments=config.grpc_address("payments", config.DEFAULT_PORTS["payments"]),
            max_body_bytes=int(config.env_float("BXB_MAX_BODY_BYTES", 5 * 1024 * 1024)),
            auth_cache_seconds=config.env_float("BXB_AUTH_CACHE_SECONDS", 2.0),
            call_timeout=config.env_float("BXB_CALL_TIMEOUT_SECONDS", 30.0),
        )
