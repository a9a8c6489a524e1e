"""The edge's settings: the ``server`` section (bind address, shutdown grace, trusted proxies) and the
``limits`` section (sizes of requests, uploads and messages). Composed into ``Settings`` by
``atrium.settings``."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    shutdown_grace_s: float = Field(30.0, ge=0)
    # One log line per HTTP request. Off by default: every model call is already in the usage table and
    # /metrics, and formatting a line per request costs about as much as the gateway's own work.
    access_log: bool = False
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed: IP addresses or networks
    # ("10.0.0.0/8"), "*" for any peer. Empty: the client is the TCP peer, whatever the headers say (the
    # per-IP login throttle and the audit trail's IP depend on it).
    forwarded_allow_ips: Annotated[list[str], NoDecode] = []  # in the environment: comma-separated
    # Web origins whose pages may call the API from the browser (CORS), "https://app.example.com", or "*".
    # Empty: no CORS headers at all, so only servers and same-origin pages call Atrium.
    cors_origins: Annotated[list[str], NoDecode] = []  # in the environment: comma-separated
    # Tests and diagnosis of several processes (``atrium serve --workers N``): every HTTP response names the
    # process that answered in ``X-Atrium-Pid``. Off by default: clients have no use for it.
    pid_header: bool = False

    @field_validator("forwarded_allow_ips", "cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return [item.strip() for item in value.split(",") if item.strip()] if isinstance(value, str) else value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for item in value:
            if item != "*":
                try:
                    ipaddress.ip_network(item)  # an address is a network of one
                except ValueError:
                    raise ValueError(f"server.forwarded_allow_ips: {item!r} is not an IP address, network "
                                     "(host bits zero) or '*'") from None
        return value


    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for item in value:
            if item != "*" and not re.fullmatch(r"https?://[^/\s]+", item):
                raise ValueError(f"server.cors_origins: {item!r} is not an origin (scheme://host[:port], no "
                                 "path) or '*'")
        return value


class LimitSettings(BaseModel):
    max_message_chars: int = Field(8000, ge=1)
    max_request_bytes: int = Field(1_000_000, ge=1024)
    max_upload_bytes: int = Field(10_000_000, ge=1024)
    max_files_per_upload: int = Field(20, ge=1)
    max_search_limit: int = Field(50, ge=1)
    # One WebSocket message (``/ws``), in UTF-8 bytes; 16 times this closes the socket (1009).
    max_ws_message_bytes: int = Field(65_536, ge=1024)
