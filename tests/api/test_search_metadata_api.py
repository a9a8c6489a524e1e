"""Issue 14 through the API: PDF pages as a `page` on search hits and answer sources, highlighted snippets,
metadata filters on `POST /api/v1/search/semantic` and their validation (typed 422)."""

from __future__ import annotations

import pytest

from tests.api.helpers import ingest
from tests.api.test_document_formats import ingest_bytes
from tests.api.test_edge import assert_typed_error
from tests.api.test_knowledge_api import search
from tests.conftest import RunningApp
from tests.document_files import make_pdf


async def test_pdf_pages_are_numbers_on_hits_and_sources(running: RunningApp) -> None:
    await ingest_bytes(running.client, {"arctic.pdf": make_pdf(
        ["Cover page.", "Intro to the handbook.", "Polar bears hunt seals on the sea ice in winter."])})
    await ingest(running.client, {"plain.md": "# Plain\n\nPolar nights are long.\n"})
    hits = await search(running.client, "polar bears hunt seals", "keyword")
    assert (hits[0]["source"], hits[0]["page"]) == ("arctic.pdf", 3)
    assert [hit["page"] for hit in hits if hit["source"] == "plain.md"] == [None]
    created = await running.client.post("/api/v1/query", json={"question": "What do polar bears hunt on the sea ice?"})
    assert created.status_code == 201, created.text
    source = created.json()["sources"][0]
    assert (source["source"], source["page"]) == ("arctic.pdf", 3)
    answer = await running.client.post("/api/v1/chat/ask", json={"message": "What do polar bears hunt?"})
    assert answer.json()["sources"][0]["page"] == 3


async def test_hits_and_sources_carry_a_highlighted_snippet(running: RunningApp) -> None:
    vault = "Signing keys are kept in the vault. " * 5
    text = f"# Guide\n\n{vault}To rotate the signing keys, run the rotation command weekly. {vault}\n"
    await ingest(running.client, {"guide.md": text})
    hit = (await search(running.client, "How are signing keys rotated?", "keyword"))[0]
    assert hit["text"].startswith("Guide") and len(hit["snippet"]) <= 300 < len(hit["text"])
    assert hit["snippet"] in hit["text"] and "rotate the signing keys" in hit["snippet"]
    marked = [hit["snippet"][start:end] for start, end in hit["highlights"]]
    # "rotated" finds "rotate" (light stemming), not "rotation"; "How" and "are" are too common to mark.
    assert {word.lower() for word in marked} == {"rotate", "signing", "keys"}
    answer = (await running.client.post("/api/v1/query", json={"question": "How are signing keys rotated?"})).json()
    source = answer["sources"][0]
    assert "signing keys" in source["snippet"]
    assert {source["snippet"][a:b] for a, b in source["highlights"]} >= {"signing", "keys"}


async def test_filters_narrow_the_search(running: RunningApp) -> None:
    await ingest_bytes(running.client, {"refunds.pdf": make_pdf(["Refunds take fourteen days."])})
    await ingest(running.client, {"refunds.md": "# Refunds\n\nRefunds take fourteen days.\n",
                                  "refunds.txt": "Refunds take fourteen days."})
    for mode in ("keyword", "vector", "hybrid"):
        def sources(hits: list[dict]) -> set[str]:
            return {hit["source"] for hit in hits}

        everything = sources(await search(running.client, "refunds fourteen days", mode))
        assert {"refunds.pdf", "refunds.md", "refunds.txt"} <= everything
        assert sources(await search(running.client, "refunds fourteen days", mode,
                                    filters={"type": ["pdf"]})) == {"refunds.pdf"}
        assert sources(await search(running.client, "refunds fourteen days", mode,
                                    filters={"source": "refunds.*", "type": ["txt", "md"]})) == {
            "refunds.txt", "refunds.md"}
        assert sources(await search(running.client, "refunds fourteen days", mode,
                                    filters={"source": "refunds.t*"})) == {"refunds.txt"}
        assert sources(await search(running.client, "refunds fourteen days", mode,
                                    filters={"source": "refunds.md"})) == {"refunds.md"}
        assert await search(running.client, "refunds fourteen days", mode,
                            filters={"created_before": "2000-01-01"}) == []
        assert sources(await search(running.client, "refunds fourteen days", mode,
                                    filters={"created_after": "2000-01-01T00:00:00Z"})) == everything


@pytest.mark.parametrize("filters", [
    {"type": ["exe"]}, {"type": []}, {"type": "pdf"}, {"source": ""}, {"created_after": "yesterday"},
    {"created_after": "2026-02-01", "created_before": "2026-01-01"}, {"colour": "red"}, "pdf",
])
async def test_bad_filters_are_a_typed_422(running: RunningApp, filters: object) -> None:
    response = await running.client.post("/api/v1/search/semantic", json={"query": "x", "filters": filters})
    assert_typed_error(response, 422, "invalid_request")
