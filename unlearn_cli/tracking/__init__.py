"""Trackers: a finished run folder sent to MLflow, TensorBoard or a CSV of scalars
(docs/tracking.md), and `unlearn runs`, the table of every run folder."""
