"""msg, conv_transpose and delete (issue 16) and negative_gradient's NG+-style defaults: what each
promises, on the synthetic data of tests/test_methods.py (Deep Unlearn's own NG+, `ngplus`:
tests/test_ngplus.py)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from unlearn_cli.errors import UserError
from unlearn_cli.methods import method_options
from unlearn_cli.methods.conv_transpose import transpose_kernels
from unlearn_cli.methods.delete import delete_loss, masked_teacher_targets
from unlearn_cli.methods.msg import accumulated_gradient, conv_layers, reinitialise_smallest
from unlearn_cli.methods.step_loop import lr_schedule
from unlearn_cli.models import build_model

from .test_methods import CPU, METHOD_DATA, acc, trained, unlearn  # noqa: F401  (fixture)


def test_msg_reinitialises_the_smallest_gradients_of_each_conv_layer(trained, make_cfg):  # noqa: F811
    cfg, data, original = trained
    from unlearn_cli.data import make_split
    from unlearn_cli.methods import UnlearnContext

    split = make_split(data, None, None, "class1", seed=0)
    ctx = UnlearnContext(cfg.model.train, CPU, 0, lambda: None)
    model = copy.deepcopy(original)
    grads = accumulated_gradient(model, split, ctx, 64)
    assert set(grads) == set(conv_layers(model)) and len(grads) == 3
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = reinitialise_smallest(model, grads, 0.3, seed=0)
    after = dict(model.named_parameters())
    for name, g in grads.items():
        mask = masks[name]
        assert mask.sum() == math.floor(0.3 * g.numel())
        assert g.abs()[mask].max() <= g.abs()[~mask].min()  # the smallest |g| were chosen
        assert torch.equal(after[name][~mask], before[name][~mask])
        assert (after[name][mask] != before[name][mask]).float().mean() > 0.99
    for name in before:  # batch norm and the head are untouched
        if name not in grads:
            assert torch.equal(after[name], before[name])


def test_msg_damps_the_kept_weights_and_forgets(trained, make_cfg):  # noqa: F811
    _, _, original = trained
    model, split, ctx = unlearn(trained, make_cfg, "msg", "method.retain_epochs=10",
                                "method.lr=0.05")  # fmt: skip
    assert ctx.metrics["reinitialised_weights"] > 0
    assert acc(model, split.forget) <= 5 and acc(model, split.retain) >= 90


def test_warmup_then_linear_decay_schedule():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = lr_schedule(opt, total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert lrs[2:] == sorted(lrs[2:], reverse=True) and lrs[-1] == pytest.approx(1 / 8)


def test_conv_transpose_swaps_the_spatial_axes_of_every_kernel(trained):  # noqa: F811
    _, _, original = trained
    model = copy.deepcopy(original)
    assert transpose_kernels(model) == (3, 0)
    for name, conv in conv_layers(model).items():
        assert torch.equal(conv.weight, conv_layers(original)[name].weight.transpose(-1, -2))
    rect = nn.Sequential(nn.Conv2d(1, 2, (3, 1)), nn.Conv2d(2, 2, 3))
    assert transpose_kernels(rect) == (1, 1)


def test_conv_transpose_forgets_without_forget_data(trained, make_cfg):  # noqa: F811
    model, split, ctx = unlearn(trained, make_cfg, "conv_transpose", "method.retain_epochs=10",
                                "method.lr=0.05")  # fmt: skip
    assert ctx.metrics["transposed_layers"] == 3
    assert acc(model, split.forget) <= 5 and acc(model, split.retain) >= 90


@pytest.mark.parametrize("method", ["msg", "conv_transpose"])
def test_conv_methods_refuse_a_model_without_conv_layers(make_cfg, method):
    cfg = make_cfg("dataset=synthetic", f"method={method}", "model=mlp")
    opts = method_options(cfg.method, "class")
    with pytest.raises(UserError, match="trainable convolution layers"):
        opts.check_model(build_model(cfg.model, (1, 8, 8), 4, 0))


def test_delete_targets_mask_the_true_class_and_keep_the_rest():
    teacher = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
    y = torch.tensor([0, 2])
    target = masked_teacher_targets(teacher, y, t=1.0)
    assert target[0, 0] == 0 and target[1, 2] == 0
    assert target[0, 1:].tolist() == pytest.approx(torch.softmax(teacher[0, 1:], 0).tolist())
    assert target[1, :2].tolist() == pytest.approx(torch.softmax(teacher[1, :2], 0).tolist())
    # a student that already gives the masked distribution has zero loss
    student = torch.log(target.clamp_min(1e-30))
    assert delete_loss(student, teacher, y, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert delete_loss(teacher, teacher, y, 1.0).item() > 0.5


def test_delete_forgets_a_class_and_says_samples_are_unsuited(trained, make_cfg, caplog):  # noqa: F811
    _, _, original = trained
    model, split, _ = unlearn(trained, make_cfg, "delete", "method.forget_epochs=5",
                              "method.lr=0.01")  # fmt: skip
    assert acc(model, split.forget) <= 5 and acc(model, split.retain) >= 90
    from unlearn_cli.methods import log_method_defaults
    from unlearn_cli.validate import choose

    cfg = make_cfg(*METHOD_DATA, "method=delete")
    with caplog.at_level("WARNING"):
        log_method_defaults(choose("method", cfg.method, "samples"), "samples")
    assert "not suited to forgetting samples" in caplog.text


def test_negative_gradient_defaults_mix_retain_descent_and_freeze_norm(trained, make_cfg):  # noqa: F811
    """negative_gradient's NG+-style defaults: 0.95 of retain descent, 0.05 of forget ascent
    for a class (0.99 for samples, its val_gap re-tuning), batch-norm statistics frozen (its
    budget, lr and clipping are its own; ngplus is the published NG+)."""
    cfg = make_cfg(*METHOD_DATA, "method=negative_gradient")
    opts = method_options(cfg.method, "class")
    assert opts.mix == 0.95 and opts.freeze_norm is True
    assert method_options(cfg.method, "samples").mix == 0.99
    _, _, original = trained
    model, split, ctx = unlearn(trained, make_cfg, "negative_gradient")
    for (name, buf), (_, before) in zip(model.named_buffers(), original.named_buffers(),
                                        strict=True):  # fmt: skip
        assert torch.equal(buf, before), f"{name} moved: batch-norm statistics must stay frozen"
    assert ctx.metrics["steps"] > 0
