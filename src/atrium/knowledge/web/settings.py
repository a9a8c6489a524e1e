"""The ``knowledge.web`` settings: limits and manners of URL ingestion (``POST /api/v1/documents`` with
``{"url"}``, ``atrium ingest URL``). Where a fetch may go is the ``egress`` section's business."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class WebSettings(BaseModel):
    """``max_bytes``: the most one response may hold (a longer one is ``too_large``); ``timeout_s``: the
    most one page (headers and body) may take; ``max_pages``: the default and ``max_pages_limit`` the
    ceiling of pages per request; ``max_depth``: the deepest link level a request may ask for.
    ``browser_path``: Chromium for ``render: browser`` (the ``browser`` extra); ``browser_timeout_s``:
    the most a rendered page may take to load."""

    max_bytes: int = Field(10_000_000, ge=1024)
    timeout_s: float = Field(20.0, gt=0, le=300)
    max_redirects: int = Field(5, ge=0, le=20)
    max_pages: int = Field(20, ge=1)
    max_pages_limit: int = Field(100, ge=1, le=10_000)
    max_depth: int = Field(3, ge=0, le=3)
    user_agent: str = Field("AtriumBot/1.0 (self-hosted knowledge ingestion)", max_length=200)
    robots_agent: str = Field("AtriumBot", max_length=100)  # the name robots.txt groups are matched against
    respect_robots: bool = True
    max_robots_bytes: int = Field(500_000, ge=1024)
    browser_path: Path = Path("/usr/bin/chromium")
    browser_timeout_s: float = Field(30.0, gt=0, le=300)
    # auto: render in the browser when the static page yields less text than this and has scripts
    auto_render_min_chars: int = Field(200, ge=0)
