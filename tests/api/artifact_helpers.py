"""A fake model's answer for artifact generation, for the tests that run the app with ``FakeChatModel``: a
request of the artifacts use case (``task == "artifact"``) is answered with the example artifact of the kind
its prompt asks for (markdown when it leaves the kind to the model); any other request as the fake's
grounded answer."""

from __future__ import annotations

import json
import re

from atrium.conversations.artifacts.content import EXAMPLES
from atrium.gateway.ports import ChatRequest
from atrium.gateway.providers.fake import grounded_answer

_KIND = re.compile(r"^Kind: (markdown|code|checklist|table|json)$", re.MULTILINE)


def example_artifact(request: ChatRequest) -> str:
    found = _KIND.search(request.messages[-1].text) if request.messages else None
    return json.dumps(EXAMPLES[found.group(1) if found else "markdown"])


def artifact_or_grounded(request: ChatRequest) -> str:
    if request.context.task == "artifact":
        return example_artifact(request)
    return grounded_answer(request)
