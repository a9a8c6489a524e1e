"""What the playground's browser tests share: how Chromium is started, and reading the usage tab."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
USAGE_TRIES = 20


async def usage_shown(page: Any) -> str:
    """Open the usage tab: ``counted`` once a day of the chart shows tokens (usage is recorded just after an
    answer, so the tab is opened again a few times), else ``unavailable`` or ``empty``."""
    for _ in range(USAGE_TRIES):
        await page.click("[data-view=chat]")
        await page.click("[data-view=usage]")
        await page.wait_for_selector("#usage :is(svg, [data-status=unavailable])")
        if await page.query_selector("#usage [data-status=unavailable]"):
            return "unavailable"
        values = await page.eval_on_selector_all("#usage .bar", "bars => bars.map(b => +b.dataset.value)")
        if values and max(values) > 0:
            return "counted"
        await asyncio.sleep(0.5)
    return "empty"


# The tests skip only when Chromium is absent; without the playwright package (the browser extra, installed by
# make install-dev) they fail.
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                                    reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")
