"""The option tables of docs/methods.md, generated from the schemas so the docs cannot drift.

`python -m unlearn_cli.docs` rewrites the part of docs/methods.md between the
`<!-- options:begin -->` and `<!-- options:end -->` markers; a test checks it is current.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from unlearn_cli.options import choice_text, defaults_of, describe, fields_of, hints_of

BEGIN, END = "<!-- options:begin -->", "<!-- options:end -->"


def value_text(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(choice_text(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def schema_table(schema: type, prefix: str) -> list[str]:
    return ["| option | allowed | default | meaning |", "|---|---|---|---|",
            *schema_rows(schema, prefix)]  # fmt: skip


def schema_rows(schema: type, prefix: str, defaults: dict | None = None) -> list[str]:
    """One row per field; a nested schema's fields follow under its dotted prefix, with the
    defaults its parent gives them (rum's per-group method options: `method.influence.scale`)."""
    hints = hints_of(schema)
    defaults = defaults_of(schema) if defaults is None else defaults
    lines = []
    for f in fields_of(schema):
        nested = hints[f.name]
        if isinstance(nested, type) and dataclasses.is_dataclass(nested):
            lines += schema_rows(nested, f"{prefix}{f.name}.", defaults[f.name])
            continue
        if isinstance(defaults[f.name], dict):
            continue  # an optional settings block (a table of its own)
        allowed = describe(hints[f.name]).replace("|", "\\|")
        meaning = f.metadata.get("help", "").replace("|", "\\|")
        default = f"`{value_text(defaults[f.name])}`"
        if "by_targets" in f.metadata:  # a per-scenario default
            per = f.metadata["by_targets"]
            default += (
                f": class `{value_text(per['class'])}`, samples `{value_text(per['samples'])}`"
            )
            if "memorised" in f.metadata:
                default += f" (`{value_text(f.metadata['memorised'])}` from a memorising original)"
        lines.append(f"| `{prefix}{f.name}` | {allowed} | {default} | {meaning} |")
    return lines


def options_markdown() -> str:
    from unlearn_cli.methods import METHODS, options_type
    from unlearn_cli.methods.base import WHAT
    from unlearn_cli.training import TrainOptions

    parts = [BEGIN, "", "#### `model.train` (every model; each model's YAML sets its defaults)", ""]
    parts += schema_table(TrainOptions, "model.train.")
    for name in METHODS.names():
        schema = options_type(name)
        parts += ["", f"#### `method={name}`", ""]
        if not fields_of(schema):
            parts.append((schema.__doc__ or "no options").strip())
            continue
        parts += schema_table(schema, "method.")
        for targets, reason in schema.unsuited.items():
            parts += ["", f"**Not suited to forgetting {WHAT[targets]}**: {reason}."]
        if schema.unsuited_memorising:
            parts += [
                "",
                "**Does not forget samples from an original that memorises its "
                f"training data** (the run's log warns): {schema.unsuited_memorising}.",
            ]
        renamed = getattr(schema, "renamed", {})
        if renamed:
            moves = ", ".join(f"`{old}` -> `{new}`" for old, new in renamed.items())
            parts += ["", f"Renamed in 0.2: {moves}."]
    return "\n".join([*parts, "", END])


def with_tables(page: str) -> str:
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + options_markdown() + tail


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/methods.md")
    path.write_text(with_tables(path.read_text(encoding="utf-8")), encoding="utf-8")
