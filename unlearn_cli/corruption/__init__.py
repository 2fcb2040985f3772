"""Correcting wrong data: originals trained on poisoned or mislabelled samples, and requests
that name only some of them (docs/corrective.md)."""
