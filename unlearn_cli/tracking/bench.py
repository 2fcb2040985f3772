"""How fast `unlearn runs` lists a big outputs/ folder (BENCHMARKS.md, `make bench`).

Writes `--runs` synthetic run folders (a full-size metrics.json each: every model role's metrics,
a 500-id request, the config; spread over sweeps of 50 jobs, each with the files a run writes
beside it) into a temporary folder and times `runs_table` over them, median of `--repeats`.

    python -m unlearn_cli.tracking.bench --markdown BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from unlearn_cli.bench import write_section
from unlearn_cli.host import machine_description
from unlearn_cli.tracking.runs import runs_table

START, END = "<!-- runs:start -->", "<!-- runs:end -->"
METHODS = ("influence", "ssd", "scrub", "finetune", "retrain")
METRICS = ("forget_acc", "retain_acc", "test_acc", "UA", "RA", "TA", "MIA", "avg_gap", "val_gap",
           "cost_ratio", "time_s", "kl_forget", "js_forget", "agree_test")  # fmt: skip


def write_runs(root: Path, n: int) -> None:
    for i in range(n):
        folder = root / f"sweep_{i // 50:03d}" / f"{i % 50}_{METHODS[i % len(METHODS)]}_class5"
        (folder / ".hydra").mkdir(parents=True)
        (folder / "plots").mkdir()
        models = {role: {m: float(i % 97) + j for j, m in enumerate(METRICS)}
                  for role in ("original", "retrain", "unlearned")}  # fmt: skip
        data = {
            "status": "completed" if i % 10 else "failed",
            "started_at": f"2026-12-{1 + i % 28:02d}T10:00:00+00:00",
            "config": {"dataset": "animal_mnist", "model": "cnn",
                       "method": METHODS[i % len(METHODS)], "forget": "class5", "seed": i % 3},
            "split": {"forget_ids": list(range(500)), "tag": "class5"},
            "models": models,
        }  # fmt: skip
        (folder / "metrics.json").write_text(json.dumps(data))
        for name in ("metrics.csv", "curves.csv", "unlearn.log", ".hydra/config.yaml"):
            (folder / name).write_text("x\n" * 50)


def measure(n: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "outputs"
        write_runs(root, n)
        runs_table(root, [], "date", None)  # warm: imports, the page cache
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            table = runs_table(root, ["method=influence", "status=completed"], "avg_gap", None)
            times.append(time.perf_counter() - start)
        where = ["--where", "method=influence", "status=completed", "--sort", "avg_gap"]
        command = [sys.executable, "-m", "unlearn_cli.cli", "runs", str(root), *where, "--csv"]
        walls = []
        for _ in range(repeats):  # the whole command: the interpreter, imports, the listing
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            walls.append(time.perf_counter() - start)
    return {"runs": n, "shown": len(table), "median_s": statistics.median(times),
            "min_s": min(times), "max_s": max(times), "repeats": repeats,
            "command_s": statistics.median(walls)}  # fmt: skip


def markdown(result: dict) -> str:
    return "\n".join([
        START,
        "## `unlearn runs`: listing a big outputs/ folder",
        "",
        f"Machine: {machine_description()}. `python -m unlearn_cli.tracking.bench`: "
        f"{result['runs']:,} synthetic run folders (a full-size metrics.json each, in sweeps of "
        "50), listed with `--where method=influence status=completed --sort avg_gap` "
        f"({result['shown']} shown); after one warm listing, median of {result['repeats']}.",
        "",
        "| run folders | listing, median (s) | min (s) | max (s) | whole command, median (s) "
        "| goal |",
        "|---:|---:|---:|---:|---:|---|",
        f"| {result['runs']:,} | {result['median_s']:.3f} | {result['min_s']:.3f} | "
        f"{result['max_s']:.3f} | {result['command_s']:.2f} | under 2 s |",
        "",
        "The whole command is `unlearn runs` in a new process, imports included (the listing is "
        "what reading the folders costs; the rest is Python, pandas and rich starting).",
        END,
    ]) + "\n"  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unlearn_cli.tracking.bench",
                                     description=__doc__)  # fmt: skip
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--markdown", type=Path, help="update this file's runs section")
    opts = parser.parse_args(argv)
    result = measure(opts.runs, opts.repeats)
    print(f"{result['runs']} runs listed in {result['median_s']:.3f} s, the whole command in "
          f"{result['command_s']:.2f} s (medians of {result['repeats']}; {result['shown']} "
          "shown)")  # fmt: skip
    if opts.markdown:
        write_section(opts.markdown, markdown(result), START, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
