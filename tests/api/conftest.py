"""Every API test runs under the blocking-call guard."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from blockbuster import BlockBuster


@pytest.fixture(autouse=True)
def _no_blocking_calls(blockbuster: BlockBuster) -> Iterator[None]:
    yield
