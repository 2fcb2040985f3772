"""The solver layer of `influence`: (H + reg I)^-1 g for the mean cross-entropy of a module,
with its parameters as one flat vector.

Solvers: `exact` (a dense Hessian from torch.func, or in closed form for a plain linear head)
solved by LU, and `cg` (conjugate gradient on Hessian-vector products, never materialising H).
Nothing here knows about forget sets or retain objectives: `influence.py` builds the gradient
and the Hessian's batches and decides what to do with the step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, hessian, jvp

from unlearn_cli.cost import add_grad, uncounted
from unlearn_cli.errors import UserError

Batches = list[tuple[torch.Tensor, torch.Tensor]]


class FlatObjective:
    """Mean cross-entropy of `module` as a function of a flat vector of its trainable parameters."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.names = [n for n, p in module.named_parameters() if p.requires_grad]
        params = dict(module.named_parameters())
        self.shapes = [params[n].shape for n in self.names]
        self.fixed = {**{n: p.detach() for n, p in params.items()}, **dict(module.named_buffers())}

    def flat(self) -> torch.Tensor:
        params = dict(self.module.named_parameters())
        return torch.cat([params[n].detach().reshape(-1) for n in self.names])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            size = math.prod(shape)
            out[name] = flat[start : start + size].view(shape)
            start += size
        return out

    def logits(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, {**self.fixed, **self.unflatten(flat)}, (x,))

    def loss(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(flat, x), y)

    def assign(self, flat: torch.Tensor) -> None:
        params = dict(self.module.named_parameters())
        with torch.no_grad():
            for name, value in self.unflatten(flat).items():
                params[name].copy_(value)


def linear_head_names(obj: FlatObjective) -> list[str] | None:
    """The flat layout of a plain nn.Linear's trainable parameters (weight, then bias), or None
    when `obj` is anything else (its Hessian then comes from torch.func)."""
    if type(obj.module) is not nn.Linear:
        return None
    names = ["weight", "bias"] if obj.module.bias is not None else ["weight"]
    return names if obj.names == names else None


def linear_head_hessian(
    obj: FlatObjective, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """The exact Hessian of mean CE(x W' + b, y) in (W, b), in closed form.

    With p_i the softmax of sample i, A_i = diag(p_i) - p_i p_i' and f_i = (x_i, 1), the Hessian
    is mean_i A_i (kron) f_i f_i' (it does not depend on y): block-diagonal terms F' diag(p_c) F
    minus V'V with rows v_i = kron(p_i, f_i). Reordered to the flat layout: W row-major, then b.
    """
    params = obj.unflatten(theta)
    logits = x @ params["weight"].T
    if "bias" in params:
        logits = logits + params["bias"]
    p = F.softmax(logits, dim=1)
    n, k = p.shape
    f = torch.cat([x, torch.ones(n, 1, device=x.device, dtype=x.dtype)], dim=1)
    m = f.shape[1]
    diag = torch.einsum("ic,ia,ib->cab", p, f, f)  # (k, m, m): F' diag(p_c) F
    v = (p[:, :, None] * f[:, None, :]).reshape(n, k * m)
    h = -(v.T @ v)
    blocks = h.view(k, m, k, m)
    idx = torch.arange(k, device=x.device)
    blocks[idx, :, idx, :] += diag
    h = h / n
    # (class, feature-or-bias) order -> W (class, feature) row-major, then b (class)
    d = m - 1
    order = torch.cat([(idx[:, None] * m + torch.arange(d, device=x.device)).reshape(-1),
                       idx * m + d])  # fmt: skip
    if "bias" not in params:
        order = order[: k * d]
    return h[order][:, order]


def mean_over(batches: Batches, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    """Sample-weighted mean of a per-batch mean quantity over all batches."""
    total = sum(len(y) for _, y in batches)
    return sum(fn(x, y) * (len(y) / total) for x, y in batches)


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int, tol: float
) -> tuple[torch.Tensor, dict]:
    """Solve A x = b for symmetric A given as a matvec, by conjugate gradient.

    A deep net's Hessian need not be positive definite: on a direction of non-positive curvature
    CG stops with what it has (truncated CG, as in trust-region Newton methods) instead of
    stepping to infinity.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = r @ r
    b_norm = b.norm().clamp_min(1e-30)
    info = {"cg_iterations": iters, "cg_negative_curvature": False}
    for it in range(1, iters + 1):
        ap = matvec(p)
        curvature = p @ ap
        if curvature <= 0:
            info.update(cg_iterations=it - 1, cg_negative_curvature=True)
            break
        alpha = rs / curvature
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = r @ r
        if rs_new.sqrt() / b_norm < tol:
            rs = rs_new
            info["cg_iterations"] = it
            break
        p = r + (rs_new / rs) * p
        rs = rs_new
    info["cg_relative_residual"] = float(rs.sqrt() / b_norm)
    return x, info


def batched(x: torch.Tensor, y: torch.Tensor, size: int) -> Batches:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


def solve_newton(
    obj: FlatObjective,
    theta: torch.Tensor,
    g: torch.Tensor,
    h_batches: Batches,
    opts,
    reg: float,
    full_network: bool = True,
) -> tuple[torch.Tensor, dict]:
    """(H + reg I)^-1 g with the configured solver.

    Cost counting (see cost.py): a dense Hessian is theta.numel() gradient evaluations per
    sample (one traced call under torch.func), a Hessian-vector product about two; head-only
    work (the last-layer solver) is not counted."""
    n_h = sum(len(y) for _, y in h_batches)
    if opts.solver in ("exact", "last_layer"):
        if theta.numel() > opts.max_exact_params:
            raise UserError(
                f"influence solver={opts.solver} needs a dense {theta.numel()}^2 Hessian, above "
                f"method.max_exact_params={opts.max_exact_params}; "
                "use method.solver=cg or last_layer"
            )
        with uncounted():
            if linear_head_names(obj) is not None:  # the closed form: about 10x faster
                h = mean_over(h_batches, lambda x, y: linear_head_hessian(obj, theta, x, y))
            else:
                h = mean_over(h_batches, lambda x, y: hessian(obj.loss)(theta, x, y))
        if full_network:
            add_grad(theta.numel() * n_h)
        h = h + reg * torch.eye(len(theta), device=theta.device, dtype=theta.dtype)
        # In float64: a float32 LU of a Hessian that is mostly the regulariser (a head on
        # near-zero features) runs into denormals and took 28 s instead of 0.3 s for 4,100
        # parameters on the CPU; float64 has neither that nor float32's rounding.
        return torch.linalg.solve(h.double(), g.double()).to(g.dtype), {}

    def hvp(v: torch.Tensor) -> torch.Tensor:
        def one(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return jvp(lambda t: grad(obj.loss)(t, x, y), (theta,), (v,))[1]

        with uncounted():
            out = mean_over(h_batches, one) + reg * v
        if full_network:
            add_grad(2 * n_h)
        return out

    return conjugate_gradient(hvp, g, opts.cg_iters, opts.cg_tol)
