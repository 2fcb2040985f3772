"""rum: Refined-Unlearning Meta-algorithm (Zhao et al., NeurIPS 2024, arXiv 2406.01257).

RUM refines a forget request into groups of similar memorisation and unlearns them one after
another, least memorised first, each with the method that suits it (on CIFAR-10 the paper's
best is do nothing -> fine-tune -> SalUn). Here the forget samples are ranked by a memorisation
proxy and cut into `shares`; group i goes to `methods[i]`, the registered method of that name,
with its options from this schema's block of the same name (`method.influence.retain_drop`).
Every group's method sees the run's whole retain set and never another forget sample (the
authors' code keeps the groups not yet unlearned in the retain set, as for requests that come
one by one; here the whole forget set is deleted at once, so none of it is trained on).

Proxy: the original's own true-class logit margin z_y - max_{j != y} z_j on each forget sample,
one forward pass before any step (counted in the cost); the lower, the more memorised.
Feldman's memorisation scores need hundreds of retrainings, and the follow-up paper's
learning-event proxies (confidence accumulated over training, like the C-proxy) need the
training trajectory, which the model cache does not keep. Of what the final model allows, on the
memorising benchmark variant (random 10%, tuning seed 0: 190 forget samples, 19 of which
retraining gets wrong) the margin ranks them like retraining's margin (Spearman 0.90) and puts
15 of the 19 among its lowest tenth. Softmax confidence and loss, saturated near 1 on such an
original, rank alike overall (0.91) but put 12 there; the authors' held-out retraining proxy
(fine-tune a copy on held-out data, score the KL to the original), on the 100-image validation
split, 0.41-0.72 and at most 9. The validation split is the only held-out data a method may
use; nothing here reads the test set.

Defaults: the least memorised 30% are left as they are (none of the forget samples retraining
gets wrong is among them on either tuning seed) and influence removes the other 70% (from a
memorising original with `scale=search` within 1 point of retain accuracy). Chosen on tuning
seeds 0 and 1 of the memorising variant by the gap to retraining on UA, RA, validation accuracy
and an MIA against the validation split (val_gap, 3.35 against doing nothing's 7.95), keeping
validation accuracy within 5 points of retraining's. The paper's do nothing -> fine-tune ->
SalUn (thirds, or 60/30/10%) at those methods' own samples defaults left val_gap 8.45-8.65, and
its fine-tuning cost 10 points of validation accuracy on seed 1; SalUn strong enough to forget
the most memorised tenth (10-30 passes over it) cost 8-18. Influence on the whole forget set at
the same 1-point budget gave 3.65: the refinement's gain is within the seeds' spread
(docs/benchmark.md).

A whole class has nothing to refine (every sample of it goes; no per-sample memorisation tells
them apart): it is one group, given to the last method with that method's class defaults.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from torch import nn

from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.inference import predict_logits
from unlearn_cli.methods.base import METHODS, UnlearnContext, run_method
from unlearn_cli.methods.finetune import FinetuneOptions
from unlearn_cli.methods.influence import InfluenceOptions
from unlearn_cli.methods.salun import SalunOptions
from unlearn_cli.options import Options, Range, fail, opt

log = logging.getLogger(__name__)

# The methods a group may be given: each but none has its options block in RumOptions, named
# like it (the paper's pipeline, and influence, the best single method on random samples here).
GroupMethod = Literal["none", "finetune", "salun", "influence"]
GroupShare = Annotated[float, Range(gt=0, le=1)]


def rum_influence() -> InfluenceOptions:
    # From an original that memorises, influence searches its scale within a retain-accuracy
    # budget (`retain_drop`, influence's own default is 1 too since its re-tuning). 1 point kept
    # validation accuracy within 5 points of retraining's on both tuning seeds; 1.25-2 cost it
    # 6-7 on seed 1 (influence on the most memorised half, or on the whole forget set).
    return InfluenceOptions(retain_drop=1.0)


@dataclass(frozen=True)
class RumOptions(Options):
    proxy: Literal["margin"] = opt(
        "margin", "memorisation proxy: the original's true-class logit margin (low = memorised)"
    )
    shares: list[GroupShare] = opt(
        [0.3, 0.7], "shares of the forget set in each group, least memorised first"
    )
    methods: list[GroupMethod] = opt(
        ["none", "influence"], "each group's method (none, finetune, salun, influence)"
    )
    finetune: FinetuneOptions = field(
        default_factory=FinetuneOptions, metadata={"help": "the options of finetune groups"}
    )
    salun: SalunOptions = field(
        default_factory=SalunOptions, metadata={"help": "the options of salun groups"}
    )
    influence: InfluenceOptions = field(
        default_factory=rum_influence, metadata={"help": "the options of influence groups"}
    )

    def check(self, where: str) -> None:
        if len(self.methods) != len(self.shares):
            raise fail(where, "methods", f"one method per share ({len(self.shares)})",
                       self.methods)  # fmt: skip
        if abs(sum(self.shares) - 1.0) > 1e-6:
            raise fail(where, "shares", "shares that add up to 1", self.shares)

    def inner(self, name: str) -> Options:
        """The options block of group method `name`."""
        return getattr(self, name)

    def used(self) -> list[Options]:
        return [self.inner(m) for m in dict.fromkeys(self.methods) if m != "none"]

    def uses_torch_func(self) -> bool:
        return any(o.uses_torch_func() for o in self.used())

    def check_model(self, model: Any) -> None:
        for inner in self.used():
            inner.check_model(model)


def memorisation_margin(model: nn.Module, split: ForgetSplit, ctx: UnlearnContext) -> np.ndarray:
    """The original's true-class logit margin on each forget sample (low: memorised)."""
    x, y = split.forget
    logits = predict_logits(model, x, ctx.device, ctx.predict_batch_size).float()
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return (true - others.max(dim=1).values).numpy()


