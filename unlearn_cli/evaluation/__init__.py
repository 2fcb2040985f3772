"""Metrics, tables and sweep summaries."""
