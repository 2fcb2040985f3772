"""The NeurIPS 2023 machine-unlearning competition's forgetting-quality score F.

Follows google-deepmind/unlearning_evaluation, metric.py (our own numpy code, none copied).
For every forget example, N retrained and N unlearned models each give a logit-scaled confidence
s = log p_y - log sum_{j != y} p_j. Per example:

- Cap: spread = max - min over the N models of a side. If the smaller spread is under 1% of the
  larger one (one side is peaky, e.g. an unlearned output that is constant across models), the
  example's epsilon is the cap, 50, without running any attack.
- Attacks are evaluated on fixed grids, not on the observed values; "positive" is one side,
  TPR/FPR the share of the positive/negative side's N values the attack calls positive.
  Single threshold: positive = the side with the larger median (the unlearned side on a tie);
  call c positive if c >= t, for N_t = ceil((max - min) * 100) points t from min to max over
  both sides. Interval: positive = the peakier side (smaller spread; the smaller-median side on
  a tie), w = its spread; call c positive if l <= c <= r, for right ends r from
  (min_peaky + w - 2) to (max_peaky + 2) at 100 per unit and, for each r, 400 left ends l from
  r - w - 2 to r - w + 2.
- Each attack's epsilon, with delta = 1e-5:
      eps = max(0, log(1 - delta - FPR) - log(FNR), log(1 - delta - FNR) - log(FPR)),
  inf when FPR = FNR = 0 (perfect separation); attacks with exactly one of FPR, FNR zero are
  discarded as unestimable, as are those where both logs are undefined (FPR = FNR = 1).
- The example's epsilon is the largest over the kept attacks of both families, clipped to
  [0, 50] (so a perfect separation also gives 50).
- Points: epsilon in [0, 0.5) scores 1, [0.5, 1) 1/2, [1, 1.5) 1/4, ..., for the bins that end at
  or below ceil(ln(N - 1)); an epsilon past the last bin (so 50 always) scores 0.
F is the mean over the forget set, and the final score F * (RA_u / RA_r) * (TA_u / TA_r) charges
lost utility.

Caveat: the best of tens of thousands of attacks on N values per side overstates epsilon, so two
independent samples of the *same* distribution score well below 1 (about 0.2 for N = 64, as the
official code also gives); compare methods at equal N, and read F against the
retrained-vs-retrained level.

Where docs/metrics.md is silent, the official code decides (see the comments): ties in the
median or the spread, both sides constant (0 / 0 is not under 1%), attacks with FPR or FNR = 1.
Deliberate differences: the official single-threshold grid is float32 (torch.linspace's default
dtype), ours float64; the official rates and epsilons are float32 (agreement to about 1e-6);
where no attack survives at all (both sides constant and equal) the official code fails an
assertion and we give epsilon 0; a nan or inf confidence gives the cap.

Implementation: an attack's (TPR, FPR) depends only on which of the 2N sorted values it calls
positive, so instead of testing all 160,000 interval grid points against every value we find,
for each grid row (one right end and its 400 left ends), the cuts between consecutive sorted
values that hold a grid point, from the linspace arithmetic (checked exactly against the rebuilt
grid points where rounding could matter, so values on a grid point are classified as in the
official code), and look the counts up in an (N+1) x (N+1) table of epsilons. Cost: about
400 x 2N numbers per example, in batches that fit in cache.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

DELTA = 1e-5
EPSILON_CAP = 50.0
PER_UNIT = 100  # grid points per unit of confidence
BUFFER = 2.0  # how far the interval grid reaches past the peaky side
PEAKY_RATIO = 0.01
N_LEFT = math.ceil(2 * BUFFER * PER_UNIT)  # left ends per right end: 400
_NEAR = 1e-6  # grid-index distance below which rounding could matter
_CHUNK = 1 << 20  # grid rows x values per batch of examples, to bound memory (~100 MB)


def logit_scaled_confidence(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """log p_y - log sum_{j != y} p_j, computed stably from logits."""
    logp = F.log_softmax(logits.double(), dim=1)
    log_py = logp.gather(1, y[:, None]).squeeze(1)
    others = logp.clone()
    others[torch.arange(len(y)), y] = -math.inf
    return (log_py - torch.logsumexp(others, dim=1)).numpy()


def _epsilon_table(n: int, delta: float) -> np.ndarray:
    """eps of an attack calling a of the n positives and b of the n negatives positive, [a, b].

    inf for a perfect separation, -inf for a discarded attack.
    """
    tpr = np.arange(n + 1)[:, None] / n
    fpr = np.arange(n + 1)[None, :] / n
    fnr = 1.0 - tpr
    with np.errstate(divide="ignore", invalid="ignore"):
        # FPR or FNR = 1 makes a log argument negative; docs/metrics.md leaves that open,
        # the official code drops the undefined term (nanmax) and the attack if both are
        terms = np.stack([np.log(1 - delta - fpr) - np.log(fnr),
                          np.log(1 - delta - fnr) - np.log(fpr)])  # fmt: skip
    undefined = np.isnan(terms).all(axis=0)
    eps = np.maximum(0.0, np.nanmax(np.where(np.isnan(terms), -np.inf, terms), axis=0))
    eps = np.where(undefined | ((fpr == 0) != (fnr == 0)), -np.inf, eps)
    return np.where((fpr == 0) & (fnr == 0), np.inf, eps)


def _points_at_or_below(z, start, step, stop, n):
    """#{k < n : g_k <= z} on the grid g_k = k * step + start (k < n - 1), g_{n-1} = stop.

    That is numpy.linspace's arithmetic; all arguments broadcast (step finite and > 0). The
    count is floor((z - start) / step) + 1, clipped to [0, n], except where that quotient lies
    within rounding of a whole number (z on or next to a grid point, as with hand-made data):
    there the two neighbouring grid points are rebuilt and compared with z exactly.
    """
    t = np.subtract(z, start)
    t /= step
    k = np.floor(t)
    t -= k
    t -= 0.5
    near = np.abs(t, out=t) > 0.5 - _NEAR  # fractional part within _NEAR of 0 or 1
    count = k + 1
    np.maximum(count, 0, out=count)
    np.minimum(count, n, out=count)
    if near.any():
        where = np.nonzero(near)
        zs, s0, st, sp, ns = (np.broadcast_to(a, count.shape)[where]
                              for a in (z, start, step, stop, n))  # fmt: skip
        k0 = np.clip(k[where], -1, ns - 1)
        exact = k0.copy()
        for k_ in (k0, k0 + 1):
            g = np.where(k_ == ns - 1, sp, k_ * st + s0)
            # beyond either end: an imagined point at -inf (k = -1) or +inf (k = n)
            exact += ((g <= zs) | (k_ < 0)) & (k_ < ns)
        count[where] = exact
    return count


def _realised_cuts(counts_at_values: np.ndarray, n_points) -> np.ndarray:
    """Which cuts of the sorted values some grid point falls into, (..., 2N) -> (..., 2N + 1).

    Cut m lies between sorted values m - 1 and m; a grid point g is in it when
    z_{m-1} < g <= z_m, i.e. when #points <= z_m exceeds #points <= z_{m-1}.
    """
    out = np.empty(counts_at_values.shape[:-1] + (counts_at_values.shape[-1] + 1,), dtype=bool)
    np.greater(counts_at_values[..., 1:], counts_at_values[..., :-1], out=out[..., 1:-1])
    out[..., 0] = counts_at_values[..., 0] > 0
    out[..., -1] = counts_at_values[..., -1] < n_points
    return out


def _pair_eps(cum_pos: np.ndarray, n: int, table: np.ndarray) -> np.ndarray:
    """eps of calling sorted values m .. q-1 positive, as [example, q, m] (nothing if q <= m)."""
    cum_neg = np.arange(cum_pos.shape[1]) - cum_pos
    a = np.maximum(cum_pos[:, :, None] - cum_pos[:, None, :], 0)
    b = np.maximum(cum_neg[:, :, None] - cum_neg[:, None, :], 0)
    return table.ravel()[a * (n + 1) + b]


def _single_threshold_best(z, cum_pos, n, table):
    """Best eps over the single-threshold grid; z: (E, 2N) sorted, cum_pos[:, m]: #positives
    among the m smallest values."""
    lo, hi = z[:, 0], z[:, -1]
    n_t = np.ceil((hi - lo) * PER_UNIT)
    # the official grid is torch.linspace, which rounds to float32 (torch's default dtype) and
    # differs from this float64 grid by about 1e-7 relative: only values that close to a grid
    # point can be classified differently
    step = np.where(n_t > 1, (hi - lo) / np.maximum(n_t - 1, 1), 1.0)
    stop = np.where(n_t > 1, hi, lo)  # a one-point linspace is its start
    at_values = _points_at_or_below(z, lo[:, None], step[:, None], stop[:, None], n_t[:, None])
    realised = _realised_cuts(at_values, n_t)  # "c >= t", t in cut m: values m.. positive
    a = n - cum_pos
    b = n - (np.arange(2 * n + 1) - cum_pos)
    return np.where(realised, table[a, b], -np.inf).max(axis=1)


def _interval_best(z, cum_pos, peaky_min, peaky_max, width, n, table):
    """Best eps over the interval grid; here cum_pos counts the peaky side's values."""
    lo = (peaky_min + width) - BUFFER
    hi = peaky_max + BUFFER
    n_r = np.ceil((hi - lo) * PER_UNIT)  # 400, or 401 through rounding
    i = np.arange(n_r.max())[None, :]
    step_r = ((hi - lo) / (n_r - 1))[:, None]
    right = np.where(i == (n_r - 1)[:, None], hi[:, None], i * step_r + lo[:, None])  # (E, R)
    right[i >= n_r[:, None]] = np.nan  # padding rows: no value is <= nan, no cut realised
    # each right end's left ends: linspace(r - w - 2, r - w + 2, 400)
    start = (right - width[:, None]) - BUFFER
    stop = (right - width[:, None]) + BUFFER
    step_l = (stop - start) / (N_LEFT - 1)
    at_values = _points_at_or_below(z[:, None, :], start[..., None], step_l[..., None],
                                    stop[..., None], N_LEFT)  # fmt: skip
    realised = _realised_cuts(at_values, N_LEFT)  # (E, R, 2N+1), left end l in cut m
    # "l <= c <= r" calls values m .. q-1 positive, with q = #values <= r
    q = (z[:, None, :] <= right[..., None]).sum(axis=2)
    pairs = _pair_eps(cum_pos, n, table)  # (E, 2N+1, 2N+1)
    e, m = pairs.shape[:2]
    rows = (q + (np.arange(e) * m)[:, None]) * m  # flat offset of [example, q_i, 0]
    eps = np.take(pairs, rows[..., None] + np.arange(m))  # (E, R, 2N+1): [e, i, m]
    return np.where(realised, eps, -np.inf).max(axis=(1, 2))


