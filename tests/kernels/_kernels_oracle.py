"""float64 NumPy oracle for the linear cross-entropy (value, lse and analytic gradients)."""

from __future__ import annotations

import numpy as np


def ref_linear_ce(e, c, t, *, bias=None, softcap=None, smooth=0.0, z_loss=0.0, reduction="mean",
                  ignore_index=-100, cot=None):
    """Returns (loss, lse, dE, dC, db) in float64; gradients of sum(cot * loss) ('none') or of loss."""
    e = np.asarray(e, np.float64)
    c = np.asarray(c, np.float64)
    t = np.asarray(t)
    a = e @ c.T
    if bias is not None:
        a = a + np.asarray(bias, np.float64)
    z = softcap * np.tanh(a / softcap) if softcap else a
    mx = z.max(1, keepdims=True)
    lse = (mx + np.log(np.exp(z - mx).sum(1, keepdims=True)))[:, 0]
    valid = t != ignore_index
    v = c.shape[0]
    ts = np.where(valid, t, 0)
    rows = np.arange(len(t))
    nll = lse - (1 - smooth) * z[rows, ts] - smooth / v * z.sum(1) + z_loss * lse ** 2
    nll = np.where(valid, nll, 0.0)
    n_valid = max(int(valid.sum()), 1)
    if reduction == "mean":
        loss, g = nll.sum() / n_valid, np.where(valid, 1.0 / n_valid, 0.0)
    elif reduction == "sum":
        loss, g = nll.sum(), valid.astype(np.float64)
    else:
        loss = nll
        g = np.where(valid, np.ones(len(t)) if cot is None else np.asarray(cot, np.float64), 0.0)
    p = np.exp(z - lse[:, None])
    oh = np.zeros_like(z)
    oh[rows, ts] = 1.0
    grad = g[:, None] * ((1 + 2 * z_loss * lse[:, None]) * p - (1 - smooth) * oh - smooth / v)
    if softcap:
        grad = grad * (1 - (z / softcap) ** 2)
    return loss, lse, grad @ c, grad.T @ e, grad.sum(0)


def rel(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def make_data(n, d, v, *, seed=0, ignore_frac=0.2, scale=1.0):
    rng = np.random.default_rng(seed)
    e = (rng.standard_normal((n, d)) * scale / d ** 0.25).astype(np.float32)
    c = (rng.standard_normal((v, d)) / d ** 0.25).astype(np.float32)
    t = rng.integers(0, v, n).astype(np.int32)
    t[rng.random(n) < ignore_frac] = -100
    b = (rng.standard_normal(v) * 0.5).astype(np.float32)
    return e, c, t, b


KNOBS = ("block_n", "block_v", "block_d", "v_splits", "bwd_chunk", "num_warps", "num_stages", "fwd_loop",
         "bwd_impl", "interpret", "num_cores", "filter_block")


def split_knobs(impl, kw):
    """Move tuning knobs out of ``kw`` into the backend's ``config=`` (block_v is shared by both)."""
    from lossjax.kernels import ChunkedConfig, PallasConfig

    opts = {k: v for k, v in kw.items() if k not in KNOBS}
    knobs = {k: v for k, v in kw.items() if k in KNOBS}
    if impl == "pallas":
        opts["config"] = PallasConfig(**knobs)
    elif impl in ("chunked", "auto"):
        opts["config"] = ChunkedConfig(**{k: v for k, v in knobs.items() if k in ("block_v", "filter_block")})
    return opts
