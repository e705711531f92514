"""Thin HTTP routers: parse, delegate to services, return."""
