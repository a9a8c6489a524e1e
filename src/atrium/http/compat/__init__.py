"""Vendor-compatible edges (OpenAI's ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``;
Anthropic's ``/v1/messages``): translation between each vendor's JSON/SSE and the gateway's ChatModel port.

``streams`` holds what both share (opening a gateway stream, collecting it, mapping failures);
``openai_wire`` and ``anthropic_wire`` hold one vendor each: request body -> ``ChatRequest``, events ->
response JSON or SSE frames. The routes in ``atrium.http.routes`` only glue these together.
"""
