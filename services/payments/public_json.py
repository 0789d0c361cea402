"""Resources as the public API shows them: the JSON an announcement's `data`
holds is what GET answers for the same resource (gateway/codec.py's Encoder
with bxb's own dialect views, and the events' views GET /v1/events uses),
so receivers parse one shape."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from gateway.codec import Encoder
from gateway.dialects import BXB
from gateway.ingest import views

ENCODER = Encoder(views(BXB))


def render(message: Message) -> dict[str, Any]:
    """`message` as the public JSON."""
    return ENCODER.message(message)
