"""The ``atrium`` command as a user runs it (subprocess), on fast adapters: ingest, search, ask, index check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ATRIUM = str(Path(sys.executable).with_name("atrium"))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ATRIUM_")}
    base.update({"ATRIUM_DATA_DIR": str(tmp_path / "data"), "ATRIUM_EMBEDDING__PROVIDER": "hash",
                 "ATRIUM_CHAT__PROVIDER": "fake", "ATRIUM_KNOWLEDGE__DEMO_COLLECTION": "false",
                 "ATRIUM_KNOWLEDGE__MIN_RELEVANCE": "0.05"})
    return base


def atrium(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ATRIUM, *args], env=env, capture_output=True, text=True, timeout=120)


def test_ingest_search_ask_and_index_check(env: dict[str, str], tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "billing.md").write_text("# Billing\n\n## Refunds\n\nRefunds are issued within 14 days.\n")
    (docs / "sub" / "deploy.txt").write_text("The helm chart deploys three replicas.\n")
    (docs / "image.png").write_bytes(b"\x89PNG")
    ingested = atrium(env, "ingest", str(docs), "--collection", "handbook")
    assert ingested.returncode == 0, ingested.stderr
    assert "2 documents" in ingested.stderr
    assert "admin API key" in ingested.stderr  # a new data dir: the key is shown once
    again = atrium(env, "ingest", str(docs), "--collection", "handbook")
    assert "unchanged: 2" in again.stderr and "admin API key" not in again.stderr

    found = atrium(env, "search", "refunds issued", "--json", "--mode", "keyword")
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout)
    assert results[0]["source"] == "billing.md"
    assert {r["source"] for r in json.loads(atrium(env, "search", "helm replicas", "--json").stdout)} >= {
        "sub/deploy.txt"}

    asked = atrium(env, "ask", "How long do refunds take?")
    assert asked.returncode == 0, asked.stderr
    assert "14 days" in asked.stdout and "[1]" in asked.stdout
    assert "billing.md" in asked.stderr

    checked = atrium(env, "index", "check")
    assert checked.returncode == 0 and "matches" in checked.stderr


def test_bad_input_gets_a_clear_error(env: dict[str, str], tmp_path: Path) -> None:
    missing = atrium(env, "ingest", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "no such file or directory" in missing.stderr
    bad_collection = atrium(env, "ingest", str(tmp_path), "--collection", "../x")
    assert bad_collection.returncode == 1 and "collection" in bad_collection.stderr
    assert "Traceback" not in missing.stderr + bad_collection.stderr
    bad_env = atrium({**env, "ATRIUM_CHAT__PROVIDER": "mystery"}, "search", "x")
    assert bad_env.returncode == 2 and "Invalid configuration" in bad_env.stderr


def test_ingest_a_url(env: dict[str, str]) -> None:
    """``atrium ingest URL``: refused on loopback by default, ingested with the egress allow-list on."""
    from tests.web_site import serve_site

    with serve_site() as site:
        site.page("/", "<html><head><title>Keepers</title></head><body><h1>Keepers</h1>"
                       "<p>Wicks are trimmed with pelican scissors.</p><a href='/two'>two</a></body></html>")
        site.page("/two", "<html><body><h1>Two</h1><p>The second page about gannets.</p></body></html>")
        refused = atrium(env, "ingest", site.base + "/")
        assert refused.returncode == 1 and "may not be fetched" in refused.stderr, refused.stderr
        assert site.requests == []
        env = {**env, "ATRIUM_EGRESS__ALLOW_PRIVATE": "true"}
        ingested = atrium(env, "ingest", site.base + "/", "--depth", "1", "--collection", "web")
        assert ingested.returncode == 0, ingested.stderr
        assert "2 documents" in ingested.stderr
    found = json.loads(atrium(env, "search", "pelican scissors", "--json", "--mode", "keyword").stdout)
    assert found[0]["source"] == site.base + "/"
