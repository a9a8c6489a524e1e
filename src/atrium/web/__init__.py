"""The playground: a static page at ``/`` and its scripts and style sheet under ``/playground/``.

Plain HTML, CSS and ES modules, no build step. The page is public; every API call it makes carries the
credential the user signs in with (kept in the tab's ``sessionStorage``, never in a URL). Its responses carry
a strict Content-Security-Policy: scripts, styles and connections from this origin only, no inline script or
style, so a piece of text that slipped into the page as markup could not run.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

from atrium.errors import NotFound

STATIC_DIR = Path(__file__).parent / "static"

# 'self' in connect-src covers the same-origin WebSocket (ws: / wss:) in CSP Level 3 browsers.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Small files that change with each release: revalidate rather than serve a stale mix of modules.
    "Cache-Control": "no-cache",
}
_MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# Listed once at import, so a request never touches the disk for a name that is not one of them (and the
# media type is fixed here: guessing it would read the system's MIME tables inside the event loop).
ASSETS = {path.name: _MEDIA_TYPES[path.suffix] for path in STATIC_DIR.iterdir() if path.suffix in _MEDIA_TYPES}


def install_playground(app: FastAPI) -> None:
    """Serve the page at ``GET /`` and its assets at ``GET /playground/{name}``."""

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8",
                            headers=SECURITY_HEADERS)

    @app.get("/playground/{name}", include_in_schema=False)
    async def playground_asset(name: str) -> FileResponse:
        media_type = ASSETS.get(name)
        if media_type is None:
            raise NotFound("No such file.")
        return FileResponse(STATIC_DIR / name, media_type=media_type, headers=SECURITY_HEADERS)
