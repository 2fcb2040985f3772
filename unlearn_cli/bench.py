"""Benchmark of the training loop's own overhead (part of `make bench`).

Our `train_classifier` against a minimal hand-written PyTorch loop on the same model, data,
optimizer, schedule and batch order, on the same machine in the same process. The two alternate
for several repetitions and the medians of images per second are compared; the overhead must
stay under 5%. Speed options (AMP, channels_last) are off on both sides so they run the same
arithmetic. The result replaces the marked section of BENCHMARKS.md (or is appended to it).

    python -m unlearn_cli.bench [--repeats 5] [--epochs 2] [--device cpu] [--markdown BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module

from unlearn_cli.atomic import atomic_write_text
from unlearn_cli.data import load_dataset
from unlearn_cli.data.feed import TrainingFeed
from unlearn_cli.device import resolve_device, resolve_threads
from unlearn_cli.host import machine_description
from unlearn_cli.models import build_model
from unlearn_cli.training import TrainOptions, make_optimizer, make_scheduler, train_classifier
from unlearn_cli.validate import RunConfig, validate_config

START, END = "<!-- loop-overhead:start -->", "<!-- loop-overhead:end -->"
OURS, HAND = "unlearn-cli train_classifier", "hand-written loop"
STREAMED = "unlearn-cli, streamed (DataLoader, 1 worker; not part of the 5% budget)"
CHECKPOINTED = "unlearn-cli train_classifier + epoch checkpoints (checkpoint_every=1, the default)"
LIMIT_PCT = 5.0
CHECKPOINT_LIMIT_PCT = 2.0


def hand_written_loop(model, x, y, cfg: TrainOptions, device: torch.device, seed: int) -> None:
    """What a PyTorch user writes by hand: shuffle, slice, forward, backward, step."""
    model.to(device).train()
    x, y = x.to(device), y.to(device)
    steps = -(-len(y) // cfg.batch_size)
    opt = make_optimizer(model.parameters(), cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
    sched = make_scheduler(opt, cfg.schedule, cfg.lr, cfg.epochs * steps)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(cfg.epochs):
        order = torch.randperm(len(y), generator=gen).to(device)
        for start in range(0, len(y), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(config: RunConfig, device: torch.device, repeats: int) -> dict:
    data = load_dataset(config.dataset, config.run.cache_dir)
    train = replace(config.model.options.train, amp=False, channels_last=False)
    images = train.epochs * data.num_train
    seed = config.run.seed

    def fresh():
        return build_model(config.model, data.input_shape, data.num_classes, seed)

    def ours():
        train_classifier(fresh(), data.x_train, data.y_train, train, device, seed, "bench")

    def hand():
        hand_written_loop(fresh(), data.x_train, data.y_train, train, device, seed)

    staging = Path(tempfile.mkdtemp(prefix="unlearn-bench-"))

    def checkpointed():  # what cached models' training does by default: resume state per epoch
        (staging / "bench.ckpt").unlink(missing_ok=True)  # else it would resume, not train
        train_classifier(fresh(), data.x_train, data.y_train, train, device, seed, "bench",
                         checkpoint=staging / "bench.ckpt")  # fmt: skip

    def streamed():  # the DataLoader path of large image folders, for information
        train_classifier(fresh(), data.x_train, data.y_train, train, device, seed, "bench",
                         feed=TrainingFeed(stream=True, workers=1))  # fmt: skip

    loops = {OURS: ours, HAND: hand, CHECKPOINTED: checkpointed, STREAMED: streamed}
    try:
        for fn in loops.values():
            fn()  # warm-up: allocator, kernels, data in cache, worker start-up code paths
        rates: dict[str, list[float]] = {name: [] for name in loops}
        for _ in range(repeats):  # interleaved, so drifts in machine load hit every loop alike
            for name, fn in loops.items():
                rates[name].append(images / timed(fn))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"rates": rates, "images": images, "data": data, "train": train}


def markdown(result: dict, config: RunConfig, device: torch.device, repeats: int) -> str:
    rates, data, train = result["rates"], result["data"], result["train"]
    medians = {name: statistics.median(r) for name, r in rates.items()}
    ours, hand = medians[OURS], medians[HAND]
    overhead = (hand / ours - 1) * 100
    verdict = "within" if overhead < LIMIT_PCT else "OVER"
    checkpoint_cost = (ours / medians[CHECKPOINTED] - 1) * 100
    checkpoint_verdict = "within" if checkpoint_cost < CHECKPOINT_LIMIT_PCT else "OVER"
    lines = [
        START,
        "## Training-loop overhead",
        "",
        f"`python -m unlearn_cli.bench` (run by `make bench`): `{config.model.name}` on "
        f"`{data.name}` ({data.num_train} training images), {train.epochs} epochs per "
        f"measurement, batch {train.batch_size}, {train.optimizer} + {train.schedule}, device "
        f"`{device}`; the loops are interleaved, {repeats} repetitions each, after one warm-up.",
        f"Machine: {machine_description()}; {torch.get_num_threads()} torch threads.",
        "",
        "| loop | images/s (median) | min | max |",
        "|---|---:|---:|---:|",
    ]
    for name, r in rates.items():
        lines.append(f"| {name} | {medians[name]:,.0f} | {min(r):,.0f} | {max(r):,.0f} |")
    lines += [
        "",
        f"Overhead of our loop: **{overhead:+.1f}%** ({verdict} the {LIMIT_PCT:.0f}% budget). "
        "Our loop adds the progress bar, per-epoch loss logging, the row/stream dispatch and "
        "the augmentation/speed hooks; the hand-written loop has none of them. The streamed row "
        "is the path of image folders too big for memory (a DataLoader over memory-mapped "
        "rows); in memory it only shows what streaming costs.",
        "",
        f"Cost of the epoch checkpoints (resume after a kill, `model.train.checkpoint_every=1`) "
        f"over the same loop without them: **{checkpoint_cost:+.1f}%** ({checkpoint_verdict} the "
        f"{CHECKPOINT_LIMIT_PCT:.0f}% budget).",
        *(
            []
            if torch.cuda.is_available()
            else [
                "",
                "No GPU on this machine, so no CUDA figures yet: on one, run `make bench-loop "
                'BENCH_ARGS="--device cuda model=resnet18"` (AMP and channels_last stay off in '
                "this comparison; the method sweep runs with `device=cuda`).",
            ]
        ),
        END,
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str, start: str = START, end: str = END) -> None:
    """Replace the section between the `start` and `end` markers of `path` (or append it)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    atomic_write_text(path, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unlearn_cli.bench", description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per measurement")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--markdown", type=Path, help="update this file's loop-overhead section")
    parser.add_argument("overrides", nargs="*", help="config overrides (dataset=..., model=...)")
    opts = parser.parse_args(argv)
    with initialize_config_module("unlearn_cli.configs", version_base="1.3"):
        cfg = compose("config", overrides=[f"model.train.epochs={opts.epochs}", *opts.overrides])
    config = validate_config(cfg)
    device = resolve_device(opts.device)
    torch.set_num_threads(resolve_threads(config.run.threads))
    result = measure(config, device, opts.repeats)
    section = markdown(result, config, device, opts.repeats)
    print(section)
    if opts.markdown:
        write_section(opts.markdown, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
