"""A replica in a process of its own, for the kill -9 test (``test_stream_replicas.py``): the app, with a
slow fake model, on the settings of the environment (``ATRIUM_*``), served by uvicorn on ``argv[1]``."""

from __future__ import annotations

import sys

import uvicorn

from atrium.app import create_app
from atrium.gateway.providers.fake import FakeChatModel
from atrium.settings import Settings


def main() -> None:
    app = create_app(Settings(), chat_model=FakeChatModel(token_delay=0.3))
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")


if __name__ == "__main__":
    main()
