"""robots.txt, read with the standard library's parser and fetched through the same guarded client.

Per RFC 9309: a 2xx file is obeyed (for ``robots_agent``, else ``*``); a 4xx (no file) allows everything;
a 5xx, an unreachable or refused file, or one larger than the bound disallows everything on that origin.
"""

from __future__ import annotations

from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

from atrium.errors import AppError, InvalidRequest
from atrium.guard.egress import EgressGuard, InvalidUrl, UrlNotAllowed
from atrium.knowledge.web.fetch import PageFetcher

ROBOTS_DISALLOWED = "robots_disallowed"


class RobotsDisallowed(InvalidRequest):
    code = ROBOTS_DISALLOWED


class RobotsRules:
    """The robots.txt of each origin a crawl visits, fetched once per origin."""

    def __init__(self, fetcher: PageFetcher, agent: str, *, max_bytes: int, guard: EgressGuard | None = None) -> None:
        self.fetcher = fetcher
        self.guard = guard  # tells a refused origin from a robots.txt that redirects somewhere refused
        self.agent = agent
        self.max_bytes = max_bytes
        self._parsers: dict[str, RobotFileParser] = {}

    async def check(self, url: str) -> None:
        """``RobotsDisallowed`` when the origin's robots.txt keeps ``url`` from our agent."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        parser = self._parsers.get(origin)
        if parser is None:
            parser = self._parsers[origin] = await self._load(origin)
        if not parser.can_fetch(self.agent, url):
            raise RobotsDisallowed(f"{origin}/robots.txt does not allow {self.agent} to fetch {parts.path or '/'}.")

    async def _load(self, origin: str) -> RobotFileParser:
        parser = RobotFileParser(origin + "/robots.txt")
        try:
            page = await self.fetcher.get(origin + "/robots.txt", max_bytes=self.max_bytes,
                                          accept="text/plain", ok_only=False)
        except InvalidUrl:
            raise
        except UrlNotAllowed:
            if self.guard is None:
                raise
            await self.guard.check(origin)  # the origin itself refused: the page is, for that reason
            parser.disallow_all = True  # type: ignore[attr-defined]
            return parser  # robots.txt redirects somewhere refused: as unreachable
        except AppError:
            parser.disallow_all = True  # type: ignore[attr-defined]
            return parser
        if 200 <= page.status < 300:
            parser.parse(page.body.decode("utf-8", errors="replace").splitlines())
        elif 400 <= page.status < 500:
            parser.allow_all = True  # type: ignore[attr-defined]
        else:
            parser.disallow_all = True  # type: ignore[attr-defined]
        parser.modified()
        return parser