def example_epsilons(
    retrained_scores: np.ndarray, unlearned_scores: np.ndarray, delta: float = DELTA
) -> np.ndarray:
    """Each forget example's epsilon in [0, 50] from (N models x examples) score arrays."""
    r = np.asarray(retrained_scores, dtype=np.float64)
    u = np.asarray(unlearned_scores, dtype=np.float64)
    if r.ndim != 2 or r.shape != u.shape or r.shape[0] < 1:
        raise ValueError(f"need two (models x examples) arrays of one shape, got {r.shape}, "
                         f"{u.shape}")  # fmt: skip
    n, n_examples = r.shape
    spread_r, spread_u = np.ptp(r, axis=0), np.ptp(u, axis=0)
    small, large = np.minimum(spread_r, spread_u), np.maximum(spread_r, spread_u)
    with np.errstate(divide="ignore", invalid="ignore"):
        # both sides constant: 0 / 0 is nan, not peaky, as in the official code
        peaky = small / large < PEAKY_RATIO
    # a diverged model's nan or inf confidence fits no grid (the official code has no rule for
    # it): count the example as told apart, the cap
    peaky |= ~(np.isfinite(r).all(axis=0) & np.isfinite(u).all(axis=0))
    # single threshold: positive = larger median, the unlearned side on a tie
    pos_is_r = np.median(r, axis=0) > np.median(u, axis=0)
    # interval: positive = the peakier side; the official swap on ">=" hands a tie in spread to
    # the smaller-median side
    peaky_is_r = np.where(spread_r == spread_u, ~pos_is_r, spread_r < spread_u)

    table = _epsilon_table(n, delta)
    eps = np.full(n_examples, EPSILON_CAP)
    todo = np.flatnonzero(~peaky)
    per_chunk = max(1, _CHUNK // ((N_LEFT + 1) * 2 * n))
    for chunk in np.array_split(todo, max(1, math.ceil(len(todo) / per_chunk))):
        if not len(chunk):
            continue
        values = np.concatenate([r[:, chunk], u[:, chunk]]).T  # (E, 2N)
        order = np.argsort(values, axis=1, kind="stable")
        z = np.take_along_axis(values, order, axis=1)
        from_r = order < n
        cum_r = np.concatenate([np.zeros((len(chunk), 1), np.int64),
                                np.cumsum(from_r, axis=1)], axis=1)  # fmt: skip
        cum_u = np.arange(2 * n + 1) - cum_r
        best_single = _single_threshold_best(
            z, np.where(pos_is_r[chunk, None], cum_r, cum_u), n, table
        )
        p_is_r = peaky_is_r[chunk]
        peaky_side = np.where(p_is_r, r[:, chunk], u[:, chunk])
        best_interval = _interval_best(
            z, np.where(p_is_r[:, None], cum_r, cum_u), peaky_side.min(axis=0),
            peaky_side.max(axis=0), small[chunk], n, table)  # fmt: skip
        best = np.maximum(best_single, best_interval)
        # no attack survived (both sides constant and equal, say): the official code stops on
        # an assertion here; nothing tells the sides apart, so epsilon 0
        eps[chunk] = np.clip(np.where(best == -np.inf, 0.0, best), 0.0, EPSILON_CAP)
    return eps


def sample_epsilon(retrained: np.ndarray, unlearned: np.ndarray, delta: float = DELTA) -> float:
    """One example's epsilon from the N retrained and N unlearned confidences."""
    r = np.asarray(retrained, dtype=np.float64).reshape(-1, 1)
    u = np.asarray(unlearned, dtype=np.float64).reshape(-1, 1)
    return float(example_epsilons(r, u, delta)[0])


def epsilon_score(epsilon: float, num_models: int, bin_width: float = 0.5) -> float:
    """Points for one example: 1, 1/2, 1/4, ... per bin of epsilon, 0 past ceil(ln(N - 1))."""
    return float(_points(np.array([epsilon], dtype=np.float64), num_models, bin_width)[0])


def _points(eps: np.ndarray, num_models: int, bin_width: float = 0.5) -> np.ndarray:
    # the official loop keeps bin [k w, (k + 1) w) while its end is <= ceil(ln(N - 1))
    max_eps = math.ceil(math.log(num_models - 1)) if num_models > 2 else 0
    n_bins = math.floor(max_eps / bin_width) if max_eps > 0 else 0
    k = np.floor(np.maximum(np.where(np.isnan(eps), np.inf, eps), 0.0) / bin_width)
    return np.where(k < n_bins, 0.5 ** np.minimum(k, n_bins), 0.0)


def forgetting_quality(
    retrained_scores: np.ndarray, unlearned_scores: np.ndarray, delta: float = DELTA
) -> tuple[float, np.ndarray]:
    """F over the forget set from (N models x examples) score arrays; also each example's eps."""
    eps = example_epsilons(retrained_scores, unlearned_scores, delta)
    n = np.asarray(unlearned_scores).shape[0]
    return (float(_points(eps, n).mean()) if eps.size else math.nan), eps


def final_score(f: float, ra_u: float, ra_r: float, ta_u: float, ta_r: float) -> float:
    return f * (ra_u / ra_r) * (ta_u / ta_r)
