"""Print Atrium's OpenAPI document (what ``GET /openapi.json`` serves) as the client is generated from it.

``make client`` runs it from the repository root into ``clients/typescript/openapi.json``, then regenerates
``src/schema.d.ts`` from that. The app is built with its default settings
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
