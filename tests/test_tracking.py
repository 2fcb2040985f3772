"""Trackers against real stores (issue 38): MLflow's SQLite store and server, TensorBoard's event
files, the faults that must not cost a run, sync-tracking once each, and `unlearn runs`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import TINY

mlflow = pytest.importorskip("mlflow", reason="make test installs the tracking extras")
from mlflow.tracking import MlflowClient  # noqa: E402

RUN = [*TINY, "model.train.epochs=3", "method=finetune", "method.retain_epochs=1"]


def store_uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def runs_of(uri: str, experiment: str = "unlearn-synthetic") -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise AssertionError("mlflow server did not start") from None
            time.sleep(0.5)


@pytest.mark.slow
def test_every_tracker_reads_back_and_a_real_mlflow_server_finds_the_run(run_cli, tmp_path):
    """One run with every tracker, read back from a real SQLite store, TensorBoard's event
    files and the CSV; then the same folder synced to a real `mlflow server` (started first:
    it boots while the run trains) and found through its REST API."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", store_uri(tmp_path / "served"), "--workers", "1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # no background job runner (two more processes, seconds of CPU): sync-tracking uses none
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        check_a_run_in_every_tracker(run_cli, tmp_path)
        wait_for(base, server)
        run_cli("sync-tracking", "run", f"logger.mlflow.tracking_uri={base}", check=True)
        name = "unlearn-synthetic"
        url = f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}"
        with urllib.request.urlopen(url, timeout=10) as answer:
            experiment = json.load(answer)["experiment"]["experiment_id"]
        query = json.dumps({"experiment_ids": [experiment]}).encode()
        request = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", data=query,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as answer:
            (run,) = json.load(answer)["runs"]
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert tags["unlearn.run_dir"] == str((tmp_path / "run").resolve())
        assert run["info"]["status"] == "FINISHED"
        assert any(m["key"] == "unlearned/avg_gap" for m in run["data"]["metrics"])
    finally:
        server.terminate()
        server.wait(timeout=30)


def check_a_run_in_every_tracker(run_cli, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    uri = store_uri(tmp_path / "store")
    run_cli("run", *RUN, "logger=[mlflow,tensorboard,csv]", f"logger.mlflow.tracking_uri={uri}",
            "hydra.run.dir=run", check=True)  # fmt: skip
    data = json.loads((tmp_path / "run" / "metrics.json").read_text())
    (run,) = runs_of(uri)
    client = MlflowClient(uri)
    assert run.info.status == "FINISHED"
    assert run.data.params["method.name"] == "finetune"
    assert run.data.params["model.train.epochs"] == "3"
    assert run.data.tags["method"] == "finetune"
    assert "logger=[mlflow,tensorboard,csv]" in run.data.tags["overrides"]
    metrics = run.data.metrics
    assert metrics["unlearned/avg_gap"] == pytest.approx(data["models"]["unlearned"]["avg_gap"])
    assert metrics["retrain/test_acc"] == pytest.approx(data["models"]["retrain"]["test_acc"])
    assert metrics["unlearned/cost_ratio"] == pytest.approx(
        data["models"]["unlearned"]["cost_ratio"]
    )
    # The original's training curve, one point per epoch; the method's own steps.
    curve = client.get_metric_history(run.info.run_id, "curves/original/train/loss")
    assert [m.step for m in curve] == [1, 2, 3]
    assert client.get_metric_history(run.info.run_id, "curves/unlearned/finetune/loss")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "metrics.csv", "curves.csv", ".hydra"} <= artifacts
    assert "checkpoints" not in artifacts  # only with logger.mlflow.checkpoint=true

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    (avg_gap,) = events.Scalars("unlearned/avg_gap")
    assert avg_gap.value == pytest.approx(data["models"]["unlearned"]["avg_gap"], rel=1e-5)
    assert [e.step for e in events.Scalars("curves/retrain/train/acc")] == [1, 2, 3]
    csv = (tmp_path / "run" / "scalars.csv").read_text()
    assert csv.startswith("name,step,value") and "unlearned/avg_gap,0," in csv


