"""Budgets: amounts in USD and in exact integer micro-USD."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from atrium.http.schemas.common import Timestamp, View

if TYPE_CHECKING:
    from atrium.guard.budgets.ledger import BudgetView as Budget


class BudgetView(View):
    id: str
    scope: Literal["org", "user", "key"]
    subject_id: str
    period: Literal["day", "month", "total"]
    window: str = Field(description="The current window: the day, the month, or `total`.")
    limit_usd: float
    spent_usd: float
    reserved_usd: float
    remaining_usd: float
    limit_micro_usd: int
    spent_micro_usd: int
    reserved_micro_usd: int
    remaining_micro_usd: int
    resets_at: Timestamp | None

    @classmethod
    def of(cls, budget: Budget) -> BudgetView:
        return cls.model_validate(budget.to_dict())


class BudgetList(View):
    budgets: list[BudgetView]


class OwnBudgets(View):
    enforced: bool
    budgets: list[BudgetView]