def memorisation_groups(margin: np.ndarray, shares: list[float]) -> list[np.ndarray]:
    """Positions into the forget set, cut by `shares` from the least memorised (largest
    margin) to the most (smallest); a share too small for one sample gives an empty group."""
    order = np.argsort(-margin, kind="stable")
    bounds = np.rint(np.cumsum([0.0, *shares]) * len(order)).astype(int)
    bounds[-1] = len(order)
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def unlearn_group(
    name: str, model: nn.Module, group: ForgetSplit, ctx: UnlearnContext, opts: RumOptions
) -> tuple[nn.Module, dict[str, Any]]:
    """Run group method `name` on `group`; its figures and the options it ran with (`auto`
    resolved for the group, with the memorising-original defaults where the original does)."""
    memorised = bool(ctx.metrics.get("original_memorises", False))
    inner = opts.inner(name).for_targets(group.targets, memorised)
    sub = dataclasses.replace(ctx, metrics={})  # the group method's own figures
    model = run_method(name, model, group, sub, inner)
    return model, {"options": dataclasses.asdict(inner), **sub.metrics}


def refine(
    model: nn.Module, split: ForgetSplit, ctx: UnlearnContext, opts: RumOptions
) -> list[dict[str, Any]]:
    """The groups, least memorised first: their method and positions into the forget set."""
    if split.targets == "class":  # nothing to refine: one group, the last method
        log.info("rum: a class is one group, given to %s", opts.methods[-1])
        return [{"method": opts.methods[-1], "rows": np.arange(len(split.forget_idx))}]
    margin = memorisation_margin(model, split, ctx)
    groups = []
    for name, rows in zip(opts.methods, memorisation_groups(margin, opts.shares), strict=True):
        group = {"method": name, "rows": rows}
        if len(rows):  # the proxy's range in the group
            group.update(margin_min=float(margin[rows].min()), margin_max=float(margin[rows].max()))
        groups.append(group)
    return groups


@METHODS.register("rum")
def rum(model: nn.Module, split: ForgetSplit, ctx: UnlearnContext, opts: RumOptions) -> nn.Module:
    records = []
    for i, group in enumerate(refine(model, split, ctx, opts)):
        name, rows = group.pop("method"), group.pop("rows")
        record: dict[str, Any] = {"group": i, "method": name, "size": len(rows), **group}
        if name != "none" and len(rows):
            part = dataclasses.replace(split, forget_idx=split.forget_idx[np.sort(rows)],
                                       tag=f"{split.tag}-group{i}")  # fmt: skip
            model, record["metrics"] = unlearn_group(name, model, part, ctx, opts)
        log.info("rum group %d of %d samples: %s", i, len(rows), name)
        records.append(record)
    diverged = any(r.get("metrics", {}).get("diverged", False) for r in records)
    ctx.metrics.update(proxy=opts.proxy, groups=records, diverged=diverged)
    return model.eval()