@pytest.mark.slow
def test_a_multirun_is_grouped_under_its_sweep_and_synced_once(run_cli, tmp_path):
    uri = store_uri(tmp_path / "store")
    tracker = ["logger=mlflow", f"logger.mlflow.tracking_uri={uri}"]
    run_cli("run", "-m", *RUN, *tracker, "seed=0,1", "hydra.sweep.dir=sweep", check=True)
    for _ in range(2):  # sent as each job ended: a sync finds them there
        result = run_cli("sync-tracking", "sweep", f"logger.mlflow.tracking_uri={uri}", check=True)
        assert "already logged" in result.stdout and "logged as run" not in result.stdout
    runs = runs_of(uri)
    jobs = [r for r in runs if r.data.tags.get("unlearn.kind") != "sweep"]
    parents = [r for r in runs if r.data.tags.get("unlearn.kind") == "sweep"]
    assert len(jobs) == 2 and len(parents) == 1  # each run once, after two more sends
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parents[0].info.run_id}
    assert sorted(r.data.tags["seed"] for r in jobs) == ["0", "1"]
    assert sorted(r.data.tags["job"] for r in jobs) == ["0", "1"]


def folder_contents(folder: Path) -> dict[str, object]:
    """What a run folder holds, without what changes from run to run (times, paths, the log)."""
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    data = json.loads((folder / "metrics.json").read_text())
    timed = ("time_s", "speedup")  # wall-clock seconds differ from run to run
    models = {role: {k: v for k, v in row.items() if k not in timed}
              for role, row in data["models"].items()}  # fmt: skip
    return {
        "files": [f for f in files if not f.startswith(".hydra")],
        "status": data["status"],
        "models": models,
        "curves": (folder / "curves.csv").read_text(),
    }


def test_a_tracker_that_fails_costs_one_warning_and_nothing_else(run_cli, tmp_path):
    run_cli("run", *RUN, "hydra.run.dir=plain", check=True)
    (tmp_path / "blocked").write_text("")  # a file stands where the store's folder must go
    listener = socket.socket()  # accepts connections, never answers
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stores = {"unwritable": f"sqlite:///{tmp_path / 'blocked' / 'mlflow.db'}",
              "silent": f"http://127.0.0.1:{listener.getsockname()[1]}"}  # fmt: skip
    try:
        for name, uri in stores.items():
            tracker = ["logger=mlflow", f"logger.mlflow.tracking_uri={uri}",
                       "logger.mlflow.timeout=1"]  # fmt: skip
            result = run_cli("run", *RUN, *tracker, f"hydra.run.dir={name}", check=True)
            output = result.stdout + result.stderr
            assert output.count("logger=mlflow could not record") == 1, name
            # The same folder; its curves.csv too, though this run's original and retrain came
            # from the cache (their curves kept with the entries).
            assert folder_contents(tmp_path / name) == folder_contents(tmp_path / "plain"), name
            assert "cache hit: original" in output
    finally:
        listener.close()


def test_a_missing_tracker_package_is_one_line_before_any_training(run_cli, tmp_path, monkeypatch):
    monkeypatch.setattr("unlearn_cli.tracking.options.installed", lambda package: False)
    result = run_cli("run", *RUN, "logger=[csv,tensorboard]")
    assert result.returncode == 2
    assert "logger=tensorboard needs the tensorboard package" in result.stderr
    assert 'pip install -e ".[tensorboard]"' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "outputs" / "cache").exists()  # nothing trained, nothing cached


def write_run(folder: Path, method: str, status: str, avg_gap: float | None, seed: int = 0,
              started: str = "2026-12-01T10:00:00+00:00") -> None:  # fmt: skip
    folder.mkdir(parents=True)
    unlearned = {} if avg_gap is None else {"avg_gap": avg_gap, "cost_ratio": 10.0}
    data = {"status": status, "started_at": started,
            "config": {"dataset": "synthetic", "model": "cnn", "method": method,
                       "forget": "class1", "seed": seed},
            "models": {"unlearned": unlearned}}  # fmt: skip
    if status == "running":  # a process that is gone: shown as killed
        data["process"] = {"host": socket.gethostname(), "pid": 2**22 + 12345, "start": 1}
    (folder / "metrics.json").write_text(json.dumps(data))


