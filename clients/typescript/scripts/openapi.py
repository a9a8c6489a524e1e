"""Print Atrium's OpenAPI document (what ``GET /openapi.json`` serves) as the client is generated from it.

Run from the repository root: ``.venv/bin/python clients/typescript/scripts/openapi.py > clients/typescript/openapi.json``
(``make client`` does this, then regenerates ``src/schema.d.ts``). The app is built with its default settings
on a throw-away data dir; the document does not depend on them."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from atrium.app import create_app
from atrium.settings import Settings


def document() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as data_dir:
        return create_app(Settings(data_dir=Path(data_dir))).openapi()


if __name__ == "__main__":
    json.dump(document(), sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
