"""Send a finished run folder to the trackers `logger` names; never at the cost of the run.

A tracker that fails (a store that cannot be written, a server that does not answer, a full
disk) costs one warning line: the run folder is complete without it, and `unlearn sync-tracking`
sends it later. TensorBoard's event files and the scalars CSV go into the run folder itself.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from unlearn_cli.atomic import atomic_write_text
from unlearn_cli.errors import UserError, first_line
from unlearn_cli.tracking.folder import RunFolder, read_run_folder
from unlearn_cli.tracking.options import CsvOptions, LoggerOptions, TensorboardOptions

log = logging.getLogger(__name__)


def send_run(path: Path, opts: LoggerOptions) -> dict[str, str]:
    """Send the run folder at `path` to every tracker on; tracker -> what happened."""
    outcome: dict[str, str] = {}
    if not opts.enabled:
        return outcome
    try:
        run = read_run_folder(path)
    except Exception as exc:  # noqa: BLE001 - tracking never costs the run
        log.warning("tracking: cannot read %s (%s); nothing sent", path, first_line(exc))
        return {name: "failed" for name in opts.enabled}
    if run.status == "running":
        return {name: "still running: not sent" for name in opts.enabled}
    for name in opts.enabled:
        try:
            outcome[name] = SINKS[name](run, getattr(opts, name))
            log.info("logger=%s: %s %s", name, run.name, outcome[name])
        except Exception as exc:  # noqa: BLE001 - tracking never costs the run
            outcome[name] = f"failed: {first_line(exc)}"
            log.warning("logger=%s could not record %s (%s); the run folder is complete, send "
                        "it later with: unlearn sync-tracking %s", name, run.name,
                        first_line(exc), run.path)  # fmt: skip
    return outcome


def send_to_mlflow(run: RunFolder, opts) -> str:
    from unlearn_cli.tracking.mlflow_sink import send_to_mlflow as send

    return send(run, opts)


def send_to_tensorboard(run: RunFolder, opts: TensorboardOptions) -> str:
    """Event files under the run folder (`tensorboard --logdir outputs/` finds every run)."""
    folder = run.path / opts.dir
    if folder.is_dir() and any(folder.glob("events.out.tfevents.*")):
        return "already logged"
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    try:
        for scalar in run.scalars:
            writer.add_scalar(scalar.name, scalar.value, scalar.step)
        text = "\n".join(f"    {k}: {v}" for k, v in run.tags.items())  # Markdown code block
        writer.add_text("run", text, 0)
    finally:
        writer.close()
    return f"written to {folder}"


def send_to_csv(run: RunFolder, opts: CsvOptions) -> str:
    """Every scalar as name,step,value in the run folder."""
    target = run.path / opts.file
    if target.is_file():
        return "already logged"
    rows = [{"name": s.name, "step": s.step, "value": s.value} for s in run.scalars]
    table = pd.DataFrame(rows, columns=["name", "step", "value"])
    atomic_write_text(target, table.to_csv(index=False), opts.file)
    return f"written to {target}"


SINKS = {"mlflow": send_to_mlflow, "tensorboard": send_to_tensorboard, "csv": send_to_csv}


def sync(paths: list[Path], opts: LoggerOptions) -> pd.DataFrame:
    """Send every run folder under `paths` that has ended (`unlearn sync-tracking`): a run a
    tracker already has is not sent twice. One row per run and tracker."""
    from unlearn_cli.tracking.folder import run_folders

    rows = []
    for path in paths:
        folders = run_folders(path)
        if not folders:
            raise UserError(f"{path} holds no run folder (no metrics.json under it)")
        for folder in folders:
            for tracker, outcome in send_run(folder, opts).items():
                rows.append({"run": str(folder), "tracker": tracker, "outcome": outcome})
    return pd.DataFrame(rows, columns=["run", "tracker", "outcome"])
