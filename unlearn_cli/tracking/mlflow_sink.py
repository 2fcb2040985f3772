"""A run folder sent to an MLflow tracking store (a local SQLite file or a server).

One MLflow experiment per dataset (`unlearn-<dataset>`, or `logger.mlflow.experiment`); the jobs
of a sweep are child runs of one parent run named after the sweep folder, so the UI shows a
sweep's methods side by side. A run is sent once: its `unlearn.key` tag (its folder and start
time) is looked up first, and a run that an earlier send left half-written (no
`unlearn.complete` tag) is replaced.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from unlearn_cli.tracking.folder import RunFolder
from unlearn_cli.tracking.options import MlflowOptions

log = logging.getLogger(__name__)

BATCH_METRICS, BATCH_PARAMS = 1000, 100  # MLflow's limits per log_batch call


@contextmanager
def quiet_requests(timeout: float):
    """No retries and a short timeout for MLflow's HTTP requests (its default retries a server
    that does not answer for minutes), and its libraries' INFO lines out of our log."""
    names = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, round(timeout)))}  # fmt: skip
    saved = {k: os.environ.get(k) for k in names}
    loggers = [logging.getLogger(n) for n in ("mlflow", "alembic", "urllib3")]
    levels = [lg.level for lg in loggers]
    os.environ.update(names)
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def local_store(uri: str) -> Path | None:
    """The file of a sqlite:/// URI (made sure its folder exists), else None."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    path = Path(uri[len("sqlite:///") :])
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def send_to_mlflow(run: RunFolder, opts: MlflowOptions) -> str:
    """Log `run` to the store; what happened, in a few words."""
    # Imported first: importing mlflow sets its loggers' levels, which the quiet context lowers.
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    with quiet_requests(opts.timeout):
        store = local_store(opts.tracking_uri)
        client = MlflowClient(tracking_uri=opts.tracking_uri)
        experiment = experiment_id(client, run, opts, store)
        found = client.search_runs([experiment], f"tags.`unlearn.key` = '{run.key}'")
        if any(r.data.tags.get("unlearn.complete") == "1" for r in found):
            return "already logged"
        for stale in found:  # an earlier send died half-way: send it whole again
            client.delete_run(stale.info.run_id)
        tags = dict(run.tags)
        if run.sweep is not None:
            tags["mlflow.parentRunId"] = sweep_parent(client, experiment, run)
        created = client.create_run(experiment, start_time=run.start_ms(), tags=tags,
                                    run_name=run.name)  # fmt: skip
        run_id = created.info.run_id
        stamp = run.end_ms() or int(time.time() * 1000)
        params = [Param(k, v) for k, v in run.params.items()]
        for i in range(0, len(params), BATCH_PARAMS):
            client.log_batch(run_id, params=params[i : i + BATCH_PARAMS])
        metrics = [Metric(s.name, s.value, stamp, s.step) for s in run.scalars]
        for i in range(0, len(metrics), BATCH_METRICS):
            client.log_batch(run_id, metrics=metrics[i : i + BATCH_METRICS])
        for path in run.files(checkpoint=opts.checkpoint):
            if path.is_dir():
                client.log_artifacts(run_id, str(path), artifact_path=path.name)
            else:
                client.log_artifact(run_id, str(path))
        client.log_batch(run_id, tags=[RunTag("unlearn.complete", "1")])
        client.set_terminated(run_id, run.tracker_status, end_time=run.end_ms())
    return f"logged as run {run_id}"


def experiment_id(client, run: RunFolder, opts: MlflowOptions, store: Path | None) -> str:
    name = opts.experiment
    if name == "auto":
        name = f"unlearn-{run.data.get('config', {}).get('dataset', 'runs')}"
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    # Beside a local store, its artifacts go next to it (not into the working folder).
    location = (store.parent / "mlartifacts").resolve().as_uri() if store is not None else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # another job of the sweep created it meanwhile
        existing = client.get_experiment_by_name(name)
        if existing is None:
            raise
        return existing.experiment_id


def sweep_parent(client, experiment: str, run: RunFolder) -> str:
    """The sweep's parent run (created by its first job sent)."""
    key = hashlib.sha256(str(run.sweep).encode()).hexdigest()[:20]
    found = client.search_runs([experiment], f"tags.`unlearn.sweep_key` = '{key}'")
    if found:
        return found[0].info.run_id
    parent = client.create_run(experiment, start_time=run.start_ms(), run_name=run.sweep.name,
                               tags={"unlearn.sweep_key": key, "sweep": str(run.sweep),
                                     "unlearn.kind": "sweep"})  # fmt: skip
    client.set_terminated(parent.info.run_id, "FINISHED")
    return parent.info.run_id
