"""Comparison reports from sweep result folders: plots, tables, a self-contained HTML page."""

from .build import build_report

__all__ = ["build_report"]
