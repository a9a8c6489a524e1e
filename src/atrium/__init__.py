"""Atrium: a self-hosted AI backend."""
