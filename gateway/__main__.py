"""Serves the gateway with uvicorn (`python -m gateway`)."""

import uvicorn

from gateway.app import create_app
from gateway.config import Settings
from services.common import logs, tracing

logs.configure("gateway")
tracing.configure("gateway")
settings = Settings.from_env()
# The stock asyncio loop, not uvloop: grpc.aio's completion queue wakes it
# sooner, so a call through the gateway answers faster. Logging is bxb's
# (logs.py; the access log is gateway/observability.py's), not uvicorn's.
uvicorn.run(
    create_app(settings),
    host=settings.host,
    port=settings.port,
    log_level="info",
    access_log=False,
    loop="asyncio",
    log_config=None,
)
