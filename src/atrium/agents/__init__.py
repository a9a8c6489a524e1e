"""Agents: the assistant graph (LangGraph) over the use cases and the gateway's one model call.

``build_assistant_graph(deps, checkpointer)`` (``graph.py``) compiles it; ``factory.assistant_deps`` takes
its collaborators from the running services and the app's ``checkpoints`` (``agents/checkpoints.py``) hold its threads.
"""
