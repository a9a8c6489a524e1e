"""Usage analytics: reports over the gateway's usage records (one row per model or embedding call), after
LiteLLM's spend reports: a caller's own usage by day, model or endpoint; an organisation's (or, for the
platform admin, every organisation's) totals, top users and organisations, error rates and cost; reset
points from which a user's figures count; CSV exports of both. See docs/api.md (Usage analytics)."""
