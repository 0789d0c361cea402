"""Logging of every bxb process: JSON lines on stderr with the request and
trace it belongs to.

`configure(process)` is the first thing each process's main does. Every
record carries time, level, logger, message, service, and when known
request_id (request_ids.py: the gateway's X-Request-Id, passed on to the
services), trace_id and span_id (OpenTelemetry's current span).
BXB_LOG_FORMAT=text writes plain lines instead.
"""

from __future__ import annotations

import logging
import sys

from opentelemetry import trace
from pythonjsonlogger.orjson import OrjsonFormatter

from services.common import config
from services.common.request_ids import REQUEST_ID


class Context(logging.Filter):
    """Adds service, request_id, trace_id and span_id to every record."""

    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.request_id = REQUEST_ID.get()
        span = trace.get_current_span().get_span_context()
        record.trace_id = trace.format_trace_id(span.trace_id) if span.is_valid else ""
        record.span_id = trace.format_span_id(span.span_id) if span.is_valid else ""
        return True


JSON_FIELDS = "{asctime}{levelname}{name}{message}{service}{request_id}{trace_id}{span_id}"
RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}
TEXT_FORMAT = "%(asctime)s %(service)s %(levelname)s %(name)s: %(message)s"


def formatter(text: bool) -> logging.Formatter:
    if text:
        return logging.Formatter(TEXT_FORMAT)
    return OrjsonFormatter(JSON_FIELDS, style="{", rename_fields=RENAMED)  # orjson: a third of json.dumps' cost


def configure(service: str, level: int = logging.INFO) -> logging.Handler:
    """Sends the process's logs to stderr, JSON lines unless
    BXB_LOG_FORMAT=text; returns the handler it installed."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(config.env_str("BXB_LOG_FORMAT", "json") == "text"))
    handler.addFilter(Context(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
