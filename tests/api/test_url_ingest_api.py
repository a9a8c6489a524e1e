"""``POST /api/v1/documents`` with ``{"url"}``: 202 and a job, the pages searchable after it, typed refusals
(``invalid_url``, ``url_not_allowed`` without leaking addresses), re-ingesting updates in place; the upload
on the same route still works."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from atrium.settings import Settings
from tests.api.helpers import upload, wait_job
from tests.conftest import RunningApp, make_settings, run_app
from tests.web_site import Site, serve_site

HOME = ("<html><head><title>Guild</title></head><body><main><h1>Guild</h1>"
        "<p>The lighthouse keepers trim the wicks of zirconium lamps at dusk.</p>"
        '<a href="/tides">Tides</a></main></body></html>')
TIDES = ("<html><head><title>Tides</title></head><body><h1>Tides</h1>"
         "<p>Spring tides follow the new moon by a quillwort day.</p></body></html>")


@pytest.fixture
def site() -> Iterator[Site]:
    with serve_site() as served:
        served.page("/", HOME)
        served.page("/tides", TIDES)
        served.page("/robots.txt", "User-agent: *\nDisallow: /closed\n", "text/plain")
        served.page("/closed", "<p>closed</p>")
        yield served


@pytest.fixture
def local_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", egress={"allow_private": True})


@pytest.fixture
async def local(local_settings: Settings) -> AsyncIterator[RunningApp]:
    """The app with the egress allow-list opened for local development (loopback allowed)."""
    async with run_app(local_settings) as app:
        yield app


async def test_a_url_is_ingested_by_a_job_and_found_by_search(local: RunningApp, site: Site) -> None:
    client = local.client
    answer = await client.post("/api/v1/documents", json={"url": site.base + "/", "collection": "web", "depth": 1})
    assert answer.status_code == 202, answer.text
    assert answer.json()["files"] == [site.base + "/"] and answer.json()["collection"] == "web"
    job = await wait_job(client, answer.json()["job_id"])
    assert job["status"] == "succeeded" and job["kind"] == "ingest_url", job
    assert [p["url"] for p in job["result"]["pages"]] == [site.base + "/", site.base + "/tides"]
    assert [d["source"] for d in job["result"]["documents"]] == [site.base + "/", site.base + "/tides"]
    assert job["result"]["chunks"] >= 2 and job["result"]["errors"] == []
    hits = (await client.post("/api/v1/search/semantic",
                              json={"query": "quillwort", "collection": "web", "mode": "keyword"})).json()
    assert any("quillwort" in hit["text"] for hit in hits["results"]), hits
    documents = (await client.get("/api/v1/documents", params={"collection": "web"})).json()["documents"]
    assert {d["source"] for d in documents} == {site.base + "/", site.base + "/tides"}

    site.page("/tides", TIDES.replace("quillwort", "sandpiper"))  # changed: updated in place
    again = await wait_job(client, (await client.post("/api/v1/documents", json={
        "url": site.base + "/", "collection": "web", "depth": 1})).json()["job_id"])
    assert [p["status"] for p in again["result"]["pages"]] == ["unchanged", "replaced"], again
    documents = (await client.get("/api/v1/documents", params={"collection": "web"})).json()["documents"]
    assert len(documents) == 2


async def test_a_robots_refusal_fails_the_job_with_its_code(local: RunningApp, site: Site) -> None:
    answer = await local.client.post("/api/v1/documents", json={"url": site.base + "/closed"})
    job = await wait_job(local.client, answer.json()["job_id"])
    assert job["status"] == "failed" and job["error"].startswith("robots_disallowed:"), job
    assert "/closed" not in site.paths()


async def test_loopback_is_refused_by_default(running: RunningApp, site: Site) -> None:
    answer = await running.client.post("/api/v1/documents", json={"url": site.base + "/"})
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "url_not_allowed"
    assert site.requests == []


async def test_a_refused_url_leaves_no_new_collection(running: RunningApp, site: Site) -> None:
    answer = await running.client.post("/api/v1/documents", json={"url": site.base + "/", "collection": "fresh-one"})
    assert answer.json()["error"]["code"] == "url_not_allowed"
    names = [c["name"] for c in (await running.client.get("/api/v1/collections")).json()["collections"]]
    assert "fresh-one" not in names
    search = await running.client.post("/api/v1/search/semantic", json={"query": "x", "collection": "fresh-one"})
    assert search.status_code == 404


async def test_a_name_resolving_inward_is_refused_without_naming_the_address(running: RunningApp) -> None:
    answer = await running.client.post("/api/v1/documents", json={"url": "http://localhost:9/"})
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "url_not_allowed"
    message = answer.json()["error"]["message"]
    assert "localhost" in message and "127.0.0.1" not in message and "::1" not in message


@pytest.mark.parametrize("body", [{"url": "ftp://example.com/"}, {"url": "file:///etc/passwd"},
                                  {"url": "http://user:pw@example.com/"}, {"url": "not a url"}])
async def test_bad_urls_are_invalid_url(running: RunningApp, body: dict[str, str]) -> None:
    answer = await running.client.post("/api/v1/documents", json=body)
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_url", answer.text


@pytest.mark.parametrize("body", [{"url": "http://example.com/", "depth": 4}, {"url": ""},
                                  {"url": "http://example.com/", "render": "magic"}, {"nope": 1}])
async def test_bad_shapes_are_refused(running: RunningApp, body: dict[str, object]) -> None:
    answer = await running.client.post("/api/v1/documents", json=body)
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_request", answer.text


async def test_uploads_still_work_on_the_same_route(running: RunningApp) -> None:
    job = await wait_job(running.client, (await upload(running.client, {"a.md": "# A\n\nText."}))["job_id"])
    assert job["status"] == "succeeded" and job["kind"] == "ingest"


async def test_the_spec_documents_both_bodies(running: RunningApp) -> None:
    spec = (await running.client.get("/openapi.json")).json()
    content = spec["paths"]["/api/v1/documents"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in content and content["application/json"]["schema"]["required"] == ["url"]
