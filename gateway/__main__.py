"""Serves the gateway with uvicorn (`python -m gateway`)."""

import uvicorn

from gateway.app import create_app
from gateway.config import Settings

settings = Settings.from_env()
# The stock asyncio loop, not uvloop: grpc.aio's completion queue wakes it
# faster (measured: 5.0 ms vs 7.0 ms for a catalog list through the gateway).
uvicorn.run(
    create_app(settings), host=settings.host, port=settings.port, log_level="info", access_log=False, loop="asyncio"
)
