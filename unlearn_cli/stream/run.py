"""A stream of deletion requests, one step after another (`unlearn run stream=random4`).

Step k unlearns request k from the model step k-1 left (the original at step 1). Its oracle is a
model retrained from scratch without requests 1..k (cached: the retraining a single run
forgetting their union, or a run on a checkpoint that forgot requests 1..k-1, would make; shared
by every method of a sweep); "do nothing" is the
original, judged on step k's split. Each step is evaluated like a single run (every figure of
the metric catalogue, against that oracle), plus UA on the earlier requests; the record keeps
the per-step rows and the cost so far against k retrainings.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from unlearn_cli.cache import cache_key
from unlearn_cli.console import out_console
from unlearn_cli.copies.request import CopyCheck
from unlearn_cli.cost import Cost
from unlearn_cli.data import ForgetSplit, load_dataset
from unlearn_cli.data.spec import forget_tag_of
from unlearn_cli.device import resolve_device, resolve_threads
from unlearn_cli.errors import UserError
from unlearn_cli.evaluation.evaluate import evaluate_models
from unlearn_cli.evaluation.plots import stream_steps_plot
from unlearn_cli.evaluation.tables import rich_table, write_csv
from unlearn_cli.inference import accuracy, predict_logits
from unlearn_cli.methods import log_method_defaults, memorised_options, note_memorised_original
from unlearn_cli.methods.sisa import SisaTrainer
from unlearn_cli.models.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from unlearn_cli.record import RunRecord
from unlearn_cli.registry import Choice
from unlearn_cli.run import check_before_training, copy_check, role_labels, write_outputs
from unlearn_cli.run_models import Workshop, the_original, unlearn_model
from unlearn_cli.stream.plan import StreamPlan, plan_stream
from unlearn_cli.training import train_classifier
from unlearn_cli.unlearning import Unlearning, seed_everything
from unlearn_cli.validate import RunConfig

log = logging.getLogger(__name__)

# The per-step table's columns: the step's figures of the unlearned model, then the cost so far.
STEP_COLUMNS = ("UA", "UA_earlier", "RA", "TA", "MIA", "avg_gap", "cost_ratio")


def run_stream(config: RunConfig, run_dir: Path | str) -> dict:
    """Run the stream of `config` and write its outputs into `run_dir`; return metrics.json's
    data (`steps`: one record a step; `models`: the last step's rows)."""
    run_dir, run = Path(run_dir), config.run
    device = resolve_device(run.device)
    torch.set_num_threads(resolve_threads(run.threads))
    seed_everything(run.seed)
    data = load_dataset(config.dataset, run.cache_dir)
    stream = config.stream.options
    plan = plan_stream(data, stream.steps, run.seed, run.validation_fraction, stream.pool)
    given = check_before_training(config, data)
    if given is not None and given.history and given.history.get("ids"):
        raise UserError("original.checkpoint already forgot earlier requests; a stream on it "
                        "is not supported yet: put those requests first in the stream, or "
                        "run its requests one by one through original.checkpoint")  # fmt: skip
    copies = copy_checks(config, plan, run_dir)
    for check in copies.values():  # request.copies=refuse stops here when a hash finds copies
        check.before_model()
    record = RunRecord(run_dir, config, forget_tag_of(config))
    record.update(stream=describe_plan(plan), device=str(device))
    log.info("%s on %s/%s: a stream of %d requests (%s), device %s", config.method.name,
             data.name, config.model.name, len(plan.requests),
             ", ".join(r.tag for r in plan.requests), device)  # fmt: skip
    with record.failures_recorded():
        steps = run_steps(config, plan, device, given, record, copies)
        last = steps[-1]  # a request: a stream ends with one (StreamOptions.check)
        write_outputs(run_dir, last["model"], last["rows"], config, last["split"])
        records = [step_record(s) for s in steps]
        table = steps_frame(records)
        write_csv(table, run_dir / "steps.csv")
        if config.evaluation.options.plots:
            stream_steps_plot(records, run_dir / "plots" / "stream_steps.png",
                              role_labels(config.method.name))  # fmt: skip
        out_console.print(
            rich_table(
                table,
                f"{config.method.name}: the stream step by step "
                "(unlearned model; cost_ratio so far vs k retrainings)",
            )
        )
        status = "diverged" if any(s["method_metrics"].get("diverged") for s in records) \
            else "completed"  # fmt: skip
        record.finish(status, models=last["rows"], steps=records,
                      method_metrics=records[-1]["method_metrics"])  # fmt: skip
    return record.data


class StepStore:
    """The finished steps of a stream (model, figures, costs), kept in the model cache's staging
    area under a key of everything that shapes them: a killed stream run again resumes after its
    last finished step. Each step is written atomically; the folder goes when the stream ends."""

    def __init__(self, workshop: Workshop, plan: StreamPlan, given) -> None:
        config = workshop.config
        key = {**workshop.base_key, "method": config.method.plain(),
               "evaluation": config.evaluation.plain(), "original": given and given.sha256,
               "learn_epochs": config.stream.options.learn_epochs,
               "steps": [plan.state_key(k) for k in range(1, len(plan.requests) + 1)]}  # fmt: skip
        self.folder = workshop.cache.staging_dir(f"stream-{config.method.name}-{cache_key(key)}")

    def path(self, k: int) -> Path:
        return self.folder / f"step-{k}.safetensors"

    def save(self, k: int, model: nn.Module, saved: dict) -> None:
        if getattr(model, "members", None):  # an ensemble (sisa): its steps are run again
            return
        save_checkpoint(model, self.path(k), {"step": saved}, what=f"stream step {k}")

    def load(self, k: int, model: nn.Module) -> dict | None:
        """Step k's saved figures, its model loaded into `model`; None when it is not there."""
        path = self.path(k)
        if not path.is_file() or not path.with_suffix(".json").is_file():
            return None
        meta = read_metadata(path)
        load_checkpoint(model, path, sha256=meta["sha256"])
        return meta["step"]

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def copy_checks(config: RunConfig, plan: StreamPlan, run_dir: Path) -> dict[int, CopyCheck]:
    """The copy scan of each forget request of the stream (request.copies=report|refuse), by
    step; each step's pairs go to copies/step-<k>/copies.csv. A request is scanned against the
    retain set of its own step (what was learnt by then, less what was forgotten before)."""
    checks = {}
    for k in range(1, len(plan.requests) + 1):
        if plan.requests[k - 1].is_learn:
            continue
        folder = run_dir / "copies" / f"step-{k}"
        check = copy_check(config, plan.step_split(k), folder)
        if check is None:
            return {}
        folder.mkdir(parents=True, exist_ok=True)
        check.csv_name = f"copies/step-{k}/{check.csv_name}"
        checks[k] = check
    return checks


def scan_with_original(copies: dict[int, CopyCheck], original: nn.Module, device: torch.device,
                       record: RunRecord, plots: bool) -> None:  # fmt: skip
    """The feature scans and hidden members of every request (before any unlearning), then
    metrics.json's `copies` by step and the count each step leaves in its retain set."""
    for k, check in copies.items():
        check.with_original(original, device)  # refuse stops here; extend is not offered
        if plots:
            check.write_plot(check.run_dir)
        if check.caption():
            log.info("step %d: %s", k, check.caption())
    if copies:
        record.update(copies={"steps": {str(k): c.summary() for k, c in copies.items()},
                              "seconds": sum(c.seconds for c in copies.values())})  # fmt: skip


def run_steps(
    config: RunConfig,
    plan: StreamPlan,
    device: torch.device,
    given,
    record: RunRecord,
    copies: dict[int, CopyCheck] | None = None,
) -> list[dict]:
    """Every step in order; each step's record is written as soon as it is done."""
    evaluation = config.evaluation.options
    start = Workshop(config, plan.original_split(), device)
    original, _ = the_original(start, given)
    original = original.to(device)
    scan_with_original(copies or {}, original, device, record, evaluation.plots)
    memorises = original_memorises(config, plan, original, device)
    store = StepStore(start, plan, given)
    model: nn.Module = original
    spent = {"method": Cost(), "retrain": Cost()}
    done_steps: list[dict] = []
    for k in range(1, len(plan.requests) + 1):
        request = plan.requests[k - 1]
        split = None if request.is_learn else plan.step_split(k)
        method = None if split is None else step_method(config.method, split.targets, memorises)
        candidate = start.fresh().to(device)
        saved = store.load(k, candidate)
        if saved is not None:  # a killed run of this stream finished it
            log.info("step %d of %d: done by an earlier run of this stream (%s)", k,
                     len(plan.requests), store.folder)  # fmt: skip
            model = candidate
            spent = {role: Cost(**saved["spent"][role]) for role in spent}
            done_steps.append({"step": k, "tag": request.tag, "split": split,
                               "rows": with_nan(saved["rows"]), "model": model,
                               "method_metrics": saved["method_metrics"], "spent": dict(spent),
                               "method": method, "learned": saved.get("learned")})  # fmt: skip
            continue
        if split is None:  # new data arrives: the model trains on it
            model, learned = learn_step(config, plan, k, model, device)
            done_steps.append({"step": k, "tag": request.tag, "split": None, "rows": {},
                               "model": model, "method_metrics": {}, "spent": dict(spent),
                               "method": None, "learned": learned})  # fmt: skip
            record.update(steps=[step_record(s) for s in done_steps])
            store.save(
                k,
                model,
                {
                    "rows": {},
                    "method_metrics": {},
                    "learned": learned,
                    "spent": {r: cost_fields(c) for r, c in spent.items()},
                },
            )
            continue
        log.info("step %d of %d: forget %s (%d samples), retain %d", k, len(plan.requests),
                 split.tag, len(split.forget_idx), len(split.retain_idx))  # fmt: skip
        oracles = Workshop(config, split, device)
        oracle = oracles.retrained(config.run.seed, original) \
            if evaluation.reference == "retrain" else None  # fmt: skip
        if config.method.name == "retrain" and oracle is not None:
            done, metrics = Unlearning(oracle.model, oracle.train_seconds, oracle.cost), {}
        else:
            stepped = dataclasses.replace(config, method=method)
            before = {"original": given and given.sha256, "stream_before":
                      plan.state_key(k - 1) if k > 1 else None}  # fmt: skip
            done, ctx = unlearn_model(Workshop(stepped, split, device), model, split,
                                      method.options, before)  # fmt: skip
            metrics = ctx.metrics
        models = {"original": original, "unlearned": done.model.to(device)}
        seconds: dict = {"original": None, "unlearned": done.seconds}
        counts: dict = {"original": None, "unlearned": done.cost}
        spent["method"] = spent["method"].plus(done.cost)
        if oracle is not None:
            models["retrain"] = oracle.model.to(device)
            seconds["retrain"], counts["retrain"] = oracle.train_seconds, oracle.cost
            spent["retrain"] = spent["retrain"].plus(oracle.cost)
            if evaluation.noise_floor:
                floor = oracles.retrained(config.run.seed + 1, original).model.to(device)
                models["retrain_other_seed"] = floor
                seconds["retrain_other_seed"], counts["retrain_other_seed"] = None, None
        order = ("original", "retrain", "unlearned", "retrain_other_seed")
        models = {r: models[r] for r in order if r in models}
        rows, _, _ = evaluate_models(models, seconds, split, device, evaluation, config.run.seed,
                                     counts)  # fmt: skip
        step = {"step": k, "tag": request.tag, "split": split, "rows": rows,
                "model": done.model, "method_metrics": metrics, "spent": dict(spent),
                "method": method, "learned": None}  # fmt: skip
        done_steps.append(step)
        record.update(steps=[step_record(s) for s in done_steps])
        store.save(
            k,
            done.model,
            {
                "rows": rows,
                "method_metrics": metrics,
                "spent": {r: cost_fields(c) for r, c in spent.items()},
            },
        )
        log_step(step)
        model = done.model
    store.clear()
    return done_steps


def cost_fields(cost: Cost) -> dict:
    return {"grad_samples": cost.grad_samples, "forward_samples": cost.forward_samples}


def with_nan(rows: dict) -> dict:
    """Rows read back from JSON, where NaN was written as null."""
    return {role: {k: float("nan") if v is None else v for k, v in row.items()}
            for role, row in rows.items()}  # fmt: skip


def original_memorises(config: RunConfig, plan: StreamPlan, original: nn.Module,
                       device: torch.device) -> bool:  # fmt: skip
    """Whether the original memorises its training data, judged on the first samples step as a
    single run judges it (only samples take other defaults for it)."""
    for k in range(1, len(plan.requests) + 1):
        if plan.requests[k - 1].is_learn:
            continue
        split = plan.step_split(k)
        if split.targets == "samples":
            found = note_memorised_original(
                config.method.name,
                config.method.options,
                original,
                split,
                device,
                config.evaluation.options.batch_size,
            )
            return bool(found.get("original_memorises"))
    return False


def learn_step(config: RunConfig, plan: StreamPlan, k: int, model: nn.Module,
               device: torch.device) -> tuple[nn.Module, dict]:  # fmt: skip
    """Step k's new data taken in: the model trains on it for `stream.learn_epochs` passes with
    the original's training recipe (model.train); a SISA ensemble retrains the slices that hold
    it. Not unlearning: not in the method's cost."""
    rows = plan.requests[k - 1].learn_idx
    data = plan.data
    learner = copy.deepcopy(model).to(device)
    start = time.perf_counter()
    if isinstance(getattr(learner, "trainer", None), SisaTrainer):
        # A SISA ensemble takes new data into the slices that hold it (exact, as it forgets).
        learner.trainer.learn(rows.tolist())
    else:
        recipe = dataclasses.replace(config.model.options.train,
                                     epochs=config.stream.options.learn_epochs)  # fmt: skip
        train_classifier(learner, data.x_train, data.y_train, recipe, device,
                         config.run.seed + k, f"learn step {k}", rows=rows,
                         feed=data.feed)  # fmt: skip
    seconds = time.perf_counter() - start
    x, y = data.x_train[torch.as_tensor(rows)], data.y_train[torch.as_tensor(rows)]
    batch = config.evaluation.options.batch_size
    learned_acc = accuracy(predict_logits(learner, x, device, batch), y)
    log.info("step %d of %d: learned %d new samples (accuracy on them %.2f%%)", k,
             len(plan.requests), len(rows), learned_acc)  # fmt: skip
    return learner, {"num_learned": int(len(rows)), "learned_acc": learned_acc,
                     "seconds": seconds}  # fmt: skip


def step_method(method: Choice, targets: str, memorises: bool) -> Choice:
    """The run's method with the defaults of what this step forgets (and of a memorising
    original, for samples), as a single run forgetting it would take them."""
    written = method.as_written or method.options
    options = written.for_targets(targets)
    if not options.has_auto():
        options.check("method")
    choice = Choice(method.name, options, as_written=written)
    log_method_defaults(choice, targets)
    if memorises and targets == "samples":
        choice = dataclasses.replace(choice, options=memorised_options(choice))
    return choice


def log_step(step: dict) -> None:
    after = step["rows"]["unlearned"]
    log.info("step %d: UA %.2f, UA_earlier %s, RA %.2f, avg_gap %s, cost so far 1/%s of the "
             "oracles' retrainings", step["step"], after["UA"],
             f"{after['UA_earlier']:.2f}" if "UA_earlier" in after else "-", after["RA"],
             f"{after['avg_gap']:.2f}" if "avg_gap" in after else "-",
             f"{cumulative_ratio(step['spent']):.1f}")  # fmt: skip


def cumulative_ratio(spent: dict[str, Cost]) -> float:
    """The retrainings' counted sample passes so far over the method's (nan without oracles)."""
    method, retrain = spent["method"].units, spent["retrain"].units
    return retrain / method if method and retrain else float("nan")


def step_record(step: dict) -> dict:
    """A step as metrics.json keeps it: the request, every model's figures, the method's own
    figures and the cost so far."""
    split: ForgetSplit | None = step["split"]
    spent = step["spent"]
    method = step["method"]
    if split is None:  # a learn step
        request = {"tag": step["tag"], "learn": True, **step["learned"]}
    else:
        request = split.describe()
    return {
        "step": step["step"],
        "request": request,
        "models": step["rows"],
        "method_metrics": step["method_metrics"],
        "method_options": None if method is None else dataclasses.asdict(method.options),
        "cumulative": {
            "method_cost_units": spent["method"].units,
            "retrain_cost_units": spent["retrain"].units,
            "cost_ratio": cumulative_ratio(spent),
        },  # fmt: skip
    }


def steps_frame(records: list[dict]) -> pd.DataFrame:
    """The per-step table: the unlearned model's figures at each step and the cost so far."""
    rows = []
    for rec in records:
        after = rec["models"].get("unlearned", {})  # a learn step has no unlearned model
        row = {"step": rec["step"], "request": rec["request"]["tag"]}
        row.update({c: after.get(c, float("nan")) for c in STEP_COLUMNS if c != "cost_ratio"})
        row["cost_ratio"] = rec["cumulative"]["cost_ratio"]
        rows.append(row)
    return pd.DataFrame(rows)


def describe_plan(plan: StreamPlan) -> dict:
    return {"steps": [{"tag": r.tag, "num_forget": int(len(r.forget_idx)),
                       "forget_classes": [plan.data.classes[c] for c in r.classes]}
                      for r in plan.requests]}  # fmt: skip
