"""Response models: what each route answers, as the OpenAPI document (``/openapi.json``) shows it.

One small module per area, beside the routes. Routes off the hot path declare them as ``response_model``;
the model endpoints and search only document them (``responses={200: {"model": ...}}``) so FastAPI does not
validate their answers again. Errors share one shape per vendor (``errors.py``).

Routes return these models, never hand-made dicts: use cases return domain objects (ORM rows, dataclasses)
and a model's ``of`` constructor (or ``created``, ``accepted``...) maps them. The account models validate
the views ``atrium.accounts.admin_views`` shares with the CLI's ``--json`` output.
"""
