"""Serving logic shared by the routers and independent of the engine."""
