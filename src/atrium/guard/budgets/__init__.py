"""Budgets: spending caps per organisation, user and API key, in one place.

- ``ledger``: ``BudgetGuard``, the budgets themselves: reserve the most a call may cost, settle what it
  cost, definitions cached per process (integer micro-USD; ``micro_usd``, ``MICRO``).
- ``spend``: reserve and settle around a gateway call: ``SpendControl`` (budgets and token limits),
  ``BudgetedChatModel`` (the chat stack's wrapper), ``embedding_spend`` (``Gateway.embed``).
- ``store``: the atomic reserve / settle / release statements and the admin reads and writes.
- ``admin``: the admin use cases: set, list, delete and reset an organisation's budgets, audited.
"""
