"""Pieces the response models share."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Timestamp = Annotated[str, Field(description="ISO 8601 date and time.")]


class View(BaseModel):
    """Base of every response model. Extra keys are kept (``extra="allow"``): a response model documents
    an answer, it never drops a key a route returns."""

    model_config = ConfigDict(extra="allow")


class TokenUsage(View):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
