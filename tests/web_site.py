"""A small real web site for URL-ingestion tests: a stdlib HTTP server on 127.0.0.1 in a thread.

Routes are set per test (``site.page(path, body, content_type)``, ``site.redirect(path, location)``); the
server also serves ``/huge`` (a body longer than any test limit, sent in chunks), ``/slow`` (headers at
once, then a byte a second) and records every request's path and ``Host`` header.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class Site:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, str]] = []  # (path, Host header)
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def page(self, path: str, body: str | bytes, content_type: str = "text/html; charset=utf-8",
             status: int = 200) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.routes[path] = Route(status, data, {"Content-Type": content_type})

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.routes[path] = Route(status, b"", {"Location": location})

    def paths(self) -> list[str]:
        return [path for path, _host in self.requests]


def _handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            site.requests.append((self.path, self.headers.get("Host", "")))
            if self.path == "/huge":
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    for _ in range(400):  # 400 x 64 KiB = 25 MiB, no Content-Length
                        self.wfile.write(b"a" * 65_536)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True
                return
            if self.path == "/slow":
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "100")
                self.end_headers()
                try:
                    for _ in range(100):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(1)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True
                return
            route = site.routes.get(self.path)
            if route is None:
                route = Route(404, b"not found", {"Content-Type": "text/plain"})
            self.send_response(route.status)
            for name, value in route.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)

    return Handler


@contextmanager
def serve_site(host: str = "127.0.0.1", *, tls: ssl.SSLContext | None = None) -> Iterator[Site]:
    """The site served on ``host`` (``https`` with ``tls``: ``site.base`` still says ``http``)."""
    site = Site()
    server = ThreadingHTTPServer((host, 0), _handler(site))
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    site.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
