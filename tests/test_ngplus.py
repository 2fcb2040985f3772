"""ngplus: NG+ as Deep Unlearn runs it (unlearn_cli/methods/ngplus.py cites the sources). Its
published values, its batches, and that a run keeps the model in eval mode, never clips, keeps
the learning rate constant and spends exactly its budget of passes over the retain set."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from unlearn_cli import cost
from unlearn_cli.data import make_split
from unlearn_cli.methods import UnlearnContext, method_options, run_method
from unlearn_cli.methods import step_loop as step_loop_module
from unlearn_cli.methods.ngplus import NgPlusOptions, paired_batches

from .test_methods import CPU, METHOD_DATA, trained  # noqa: F401  (fixture)


def ngplus_options(make_cfg, *overrides: str) -> NgPlusOptions:
    return method_options(make_cfg(*METHOD_DATA, "method=ngplus", *overrides).method, "class")


def run_ngplus(trained, opts: NgPlusOptions):  # noqa: F811
    cfg, data, original = trained
    split = make_split(data, None, None, "class1", seed=0)
    ctx = UnlearnContext(cfg.model.train, CPU, 0, lambda: None)
    model = cost.attach_counter(copy.deepcopy(original))
    modes: list[bool] = []  # every module's `training` flag at every forward call
    for module in model.modules():
        module.register_forward_pre_hook(lambda m, args: modes.append(m.training))
    with cost.counting() as spent:
        model = run_method("ngplus", model, split, ctx, opts)
    return model, split, ctx, modes, spent


def test_defaults_are_deep_unlearns(make_cfg):
    opts = ngplus_options(make_cfg)
    # neggradplus.py: ORIGINAL_NUM_EPOCHS 10, ORIGINAL_BATCH_SIZE 256, SGD with ORIGINAL_LR 0.01,
    # ORIGINAL_MOMENTUM 0.9, weight decay 0.0, ORIGINAL_ALPHA 0.95
    assert (opts.retain_epochs, opts.batch_size) == (10, 256)
    assert (opts.optimizer, opts.lr, opts.momentum, opts.weight_decay) == ("sgd", 0.01, 0.9, 0.0)
    assert opts.mix == 0.95
    loop = opts.loop_options()
    assert loop.grad_clip == 0 and loop.ewc_lambda == 0
    # clipping, batch-norm handling and early stopping are not options one could turn on
    names = {f.name for f in dataclasses.fields(NgPlusOptions)}
    assert not names & {"grad_clip", "freeze_norm", "stop_target", "max_steps", "ewc_lambda"}


def test_a_run_is_eval_mode_unclipped_constant_lr_and_the_full_retain_budget(
    trained,  # noqa: F811
    make_cfg,
    monkeypatch,
):
    clipped, optimizers = [], []
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: clipped.append(a))
    make = step_loop_module.make_optimizer

    def spy(*args, **kwargs):
        optimizers.append(make(*args, **kwargs))
        return optimizers[-1]

    monkeypatch.setattr(step_loop_module, "make_optimizer", spy)
    opts = ngplus_options(make_cfg)
    model, split, ctx, modes, spent = run_ngplus(trained, opts)

    assert modes and not any(modes), "a module ran in train mode"
    assert not clipped
    (optimizer,) = optimizers
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD) and not group["nesterov"]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (
        0.01,
        0.9,
        0.0,
    )  # after all steps
    n_r, n_f, b = len(split.retain_idx), len(split.forget_idx), opts.batch_size
    per_pass = math.ceil(n_r / b)
    assert ctx.metrics["steps"] == 10 * per_pass and not ctx.metrics["diverged"]
    # each step: one retain batch and the next batch of the cycled forget pass, both with gradients
    forget_sizes = [min(b, n_f - i) for i in range(0, n_f, b)]
    per_pass_forget = sum(forget_sizes[j % len(forget_sizes)] for j in range(per_pass))
    assert spent.grad_samples == 10 * (n_r + per_pass_forget) and spent.forward_samples == 0
    _, _, original = trained
    for (name, buf), before in zip(model.named_buffers(), original.buffers(), strict=True):
        assert torch.equal(buf, before), f"{name} moved: eval mode keeps batch-norm statistics"


@pytest.mark.parametrize("mix", [0.95, 0.0, 1.0])
def test_one_full_batch_step_is_the_published_loss_in_eval_mode(trained, make_cfg, mix):  # noqa: F811
    opts = ngplus_options(make_cfg, "method.retain_epochs=1", "method.batch_size=100000",
                          f"method.mix={mix}")  # fmt: skip
    model, split, ctx, _, _ = run_ngplus(trained, opts)
    assert ctx.metrics["steps"] == 1  # both sets in one batch: the step sees all of them
    _, _, original = trained
    ref = copy.deepcopy(original).eval()
    (xr, yr), (xf, yf) = split.retain, split.forget
    loss = mix * F.cross_entropy(ref(xr), yr) - (1 - mix) * F.cross_entropy(ref(xf), yf)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    for p, p0, g in zip(model.parameters(), original.parameters(), grads, strict=True):
        # SGD's first step with momentum: p0 - lr * g, unclipped
        torch.testing.assert_close(p.detach(), p0.detach() - 0.01 * g, rtol=1e-4, atol=1e-6)


def test_batches_pass_over_retain_and_cycle_one_forget_pass(trained):  # noqa: F811
    _, data, _ = trained
    split = make_split(data, None, None, "class1", seed=0)
    n_r, n_f, b = len(split.retain_idx), len(split.forget_idx), 64
    per_pass, forget_batches = math.ceil(n_r / b), math.ceil(n_f / b)
    assert per_pass > forget_batches > 1  # the forget pass repeats within a retain pass
    pairs = list(paired_batches(split, CPU, b, torch.Generator().manual_seed(0), epochs=2))
    assert len(pairs) == 2 * per_pass
    passes = [pairs[:per_pass], pairs[per_pass:]]
    row_keys = torch.sort(split.retain[0].flatten(1).sum(1)).values  # tells samples apart
    for one in passes:
        retain_x = torch.cat([xr for (xr, _), _ in one])
        assert len(retain_x) == n_r  # every retain sample once, the last batch kept short
        torch.testing.assert_close(torch.sort(retain_x.flatten(1).sum(1)).values, row_keys)
        forget = [xf for _, (xf, _) in one]
        assert sum(len(x) for x in forget[:forget_batches]) == n_f
        for j in range(forget_batches, per_pass):  # itertools.cycle: the same batches again
            assert torch.equal(forget[j], forget[j % forget_batches])
    assert not torch.equal(passes[0][0][1][0], passes[1][0][1][0])  # a new pass reshuffles