def test_runs_lists_filters_and_sorts_every_run_folder(run_cli, tmp_path):
    root = tmp_path / "outputs"
    write_run(root / "runs" / "a", "influence", "completed", 3.0, started="2026-12-01T10:00:00")
    write_run(root / "runs" / "b", "influence", "failed", None, started="2026-12-02T10:00:00")
    write_run(root / "sweeps" / "s1" / "0_ssd", "ssd", "completed", 1.5, seed=1)
    write_run(root / "sweeps" / "s1" / "1_influence", "influence", "completed", 7.0, seed=2)
    write_run(root / "runs" / "gone", "scrub", "running", None)
    write_run(root / "cache" / "models" / "not-a-run", "x", "completed", 0.0)  # never searched
    (root / "audits" / "a1").mkdir(parents=True)
    (root / "audits" / "a1" / "audit.json").write_text(
        json.dumps({"forget": {"tag": "class1"}, "rows": [{"method": "influence"}]})
    )

    def table(*args: str) -> list[dict]:
        return json.loads(run_cli("runs", "--json", *args, check=True).stdout)

    everything = table()
    assert len(everything) == 6
    assert {r["status"] for r in everything} >= {"completed", "failed", "killed"}
    assert any(r["method"] == "audit: influence" for r in everything)
    picked = table("--where", "method=influence", "status=completed", "--sort", "avg_gap")
    assert [r["avg_gap"] for r in picked] == [3.0, 7.0]
    assert [r["seed"] for r in table("--where", "avg_gap<5", "--sort=-avg_gap")] == [0, 1]
    assert len(table("--where", "method!=influence")) == 3
    newest = table("--where", "method=influence", "--limit", "1", "--sort=-date")
    assert [r["status"] for r in newest] == ["failed"]
    csv = run_cli("runs", "--csv", "--where", "seed>=1", check=True).stdout.splitlines()
    assert csv[0].startswith("date,dataset,model,method,scenario,seed,status,avg_gap")
    assert len(csv) == 3
    printed = run_cli("runs", check=True).stdout
    assert "6 runs under outputs" in printed
    for bad, words in [(("--where", "colour=red"), "no column 'colour'"),
                       (("--where", "avg_gap<low"), "avg_gap is a number"),
                       (("--where", "method>x"), "compare it with = or !="),
                       (("--sort", "speed"), "no column 'speed'")]:  # fmt: skip
        result = run_cli("runs", *bad)
        assert result.returncode == 2 and words in result.stderr


def test_the_sync_command_refuses_other_options_and_empty_folders(run_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli("sync-tracking", "empty", "seed=3")
    assert result.returncode == 2 and "logger options only" in result.stderr
    result = run_cli("sync-tracking", "empty", "logger=csv")
    assert result.returncode == 2 and "holds no run folder" in result.stderr
    result = run_cli("sync-tracking", "missing")
    assert result.returncode == 2 and "is not a folder" in result.stderr


def test_a_streams_figures_go_to_the_trackers_by_request():
    from unlearn_cli.tracking.folder import scalars_of

    step = {"models": {"unlearned": {"avg_gap": 2.0, "UA": float("nan")}},
            "cumulative": {"cost_ratio": 4.0}, "method_metrics": {"diverged": False}}  # fmt: skip
    data = {"steps": [{**step, "step": 1}, {**step, "step": 2}],
            "models": {"unlearned": {"avg_gap": 2.0}}, "copies": {"seconds": 1.5}}  # fmt: skip
    scalars = {(s.name, s.step): s.value for s in scalars_of(data)}
    assert scalars[("unlearned/avg_gap", 1)] == scalars[("unlearned/avg_gap", 2)] == 2.0
    assert scalars[("cumulative/cost_ratio", 2)] == 4.0
    assert scalars[("method/diverged", 1)] == 0.0
    assert ("unlearned/UA", 1) not in scalars  # a NaN is no figure
    assert ("unlearned/avg_gap", 0) not in scalars  # a stream's figures are its steps'
    assert scalars[("copies/seconds", 0)] == 1.5
