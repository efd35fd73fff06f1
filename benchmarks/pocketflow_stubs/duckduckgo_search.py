"""Offline stand-in for ``duckduckgo_search`` (the same fake as ``ddgs``)."""

from ddgs import DDGS

__all__ = ("DDGS",)
