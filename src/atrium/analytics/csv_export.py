"""CSV exports of the reports' groups, written a line at a time as the groups stream from the database.

Safe to open in a spreadsheet: a text cell that starts with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage
return, which some spreadsheets skip before reading a formula) is prefixed with ``'``, so it is read as text,
never as a formula (OWASP, CSV injection). Numbers are written as numbers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence

from atrium.analytics.service import Group

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
HEADER = ("key", "org_id", "user_id", "api_key_id", "requests", "prompt_tokens", "completion_tokens",
          "total_tokens", "cost_usd", "errors", "error_rate", "cache_hits")


def safe_cell(value: object) -> object:
    """``value``, with a text cell that a spreadsheet would read as a formula made plain text."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return "" if value is None else value


def csv_line(cells: Sequence[object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow([safe_cell(cell) for cell in cells])
    return buffer.getvalue()


def group_cells(group: Group) -> tuple[object, ...]:
    m = group.metrics
    return (group.key, group.org_id, group.user_id, group.api_key_id, m.requests, m.prompt_tokens,
            m.completion_tokens, m.total_tokens, round(m.cost_usd, 9), m.errors, round(m.error_rate, 6),
            m.cache_hits)


async def csv_lines(groups: AsyncIterator[Group]) -> AsyncIterator[str]:
    """The header, then one line per group as it arrives."""
    yield csv_line(HEADER)
    async for group in groups:
        yield csv_line(group_cells(group))
