"""Generated documentation, so the docs cannot drift: the option tables (from the schemas) and
the metric table (from evaluation/catalogue.py).

`python -m unlearn_cli.docs docs/methods.md docs/metrics.md` rewrites, in each file given, the
part between the `<!-- options:begin -->` and `<!-- options:end -->` markers and the part between
`<!-- metrics:begin -->` and `<!-- metrics:end -->`; tests check both are current.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from unlearn_cli.options import choice_text, defaults_of, describe, fields_of, hints_of

BEGIN, END = "<!-- options:begin -->", "<!-- options:end -->"
METRICS_BEGIN, METRICS_END = "<!-- metrics:begin -->", "<!-- metrics:end -->"
TARGETS = {"any": "every forget set", "class": "class forgetting", "samples": "samples"}


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


def metrics_markdown() -> str:
    """The catalogue as a table: every metric of metrics.json, in the order tables show them."""
    from unlearn_cli.evaluation.catalogue import CATALOGUE
    from unlearn_cli.evaluation.metric_registry import SECTIONS, UNITS

    lines = [METRICS_BEGIN, "",
             "| metric | family | unit | in | measured for | shown in | meaning |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for m in CATALOGUE:
        gaps = ", ".join(g for g, on in (("avg_gap", m.gap), ("val_gap", m.val_gap)) if on)
        applies = TARGETS[m.targets] + (f", with `{m.needs}`" if m.needs else "")
        shown = [w for w, on in (("run table", m.run_table), (SECTIONS.get(m.report, ""),
                 bool(m.report)), ("sweep summary", m.summary)) if on]  # fmt: skip
        cells = [f"`{m.name}`", m.family, UNITS[m.unit].split(" (")[0], gaps or "-", applies,
                 ", ".join(shown) or "metrics.json only", m.help]  # fmt: skip
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join([*lines, "", METRICS_END])


def with_block(text: str, begin: str, end: str, body: str) -> str:
    """`text` with its part from `begin` to `end` (markers included) replaced by `body`."""
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return head + body + tail


def with_tables(page: str) -> str:
    return with_block(page, BEGIN, END, options_markdown())


def regenerate(text: str) -> str:
    """Every generated block `text` has, brought up to date."""
    if BEGIN in text:
        text = with_tables(text)
    if METRICS_BEGIN in text:
        text = with_block(text, METRICS_BEGIN, METRICS_END, metrics_markdown())
    return text


if __name__ == "__main__":
    for name in sys.argv[1:] or ["docs/methods.md", "docs/metrics.md"]:
        path = Path(name)
        path.write_text(regenerate(path.read_text(encoding="utf-8")), encoding="utf-8")
