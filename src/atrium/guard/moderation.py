"""Input moderation: a local blocklist, and optionally a provider's moderation endpoint.

The **blocklist** matches terms and phrases as whole words, in any case, with any run of whitespace
between the words of a phrase; operators may add regular expressions in the configuration (not through
the API: a tenant-supplied pattern could make matching take unbounded time). The built-in list,
:data:`DEFAULT_BLOCKLIST`, is deliberately short: a backstop for content no deployment wants, not a
content policy. Tenants add their own terms, and real moderation comes from a provider.

The **provider endpoint** speaks OpenAI's format (``POST {base_url}/moderations`` with
``{"model", "input": [texts]}``, answering ``{"results": [{"flagged", "categories"}]}``), which OpenAI and
several compatible servers offer. It is called through the process's shared HTTP client with its own
timeout; when it cannot answer, the call goes on (``fail_closed: false``, logged and counted) or is
refused (``fail_closed: true``). It receives text with personal data already replaced by placeholders.

A flagged input raises ``ContentBlocked`` naming the guard and the categories, never the content.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import httpx

from atrium.errors import ContentBlocked, GatewayError

log = logging.getLogger(__name__)

DEFAULT_BLOCKLIST: tuple[str, ...] = (
    "child sexual abuse material",
    "child pornography",
    "child porn",
)
_MAX_COMPILED = 256


class ModerationUnavailable(GatewayError):
    """The moderation endpoint did not give a usable answer and the policy refuses unmoderated input
    (502 ``moderation_unavailable``; the message holds no content or key)."""

    code = "moderation_unavailable"

    def __init__(self, message: str = "The moderation service is unavailable.") -> None:
        super().__init__(message, retryable=True)


class Blocklist:
    """Whole-word, case-insensitive terms plus (operator-supplied) regular expressions."""

    def __init__(self, terms: Sequence[str], patterns: Sequence[str] = ()) -> None:
        words = [_term_pattern(term) for term in terms if term.strip()]
        self._terms = re.compile("|".join(words), re.IGNORECASE) if words else None
        self._patterns = [re.compile(pattern, re.IGNORECASE) for pattern in patterns]

    def matches(self, text: str) -> bool:
        if self._terms is not None and self._terms.search(text):
            return True
        return any(pattern.search(text) for pattern in self._patterns)


def _term_pattern(term: str) -> str:
    escaped = r"\s+".join(re.escape(word) for word in term.split())
    return rf"(?<!\w){escaped}(?!\w)"


class ProviderModeration:
    """An OpenAI-format moderation endpoint."""

    def __init__(self, client: httpx.AsyncClient, *, base_url: str, api_key: str | None, model: str,
                 timeout_s: float, name: str = "moderation") -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/moderations"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._model = model
        self._timeout = httpx.Timeout(timeout_s)
        self.name = name

    def __repr__(self) -> str:  # the key stays out of any repr
        return f"ProviderModeration(name={self.name!r})"

    async def flagged(self, texts: Sequence[str]) -> list[str]:
        """The categories flagged across ``texts`` (empty: nothing flagged)."""
        try:
            response = await self._client.post(self._url, json={"model": self._model, "input": list(texts)},
                                               headers=self._headers, timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise ModerationUnavailable(f"{self.name}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise ModerationUnavailable(f"{self.name}: HTTP {response.status_code}")
        try:
            results = response.json()["results"]
            flagged = [result for result in results if result.get("flagged")]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ModerationUnavailable(f"{self.name}: unexpected answer") from None
        categories = sorted({name for result in flagged for name, hit in _categories(result) if hit})
        return categories or (["flagged"] if flagged else [])


def _categories(result: Any) -> list[tuple[str, bool]]:
    categories = result.get("categories") if isinstance(result, dict) else None
    if not isinstance(categories, dict):
        return []
    return [(str(name), bool(hit)) for name, hit in categories.items()]


class Moderator:
    """Applies a tenant's moderation policy: the blocklist first (local, cheap), then the provider."""

    def __init__(self, provider: ProviderModeration | None = None, *, fail_closed: bool = False) -> None:
        self.provider = provider
        self.fail_closed = fail_closed
        self._blocklists: dict[tuple[bool, tuple[str, ...], tuple[str, ...]], Blocklist] = {}

    def blocklist(self, *, use_default: bool, terms: Sequence[str], patterns: Sequence[str]) -> Blocklist:
        key = (use_default, tuple(terms), tuple(patterns))
        found = self._blocklists.get(key)
        if found is None:
            if len(self._blocklists) >= _MAX_COMPILED:
                self._blocklists.clear()
            found = Blocklist([*(DEFAULT_BLOCKLIST if use_default else ()), *terms], patterns)
            self._blocklists[key] = found
        return found

    def check_blocklist(self, texts: Sequence[str], *, use_default: bool, terms: Sequence[str],
                        patterns: Sequence[str]) -> None:
        blocklist = self.blocklist(use_default=use_default, terms=terms, patterns=patterns)
        if any(blocklist.matches(text) for text in texts):
            raise ContentBlocked("The input matches the moderation blocklist.")

    async def check_provider(self, texts: Sequence[str]) -> bool:
        """Raises ``ContentBlocked`` when flagged, ``ModerationUnavailable`` when the endpoint failed and
        ``fail_closed`` is set. Returns False when it failed and the input was let through (logged)."""
        if self.provider is None or not any(text.strip() for text in texts):
            return True
        try:
            categories = await self.provider.flagged([text for text in texts if text.strip()])
        except ModerationUnavailable as exc:
            log.warning("moderation endpoint unavailable (%s); input %s", exc.message,
                        "refused (fail closed)" if self.fail_closed else "let through (fail open)")
            if self.fail_closed:
                raise ModerationUnavailable("The moderation service is unavailable and this deployment does not "
                                            "let unmoderated input through.") from None
            return False
        if categories:
            raise ContentBlocked(f"The input was flagged by moderation ({', '.join(categories[:10])}).")
        return True
