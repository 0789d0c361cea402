"""Serves the gateway with uvicorn (`python -m gateway`)."""

import uvicorn

from gateway.app import create_app
from gateway.config import Settings

settings = Settings.from_env()
uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info", access_log=False)
