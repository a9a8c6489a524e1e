"""Who a provider adapter talks to, kept apart from how (the wire format).

A ``Provider`` is plain data: base URL, credentials, upstream model id. The same wire-format adapter
(e.g. ``OpenAIChatModel``) serves OpenAI, Groq, vLLM, Ollama or the managed llama.cpp server by being given
another ``Provider``; the HTTP client is built once by the caller and injected next to it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# Credential-looking strings an upstream may echo back (OpenAI-style keys, bearer tokens, Atrium keys).
_SECRET_PATTERN = re.compile(r"(?i)\b(?:sk|atr|gsk|key)[-_][A-Za-z0-9_\-*.]{8,}|bearer\s+\S+")
_SECRET_HEADER_PATTERN = re.compile(r"(?i)auth|key|token|secret")


@dataclass(frozen=True, slots=True)
class Provider:
    """Endpoint and credentials of one upstream.

    ``name`` labels the upstream in error messages (never the URL, which may carry a key in its query).
    ``api_key`` is excluded from ``repr`` so it cannot end up in logs by accident.
    """

    name: str
    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)

    def url(self, path: str) -> str:
        """``base_url`` joined with ``path`` (``base_url`` is expected to end at ``/v1`` or equivalent)."""
        return f"{self.base_url.rstrip('/')}/{path.lstrip('/')}"

    def request_headers(self) -> dict[str, str]:
        """Headers for every request: the configured ones plus ``Authorization`` when a key is set."""
        headers = dict(self.headers)
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def redact(self, text: str) -> str:
        """``text`` without this provider's secrets (the API key, credential headers) or key-like strings."""
        secrets = [value for name, value in self.headers.items() if _SECRET_HEADER_PATTERN.search(name)]
        if self.api_key:
            secrets.append(self.api_key)
        for secret in secrets:
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        return _SECRET_PATTERN.sub("***", text)
