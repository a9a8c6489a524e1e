"""What the OpenAI- and Anthropic-compatible request bodies share: fields Atrium does not model are
allowed, and the same bounds on lists."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

MAX_MESSAGES = 2048
MAX_TOOLS = 128
MAX_STOP = 16


class LenientBody(BaseModel):
    # The vendors add fields often; an SDK newer than this edge must still get through.
    model_config = ConfigDict(extra="allow")
