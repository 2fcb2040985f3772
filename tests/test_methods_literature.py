"""What each method of the literature promises, checked on synthetic data (issue 4)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from unlearn_cli.methods import UnlearnContext, method_options
from unlearn_cli.methods.importance import squared_batch_gradients, subsample
from unlearn_cli.methods.sisa import SisaTrainer, slice_train_cfg

from .test_methods import CPU, METHOD_DATA, acc, trained, unlearn  # noqa: F401  (fixture)


def weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_salun_leaves_non_salient_weights_bit_identical(trained, make_cfg):  # noqa: F811
    _, _, original = trained
    model, split, ctx = unlearn(trained, make_cfg, "salun", "method.saliency=0.3")
    from unlearn_cli.methods.salun import saliency_mask

    mask = saliency_mask(copy.deepcopy(original), split, CPU, 0.3, 1024)
    before, after = weights(original), weights(model)
    moved = 0
    for name, m in mask.items():
        assert torch.equal(after[name][~m], before[name][~m]), name  # frozen exactly
        moved += int((after[name][m] != before[name][m]).sum())
    assert moved > 0
    assert ctx.metrics["salient_share"] == pytest.approx(0.3, abs=0.01)
    assert acc(model, split.forget) < acc(original, split.forget)


def test_ssd_changes_only_weights_above_the_threshold(trained, make_cfg):  # noqa: F811
    cfg, data, original = trained
    model, split, ctx = unlearn(trained, make_cfg, "ssd", "method.select_threshold=3")
    mcfg = make_cfg(*METHOD_DATA, "method=ssd").method
    x_all, y_all = subsample(data.x_train, data.y_train, mcfg.importance_samples, 0,
                             split.trainable_idx)  # fmt: skip
    x_f, y_f = subsample(*split.forget, mcfg.importance_samples, 0)
    probe = copy.deepcopy(original)
    i_d = squared_batch_gradients(probe, x_all, y_all, CPU, mcfg.importance_batch_size)
    i_f = squared_batch_gradients(probe, x_f, y_f, CPU, mcfg.importance_batch_size)
    before, after = weights(original), weights(model)
    selected_total = 0
    for name in before:
        selected = i_f[name] > 3 * i_d[name]
        assert torch.equal(after[name][~selected], before[name][~selected]), name
        beta = (i_d[name] / i_f[name].clamp_min(1e-30)).clamp(max=1.0)
        assert torch.allclose(after[name][selected], (before[name] * beta)[selected])
        selected_total += int(selected.sum())
    assert selected_total == ctx.metrics["dampened_weights"] > 0


def test_fisher_zeroes_the_forgotten_row_and_adds_noise(trained, make_cfg):  # noqa: F811
    _, _, original = trained
    model, split, ctx = unlearn(trained, make_cfg, "fisher")
    (c,) = split.forget_classes
    assert torch.all(model.head.weight[c] == 0) and model.head.bias[c] == 0
    assert ctx.metrics["zeroed_head_rows"] == ["class1"]
    others = [i for i in range(split.data.num_classes) if i != c]
    assert not torch.equal(model.head.weight[others], original.head.weight[others])
    first_conv = "features.0.weight"
    assert not torch.equal(weights(model)[first_conv], weights(original)[first_conv])


def test_fisher_random_forgetting_zeroes_nothing(trained, make_cfg):  # noqa: F811
    model, _, ctx = unlearn(trained, make_cfg, "fisher", forget_fraction=0.1)
    assert ctx.metrics["zeroed_head_rows"] == []
    assert (model.head.weight.abs().sum(dim=1) > 0).all()


def test_l1_sparse_shrinks_the_weights(trained, make_cfg):  # noqa: F811
    common = ["method.retain_epochs=3", "method.lr=0.05"]
    plain, _, _ = unlearn(trained, make_cfg, "l1_sparse", *common, "method.l1_gamma=0")
    sparse, _, _ = unlearn(trained, make_cfg, "l1_sparse", *common, "method.l1_gamma=0.005")
    l1 = lambda m: sum(float(p.detach().abs().sum()) for p in m.parameters())  # noqa: E731
    assert l1(sparse) < 0.95 * l1(plain)


def test_boundary_shrink_relabels_to_a_wrong_neighbour(trained, make_cfg):  # noqa: F811
    from unlearn_cli.methods.boundary_shrink import nearest_wrong_labels

    _, _, original = trained
    model, split, ctx = unlearn(trained, make_cfg, "boundary_shrink", "method.forget_epochs=5")
    x, y = split.forget
    labels = nearest_wrong_labels(copy.deepcopy(original), x, y, 0.25)
    assert (labels != y).all()
    assert "class1" not in ctx.metrics["neighbour_labels"]
    assert sum(ctx.metrics["neighbour_labels"].values()) == len(y)
    # the forgotten images now land in the neighbouring classes they were relabelled with
    predicted = model(x.to(CPU)).argmax(1)
    assert (predicted == labels).float().mean() > 0.6
    assert (predicted != y).float().mean() > 0.95


def test_scrub_rewind_keeps_the_best_epoch(trained, make_cfg):  # noqa: F811
    _, _, ctx = unlearn(trained, make_cfg, "scrub", "method.rounds=4", "method.max_rounds=2",
                        "method.rewind=true", forget_fraction=0.2)  # fmt: skip
    history = ctx.metrics["forget_acc_by_round"]
    assert len(history) == 4
    assert 1 <= ctx.metrics["rewound_to_round"] <= 4


def test_ewc_keeps_weights_closer_to_the_original(trained, make_cfg):  # noqa: F811
    _, _, original = trained
    common = ["method.forget_epochs=5", "method.lr=0.05"]
    free, _, _ = unlearn(trained, make_cfg, "random_label", *common)
    anchored, _, ctx = unlearn(trained, make_cfg, "random_label", *common,
                               "method.ewc_lambda=5000")  # fmt: skip
    distance = lambda m: sum(  # noqa: E731
        float((p - q).detach().pow(2).sum())
        for p, q in zip(m.parameters(), original.parameters(), strict=True)
    )
    assert distance(anchored) < distance(free)
    assert ctx.metrics["ewc_lambda"] == 5000


# SISA --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sisa_setup(trained):  # noqa: F811
    from hydra import compose, initialize_config_module

    cfg, data, _ = trained
    with initialize_config_module("unlearn_cli.configs", version_base="1.3"):
        mcfg = compose(
            "config",
            overrides=[
                *METHOD_DATA,
                "method=sisa",
                "method.shards=2",
                "method.slices=3",
                "method.epochs_per_slice=2",
            ],
        )
    from unlearn_cli.models import build_model

    opts = method_options(mcfg.method)
    ctx = UnlearnContext(
        cfg.model.train,
        CPU,
        0,
        lambda: build_model(cfg.model, data.input_shape, data.num_classes, 0),
    )

    def make(removed=()):
        return SisaTrainer(ctx.fresh_model, data.x_train, data.y_train, slice_train_cfg(ctx, opts),
                           CPU, 0, 2, 3, removed=removed)  # fmt: skip

    return data, make


def predictions(trainer, x):
    with torch.no_grad():
        return trainer.ensemble()(x)


def test_sisa_unlearning_equals_retraining_on_the_same_shards(sisa_setup):
    data, make = sisa_setup
    trainer = make().fit()
    shard0_slice1 = trainer.slice_members[0][1][:5].tolist()  # in shard 0, second slice
    counts = trainer.forget(shard0_slice1)
    assert counts == {"retrained_shards": 1, "retrained_slices": 2}
    scratch = make(removed=shard0_slice1).fit()
    assert torch.equal(predictions(trainer, data.x_test), predictions(scratch, data.x_test))

    # A second request on the same shard: the first request's samples must stay out.
    shard0_slice2 = trainer.slice_members[0][2][:5].tolist()
    trainer.forget(shard0_slice2)
    scratch_both = make(removed=shard0_slice1 + shard0_slice2).fit()
    assert torch.equal(predictions(trainer, data.x_test), predictions(scratch_both, data.x_test))
    readmitted = make(removed=shard0_slice2).fit()  # what re-admitting the first request gives
    assert not torch.equal(predictions(trainer, data.x_test), predictions(readmitted, data.x_test))


def test_sisa_untouched_shards_are_not_retrained(sisa_setup):
    _, make = sisa_setup
    trainer = make().fit()
    shard1_before = copy.deepcopy(trainer.members[1].state_dict())
    trainer.forget(trainer.slice_members[0][2][:3].tolist())
    after = trainer.members[1].state_dict()
    assert all(torch.equal(shard1_before[k], after[k]) for k in after)
    assert np.intersect1d(np.concatenate(trainer.slice_members[0]),
                          np.concatenate(trainer.slice_members[1])).size == 0  # fmt: skip


def test_sisa_method_excludes_setup_from_its_time(trained, make_cfg):  # noqa: F811
    model, split, ctx = unlearn(trained, make_cfg, "sisa", "method.shards=2", "method.slices=2",
                                "method.epochs_per_slice=2")  # fmt: skip
    assert ctx.untimed_seconds == ctx.metrics["setup_seconds"] > 0
    assert acc(model, split.forget) == 0.0
