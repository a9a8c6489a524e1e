"""Artifacts: typed documents (markdown, code, checklist, table, JSON) a caller or the model writes, kept
with every version, searchable, and shared under the same rules as collections.

``content`` (the kinds, their checks, export), ``repository`` (rows and who may do what), ``index`` (the
search index in the knowledge layer), ``generation`` (the model call and strict parsing), ``service``
(the use cases the routes call).
"""
