"""The playground page at ``/``: public, served with a strict Content-Security-Policy (no inline script or
style, connections to this origin only), its assets from this origin, and no credential in any URL it
builds. ``tests/e2e/test_playground_browser.py`` drives it in Chromium."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx

from atrium.web import CONTENT_SECURITY_POLICY, STATIC_DIR
from tests.conftest import RunningApp


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        if self.tags and self.tags[-1][0] in ("script", "style") and data.strip():
            self.inline_script = True


def _policy(header: str) -> dict[str, list[str]]:
    return {name: values for name, *values in (part.split() for part in header.split(";") if part.strip())}


async def test_the_page_is_public_and_locked_down(running: RunningApp) -> None:
    anonymous = httpx.AsyncClient(transport=httpx.ASGITransport(app=running.app), base_url="http://atrium.test")
    async with anonymous:
        page = await anonymous.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = _policy(page.headers["content-security-policy"])
        assert policy["default-src"] == ["'none'"] and policy["script-src"] == ["'self'"]
        assert policy["style-src"] == ["'self'"] and policy["connect-src"] == ["'self'"]
        assert policy["frame-ancestors"] == ["'none'"] and policy["base-uri"] == ["'none'"]
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"

        tags = _Tags()
        tags.feed(page.text)
        assert not tags.inline_script, "inline script or style: the CSP would block it"
        assert not any(name.startswith("on") for _, attrs in tags.tags for name in attrs), "inline handler"
        assets = [attrs.get("src") or attrs.get("href") for tag, attrs in tags.tags
                  if tag == "script" or (tag == "link" and attrs.get("rel") == "stylesheet")]
        assert assets == ["/playground/style.css", "/playground/app.js"]
        for module in ("app.js", "api.js", "chart.js"):
            asset = await anonymous.get(f"/playground/{module}")
            assert asset.status_code == 200, module
            assert asset.headers["content-type"].startswith(("text/javascript", "application/javascript"))
            assert asset.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert (await anonymous.get("/playground/style.css")).headers["content-type"].startswith("text/css")
        for missing in ("index.html", "..%2F__init__.py", "nope.js"):
            answer = await anonymous.get(f"/playground/{missing}")
            assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found", missing

        # The page is public; what it calls is not.
        assert (await anonymous.get("/api/v1/collections")).status_code == 401


def test_the_scripts_never_put_a_credential_in_a_url() -> None:
    """Credentials travel in the Authorization header only: no query string carries a token or a key, and
    the credential is kept in sessionStorage (this tab), not localStorage."""
    for script in STATIC_DIR.glob("*.js"):
        text = script.read_text()
        assert not re.search(r"[?&](access_token|token|key|api_key)=", text), script.name
        assert "localStorage" not in text, script.name
        assert "innerHTML" not in text and "outerHTML" not in text, f"{script.name}: server text as markup"
    assert 'Authorization = "Bearer "' in (STATIC_DIR / "api.js").read_text()
