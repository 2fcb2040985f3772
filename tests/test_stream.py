"""Streams of deletion requests: what each step's oracle trained on, ground truth per step, and
bad streams refused in one line before any training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY
from unlearn_cli.data import load_dataset
from unlearn_cli.methods import METHODS
from unlearn_cli.methods.finetune import FinetuneOptions
from unlearn_cli.stream.plan import plan_stream
from unlearn_cli.stream.run import run_stream
from unlearn_cli.validate import validate_config


def plan_of(make_cfg, *overrides):
    config = validate_config(make_cfg(*TINY, *overrides))
    data = load_dataset(config.dataset, config.run.cache_dir)
    stream = config.stream.options
    return plan_stream(data, stream.steps, config.run.seed, config.run.validation_fraction,
                       stream.pool)  # fmt: skip


def test_random_steps_are_disjoint_and_each_oracle_lacks_every_request_so_far(make_cfg):
    plan = plan_of(make_cfg, "stream=random4")
    sizes = [len(r.forget_idx) for r in plan.requests]
    assert len(set(sizes)) == 1 and sizes[0] > 0
    everything = np.concatenate([r.forget_idx for r in plan.requests])
    assert len(np.unique(everything)) == len(everything)  # disjoint
    assert not np.intersect1d(everything, plan.validation_idx).size
    for k in range(1, 5):
        step = plan.step_split(k)  # its forget set is request k alone; its oracle's retain set
        gone = np.concatenate([r.forget_idx for r in plan.requests[:k]])
        assert not np.intersect1d(step.retain_idx, gone).size
        assert len(step.retain_idx) + len(gone) == len(plan.trainable_idx)
        assert np.array_equal(step.forget_idx, plan.requests[k - 1].forget_idx)
        assert np.array_equal(np.sort(step.earlier_idx), np.sort(gone[: -len(step.forget_idx)]))
        assert np.array_equal(step.removed_idx, np.sort(gone))


def test_a_class_stream_leaves_earlier_classes_out_of_the_test_view(make_cfg):
    plan = plan_of(make_cfg, "stream=classes3")
    step = plan.step_split(3)
    assert step.forget_classes == (2,) and step.forgotten_before == (0, 1)
    assert set(step.test[1].tolist()) == {3}  # synthetic has 4 classes
    assert set(step.forget_test[1].tolist()) == {2}


def oracle_rows(monkeypatch) -> list[np.ndarray]:
    """The rows every retraining (each step's oracle) trains on, in order, as they happen."""
    import unlearn_cli.methods.retrain as retrain_module

    trained: list[np.ndarray] = []
    real = retrain_module.train_classifier

    def spy(*args, rows=None, **kwargs):
        trained.append(np.asarray(rows))
        return real(*args, rows=rows, **kwargs)

    monkeypatch.setattr(retrain_module, "train_classifier", spy)
    return trained


def test_each_oracle_trains_on_exactly_the_retain_set_of_its_step(make_cfg, tmp_path, monkeypatch):
    trained = oracle_rows(monkeypatch)
    cfg = make_cfg(*TINY, "stream=random4", "method=retrain")
    data = run_stream(validate_config(cfg), tmp_path / "run")
    plan = plan_of(make_cfg, "stream=random4")
    assert len(trained) == 4  # one oracle a step (the noise floor is off in TINY)
    for k, rows in enumerate(trained, 1):
        assert np.array_equal(np.sort(rows), plan.step_split(k).retain_idx)
    # method=retrain is the oracle at every step: no gap anywhere
    assert [s["models"]["unlearned"]["avg_gap"] for s in data["steps"]] == [0.0] * 4


def test_a_method_that_does_nothing_keeps_the_earlier_requests_as_the_original_did(
    make_cfg, tmp_path, monkeypatch
):
    def nothing(model, split, ctx, opts: FinetuneOptions):
        return model

    monkeypatch.setitem(METHODS._items, "finetune", nothing)
    cfg = make_cfg(*TINY, "stream=random4", "method=finetune")
    data = run_stream(validate_config(cfg), tmp_path / "run")
    steps = data["steps"]
    assert [s["step"] for s in steps] == [1, 2, 3, 4] and data["status"] == "completed"
    assert "UA_earlier" not in steps[0]["models"]["unlearned"]
    for step in steps[1:]:
        rows = step["models"]
        assert rows["unlearned"]["UA_earlier"] == rows["original"]["UA_earlier"]
        assert rows["unlearned"]["UA"] == rows["original"]["UA"]
    # metrics.json: one record a step, the last step's rows as the run's, the cost so far
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["models"] == written["steps"][-1]["models"]
    assert steps[-1]["cumulative"]["retrain_cost_units"] == sum(
        s["models"]["retrain"]["cost_units"] for s in steps
    )
    assert (tmp_path / "run" / "steps.csv").is_file()
    # unlearn report: one scenario a step, each against its own oracle
    from unlearn_cli.evaluation.report import per_seed_rows

    frame = per_seed_rows([tmp_path / "run" / "metrics.json"])
    assert sorted(set(frame["scenario"])) == [
        f"stream-random4, step {k}: random0.025" for k in (1, 2, 3, 4)
    ]
    # ... and one summary of the whole stream: avg_gap per step, drifts, the cost so far
    from unlearn_cli.evaluation.report import aggregate
    from unlearn_cli.evaluation.report.streams import number, stream_summaries

    ((title, summary),) = stream_summaries(aggregate(frame))
    assert title.startswith("synthetic / cnn") and title.endswith("/ stream-random4: step by step")
    assert list(summary.columns) == ["method", "avg_gap 1", "avg_gap 2", "avg_gap 3",
                                     "avg_gap 4", "gap last/first", "UA_earlier drift",
                                     "RA drift", "cum_cost_ratio"]  # fmt: skip
    line = summary.set_index("method").loc["finetune"]
    gaps = [s["models"]["unlearned"]["avg_gap"] for s in steps]
    assert line["gap last/first"] == (f"{gaps[-1] / gaps[0]:.2f}" if gaps[0] else "-")
    from unlearn_cli.evaluation.report import write_plots, write_report

    written = write_plots(aggregate(frame), tmp_path / "plots")
    assert (tmp_path / "plots" / "stream-random4.png") in written
    # BENCHMARKS.md (--bench): the stream's summary and plot, not each step's full table
    markdown = tmp_path / "docs" / "BENCH.md"
    write_report(aggregate(frame), None, markdown, "t", plots=tuple(written), step_cells=False)
    text = markdown.read_text()
    assert "stream-random4: step by step" in text and "stream-random4, step 1:" not in text
    assert "![stream-random4](../plots/stream-random4.png)" in text
    assert line["cum_cost_ratio"] == number(steps[-1]["cumulative"]["cost_ratio"])  # no passes: -
    assert line["avg_gap 4"] == f"{steps[-1]['models']['unlearned']['avg_gap']:.2f}"


def test_a_stream_run_is_named_after_its_stream():
    from unlearn_cli.data.split import forget_tag

    assert forget_tag(None, None, "cat", stream="random4") == "stream-random4"
    assert forget_tag(None, None, "cat", stream="none", stream_file="x/mine.csv") == "stream-mine"
    assert forget_tag(None, None, "cat", stream="none", stream_steps=[{"learn": 0.1}]) == (
        "stream-steps"
    )
    assert forget_tag(None, None, "cat", stream="none", stream_steps=[]) == "cat"


def test_steps_from_a_yaml_or_csv_file(make_cfg, tmp_path):
    yaml_file = tmp_path / "steps.yaml"
    yaml_file.write_text("- forget_class: class0\n- forget_fraction: 0.05\n  forget_within: 1\n")
    csv_file = tmp_path / "steps.csv"
    csv_file.write_text("forget_class,forget_fraction,forget_within\nclass0,,\n,0.05,1\n")
    for path in (yaml_file, csv_file):
        plan = plan_of(make_cfg, f"stream.file={path}")
        assert [r.tag for r in plan.requests] == ["class0", "random0.05-of-class1"]
        assert plan.requests[0].classes == (0,)


BAD = [
    (["stream.steps=[{}]"], "stream.steps step 1 is empty|stream.*empty"),
    (["stream=classes3", "stream.steps=[{forget_class: cow}]"], "unknown class 'cow'"),
    (["stream.steps=[{forget_class: class1},{forget_class: class1}]"],
     "step 2: class class1 was already forgotten by step 1"),
    (["stream.steps=[{forget_fraction: 0.6},{forget_fraction: 0.6}]"],
     "step 2: forget_fraction=0.6 asks for"),
    (["stream.steps=[{forget_class: [class0,class1]},{forget_class: [class2,class3]}]"],
     "together forget the whole training set"),
    (["stream=random4", "forget_class=class1"], "stream=random4 gives its own requests"),
    (["stream.file=nowhere.yaml"], "stream.file: no such file"),
    (["stream=random4", "evaluation=lira"], "evaluation=lira is not run on streams"),
    (["stream.steps=[{forget_fraction: 2}]"], "stream.steps.forget_fraction must be"),
    (["stream.steps=[{forget_class: class0, forget_fraction: 0.1}]"], "give only one of"),
]  # fmt: skip


@pytest.mark.parametrize("overrides,message", BAD)
def test_bad_streams_are_refused_before_any_training(run_cli, tmp_path, overrides, message):
    result = run_cli("run", *TINY, *overrides)
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("unlearn: error:") and __import__("re").search(message, line), line
    assert not (Path(tmp_path) / "cache" / "models").exists()  # nothing was trained


def test_a_repeated_id_is_refused(make_cfg, tmp_path):
    ids = tmp_path / "ids.txt"
    plan = plan_of(make_cfg, "stream=random4")
    first = plan.data.ids()[int(plan.requests[0].forget_idx[0])]
    ids.write_text(f"{first}\n")
    from unlearn_cli.errors import UserError

    with pytest.raises(UserError, match="step 2: 1 sample.*already forgotten by step 1"):
        plan_of(make_cfg, f"stream.steps=[{{forget_indices_file: {ids}}},"
                          f"{{forget_indices_file: {ids}}}]")  # fmt: skip


def test_two_runs_chained_through_a_checkpoint_match_a_two_step_stream(make_cfg, tmp_path):
    """The second run on the first run's unlearned model knows what it forgot: the same split
    and the same oracle as step 2 of the stream of both requests."""
    from unlearn_cli.run import run_experiment

    plan = plan_of(make_cfg, "stream=random4")
    files = []
    for k in (0, 1):
        path = tmp_path / f"request{k + 1}.txt"
        path.write_text(
            "".join(f"{plan.data.ids()[int(i)]}\n" for i in plan.requests[k].forget_idx)
        )
        files.append(path)
    first = run_experiment(validate_config(make_cfg(*TINY, "method=finetune",
                                                    f"forget_indices_file={files[0]}")),
                           tmp_path / "first")  # fmt: skip
    checkpoint = tmp_path / "first" / "checkpoints" / "unlearned.safetensors"
    second = run_experiment(validate_config(make_cfg(
        *TINY, "method=finetune", f"forget_indices_file={files[1]}",
        f"original.checkpoint={checkpoint}")), tmp_path / "second")  # fmt: skip
    stream = run_stream(validate_config(make_cfg(
        *TINY, "method=finetune",
        f"stream.steps=[{{forget_indices_file: {files[0]}}},{{forget_indices_file: {files[1]}}}]"
    )), tmp_path / "stream")  # fmt: skip
    step = stream["steps"][1]
    for key in ("forget_fingerprint", "num_forget", "num_retain", "num_validation", "num_test"):
        assert second["split"][key] == step["request"][key], key
    assert first["models"]["retrain"] == stream["steps"][0]["models"]["retrain"]
    for key in ("UA", "RA", "TA", "MIA", "UA_earlier", "cost_units"):
        assert second["models"]["retrain"][key] == step["models"]["retrain"][key], key
    # what the second run's original (the first run's model) forgot is measured, not re-learnt
    assert "UA_earlier" in second["models"]["unlearned"]


def test_an_overlapping_second_request_is_forgotten_once(make_cfg, tmp_path, caplog):
    from unlearn_cli.run import run_experiment

    plan = plan_of(make_cfg, "stream=random4")
    ids = [plan.data.ids()[int(i)] for i in plan.requests[0].forget_idx]
    first_file, second_file = tmp_path / "a.txt", tmp_path / "b.txt"
    first_file.write_text("".join(f"{i}\n" for i in ids))
    second_file.write_text("".join(f"{i}\n" for i in ids[:2]))  # two ids forgotten already
    extra = plan.data.ids()[int(plan.requests[1].forget_idx[0])]
    second_file.write_text(second_file.read_text() + f"{extra}\n")
    run_experiment(validate_config(make_cfg(*TINY, "method=finetune",
                                            f"forget_indices_file={first_file}")),
                   tmp_path / "first")  # fmt: skip
    checkpoint = tmp_path / "first" / "checkpoints" / "unlearned.safetensors"
    second = run_experiment(validate_config(make_cfg(
        *TINY, "method=finetune", f"forget_indices_file={second_file}",
        f"original.checkpoint={checkpoint}")), tmp_path / "second")  # fmt: skip
    assert second["split"]["num_forget"] == 1
    assert "2 sample(s) of this request were already forgotten" in caplog.text


def figures(records: list[dict]) -> list[dict]:
    """The per-step records without the wall times, which no two runs share."""
    timed = ("time_s", "speedup")
    return [{role: {k: v for k, v in row.items() if k not in timed}
             for role, row in rec["models"].items()} | {"cumulative": rec["cumulative"]}
            for rec in records]  # fmt: skip


@pytest.mark.parametrize("kill_at", ["between steps", "mid-step"])
def test_a_killed_stream_resumes_after_its_last_finished_step(
    make_cfg, tmp_path, monkeypatch, kill_at
):
    import unlearn_cli.stream.run as stream_run

    three = "stream.steps=[{forget_fraction: 0.05},{forget_fraction: 0.05},{forget_fraction: 0.05}]"
    cfg = make_cfg(*TINY, three, "method=finetune")
    whole = run_stream(validate_config(cfg), tmp_path / "whole")
    calls = {"n": 0}
    if kill_at == "between steps":
        real_save = stream_run.StepStore.save

        def save_then_die(self, k, model, saved):
            real_save(self, k, model, saved)
            if k == 2:
                raise KeyboardInterrupt

        monkeypatch.setattr(stream_run.StepStore, "save", save_then_die)
    else:
        real_unlearn = stream_run.unlearn_model

        def die_in_step_3(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
            return real_unlearn(*args, **kwargs)

        monkeypatch.setattr(stream_run, "unlearn_model", die_in_step_3)
    with pytest.raises(KeyboardInterrupt):
        run_stream(validate_config(cfg), tmp_path / "killed")
    killed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert killed["status"] == "interrupted" and len(killed["steps"]) == 2
    monkeypatch.undo()
    ran: list[int] = []
    real = stream_run.unlearn_model
    monkeypatch.setattr(stream_run, "unlearn_model",
                        lambda *a, **kw: ran.append(1) or real(*a, **kw))  # fmt: skip
    again = run_stream(validate_config(cfg), tmp_path / "again")
    assert len(ran) == 1  # step 3 only
    written = {
        name: json.loads((tmp_path / name / "metrics.json").read_text())["steps"]
        for name in ("whole", "again")
    }  # NaN written as null on both sides
    assert figures(written["again"]) == figures(written["whole"])
    assert again["status"] == whole["status"] == "completed"


def test_the_step_plot_is_written(tmp_path):
    from unlearn_cli.evaluation.plots import stream_steps_plot

    records = [{"step": k, "models": {"original": {"avg_gap": 5.0 - k},
                                      "unlearned": {"avg_gap": 1.0, "UA_earlier": 90.0 + k},
                                      "retrain": {"avg_gap": 0.0, "UA_earlier": 95.0}}}
               for k in (1, 2, 3)]  # fmt: skip
    path = stream_steps_plot(records, tmp_path / "plots" / "s.png", {})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


LEARNING = [
    "stream.pool=0.2",
    "stream.steps=[{forget_fraction: 0.05},{learn: 0.1},{forget_fraction: 0.05}]",
]


def test_learn_steps_take_in_pool_data_that_later_oracles_see(make_cfg, tmp_path, monkeypatch):
    """The original never sees the pool; after a learn step the oracle trains on the learned
    rows too, and never on a forgotten or still unseen one."""
    import unlearn_cli.stream.run as stream_run

    plan = plan_of(make_cfg, *LEARNING)
    learned = plan.requests[1].learn_idx
    assert len(learned) and set(learned) <= set(plan.pool_idx)
    assert not np.intersect1d(plan.original_split().trainable_idx, plan.pool_idx).size
    trained = oracle_rows(monkeypatch)
    learning_rows: list[np.ndarray] = []
    real_learn = stream_run.train_classifier
    monkeypatch.setattr(stream_run, "train_classifier",
                        lambda *a, rows=None, **kw: learning_rows.append(rows) or
                        real_learn(*a, rows=rows, **kw))  # fmt: skip
    data = run_stream(validate_config(make_cfg(*TINY, *LEARNING, "method=retrain")),
                      tmp_path / "run")  # fmt: skip
    assert [np.array_equal(r, learned) for r in learning_rows] == [True]
    first, last = trained  # one oracle a request
    gone = np.concatenate([r.forget_idx for r in plan.requests])
    unseen = np.setdiff1d(plan.pool_idx, learned)
    assert not np.intersect1d(first, plan.pool_idx).size
    assert set(np.setdiff1d(learned, gone)) <= set(last)  # learned, and not forgotten since
    assert not np.intersect1d(last, np.union1d(gone, unseen)).size
    assert [s["request"].get("learn", False) for s in data["steps"]] == [False, True, False]
    assert data["steps"][2]["models"]["unlearned"]["avg_gap"] == 0.0


BAD_LEARNING = [
    (["stream.steps=[{learn: 0.1},{forget_fraction: 0.1}]"], "no data is held out to learn"),
    (["stream.pool=0.1", "stream.steps=[{forget_fraction: 0.1},{learn: 0.1}]"],
     "the last step is a learn step"),
    (["stream.pool=0.05", "stream.steps=[{learn: 0.1},{forget_fraction: 0.1}]"],
     "learn=0.1 asks for"),
    (["stream.pool=0.1", "stream.steps=[{learn: 0.05},{forget_fraction: 0.1}]",
      "original.checkpoint=model.safetensors"], "original.checkpoint was trained elsewhere"),
]  # fmt: skip


@pytest.mark.parametrize("overrides,message", BAD_LEARNING)
def test_bad_learn_steps_are_refused(run_cli, tmp_path, overrides, message):
    (tmp_path / "model.safetensors").write_bytes(b"")  # refused before it is read
    result = run_cli("run", *TINY, *overrides)
    assert result.returncode == 2 and message in result.stderr.strip().splitlines()[-1]


def test_sisa_keeps_its_shards_across_requests_and_learned_data(make_cfg, tmp_path, monkeypatch):
    """SISA in a stream: one set-up, then each request retrains only the slices that held it and
    a learn step the slices that hold the new rows. Every slice's last training (what the final
    ensemble is made of) never saw a forgotten or unseen row, and did see its learned rows."""
    import unlearn_cli.methods.sisa as sisa_module

    trainings: list[tuple[str, np.ndarray]] = []
    real = sisa_module.train_classifier

    def spy(*args, rows=None, description="", **kwargs):
        trainings.append((description, np.asarray(rows)))
        return real(*args, rows=rows, description=description, **kwargs)

    monkeypatch.setattr(sisa_module, "train_classifier", spy)
    sisa = ["method=sisa", "method.shards=2", "method.slices=2", "method.epochs_per_slice=2"]
    data = run_stream(validate_config(make_cfg(*TINY, *LEARNING, *sisa)), tmp_path / "run")
    plan = plan_of(make_cfg, *LEARNING)
    metrics = [s["method_metrics"] for s in data["steps"]]
    assert metrics[0]["setup_seconds"] > 0 and metrics[2]["setup_seconds"] == 0.0
    assert metrics[2]["retrained_shards"] <= 2
    setup = 2 * 2  # 2 shards x 2 slices, trained once
    forgets = metrics[0]["retrained_slices"] + metrics[2]["retrained_slices"]
    assert setup + forgets <= len(trainings) <= 2 * setup + forgets  # the learn step: <= 4
    last: dict[str, np.ndarray] = {}
    for description, rows in trainings:
        last[description] = rows
    gone = np.concatenate([r.forget_idx for r in plan.requests])
    learned = plan.requests[1].learn_idx
    unseen = np.setdiff1d(plan.pool_idx, learned)
    final = np.concatenate(list(last.values()))
    assert not np.intersect1d(final, np.union1d(gone, unseen)).size
    assert not np.intersect1d(final, plan.validation_idx).size
    assert set(np.setdiff1d(learned, gone)) <= set(final)
