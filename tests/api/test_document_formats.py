"""Uploads of HTML, PDF, DOCX and CSV files through the API: found by search, the PDF's page in the hit's
heading and in the answer's sources; unsupported and corrupt files refused with typed errors."""

from __future__ import annotations

from typing import Any

import anyio
import httpx

from tests.api.helpers import wait_job
from tests.api.test_edge import assert_typed_error
from tests.api.test_knowledge_api import search
from tests.conftest import RunningApp
from tests.document_files import CSV_TABLE, HTML_PAGE, make_docx, make_pdf


async def post_files(client: httpx.AsyncClient, files: dict[str, bytes]) -> httpx.Response:
    return await client.post("/api/v1/documents", data={"collection": "docs"},
                             files=[("files", (name, body, "application/octet-stream"))
                                    for name, body in files.items()])


async def ingest_bytes(client: httpx.AsyncClient, files: dict[str, bytes]) -> dict[str, Any]:
    response = await post_files(client, files)
    assert response.status_code == 202, response.text
    job = await wait_job(client, response.json()["job_id"])
    assert job["status"] == "succeeded", job
    return job


async def test_each_format_is_ingested_and_found(running: RunningApp) -> None:
    pdf = make_pdf(["Cover page of the handbook.", "Glaciers in Svalbard retreat forty metres every summer."],
                   title="Arctic handbook")
    # python-docx reads its template file: built off the event loop.
    docx = await anyio.to_thread.run_sync(
        make_docx, "Onboarding", [("h1", "First week"), ("p", "Meet your mentor in the orangery on Monday.")])
    job = await ingest_bytes(running.client, {"arctic.pdf": pdf, "onboarding.docx": docx,
                                              "greenhouse.html": HTML_PAGE.encode(), "cities.csv": CSV_TABLE.encode()})
    assert job["result"]["counts"] == {"created": 4} and not job["result"]["errors"]

    glacier = (await search(running.client, "glaciers Svalbard retreat", "keyword"))[0]
    assert (glacier["source"], glacier["title"], glacier["heading"]) == ("arctic.pdf", "Arctic handbook", "Page 2")
    mentor = (await search(running.client, "mentor orangery", "keyword"))[0]
    assert (mentor["source"], mentor["heading"]) == ("onboarding.docx", "First week")
    vents = (await search(running.client, "roof vents degrees", "keyword"))[0]
    assert (vents["source"], vents["heading"]) == ("greenhouse.html", "Greenhouse guide > Ventilation")
    assert not await search(running.client, "analyticsbeacon footerfiller", "keyword")
    nuuk = (await search(running.client, "Nuuk Greenland", "keyword"))[0]
    assert nuuk["source"] == "cities.csv" and "city: Nuuk; country: Greenland" in nuuk["text"]


async def test_the_pdf_page_shows_in_the_answers_sources(running: RunningApp) -> None:
    await ingest_bytes(running.client, {"arctic.pdf": make_pdf(
        ["Cover page.", "Intro.", "Polar bears hunt seals on the sea ice in winter."])})
    created = await running.client.post("/api/v1/query", json={"question": "What do polar bears hunt on the sea ice?"})
    assert created.status_code == 201, created.text
    source = created.json()["sources"][0]
    assert (source["source"], source["heading"]) == ("arctic.pdf", "Page 3")


async def test_corrupt_unsupported_and_mismatched_files_get_typed_errors(running: RunningApp) -> None:
    good = make_pdf(["Some text."])
    corrupt = await post_files(running.client, {"broken.pdf": good[: len(good) // 3]})
    assert "PDF" in assert_typed_error(corrupt, 422, "unreadable_file")["message"]
    not_docx = await post_files(running.client, {"letter.docx": b"PK\x03\x04 not really a zip"})
    assert_typed_error(not_docx, 422, "unreadable_file")
    pdf_as_text = await post_files(running.client, {"notes.txt": good})
    assert_typed_error(pdf_as_text, 422, "unreadable_file")
    slides = await post_files(running.client, {"slides.pptx": b"PK\x03\x04"})
    assert ".pptx" in assert_typed_error(slides, 422, "unsupported_file_type")["message"]
    # One bad file refuses the whole upload, and nothing is left behind.
    mixed = await post_files(running.client, {"fine.csv": CSV_TABLE.encode(), "broken.pdf": b"%PDF-1.4 garbage"})
    assert_typed_error(mixed, 422, "unreadable_file")
    leftovers = await anyio.to_thread.run_sync(lambda: list(running.services.settings.uploads_dir.glob("*/*")))
    assert leftovers == []
    assert (await running.client.get("/api/v1/documents")).json()["documents"] == []
