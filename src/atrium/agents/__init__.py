"""Agents: the assistant graph (LangGraph) over the use cases and the gateway's one model call.

``build_assistant_graph(deps, checkpointer)`` (``graph.py``) compiles it; ``factory.build_assistant_deps`` takes
its collaborators from the container's parts and the app's ``checkpoints`` (``agents/checkpoints.py``) hold its threads.
"""
