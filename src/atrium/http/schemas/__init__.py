"""Response models: what each route answers, as the OpenAPI document (``/openapi.json``) shows it.

One small module per area, beside the routes. Routes off the hot path declare them as ``response_model``;
the model endpoints and search only document them (``responses={200: {"model": ...}}``) so their answers
pay no validation. Errors share one shape per vendor (``errors.py``).
"""
