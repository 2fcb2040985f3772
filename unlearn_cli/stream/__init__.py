"""Streams of deletion requests: the `stream` config group (spec), its steps resolved against a
dataset (plan) and the step-by-step run (run)."""
