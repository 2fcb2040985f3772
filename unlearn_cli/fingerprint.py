"""Short, stable hashes of plain values: a leaf module (it imports nothing of the package), so
that the record, the resume checkpoints and the caches can all name what they hold without
importing one another."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def short_hash(value: Any) -> str:
    """16 hex digits of the sha256 of `value` as sorted-key JSON: stable across dict orders."""
    blob = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
