"""The date range a report covers: whole UTC days, ``start`` to ``end`` inclusive, checked once at the edge."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from atrium.errors import InvalidRequest

DEFAULT_DAYS = 30
MAX_DAYS = 366
EARLIEST, LATEST = date(2000, 1, 1), date(2999, 12, 31)  # far enough; keeps the day arithmetic in range


@dataclass(frozen=True, slots=True)
class Period:
    start: date
    end: date  # inclusive

    @property
    def starts_at(self) -> datetime:
        return datetime.combine(self.start, time.min, tzinfo=UTC)

    @property
    def ends_before(self) -> datetime:
        return datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=UTC)


def period_of(start: date | None, end: date | None, *, today: date | None = None) -> Period:
    """The range ``start``..``end`` (defaults: the last ``DEFAULT_DAYS`` days up to today, UTC); at most
    ``MAX_DAYS`` days, ``start`` not after ``end``, or ``InvalidRequest``."""
    today = today or datetime.now(UTC).date()
    for name, day in (("start", start), ("end", end)):
        if day is not None and not EARLIEST <= day <= LATEST:
            raise InvalidRequest(f"{name}: must be a date from {EARLIEST} to {LATEST}.")
    if end is None:
        end = max(today, start) if start is not None else today
    if start is None:
        start = end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise InvalidRequest("start: must not be after end.")
    if (end - start).days + 1 > MAX_DAYS:
        raise InvalidRequest(f"end: a report covers at most {MAX_DAYS} days.")
    return Period(start, end)
