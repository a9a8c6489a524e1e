"""bench/soak.py as a smoke test: a short run of its mixed load (chat, streams, search, uploads with their
jobs, WebSockets) against a real ``atrium serve`` and the local fake upstream ends with every kind of
operation done at least once, 0 errors, the sampler reading the server's memory, descriptors and SQLite
handles, and the server still up. (Memory growth needs the long run: docs/benchmarks.md, "Issue 15 - soak".)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_short_soak_has_no_errors(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--minutes", "0.15", "--sample-s", "1", "--settle-s", "1",
         "--embedder", "hash", "--upload-every", "3", "--ws-every", "1", "--ws-hold", "0.5", "--out", str(out),
         "--keep", str(tmp_path / "run")],
        env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["errors"] == {}, result["error_examples"]
    assert set(result["done"]) == {"chat", "stream", "search", "upload", "ws"}
    assert result["server_alive"]
    samples = result["samples"]
    assert len(samples) >= 7
    assert all(s["rss_kib"] > 50_000 and s["fds"] > 0 and s["db_handles"] > 0 for s in samples)
    assert result["verdicts"]["db_handles"]["ok"] and result["verdicts"]["fds"]["ok"]
