r"""Two-pass softmax (Dukhan & Ablavatski, arXiv 2001.04438) and the online (max, sum) state.

The three-pass softmax reads the row three times (max, sum of exponentials, normalise). The two-pass
algorithm drops the max pass: pass 1 accumulates the normaliser in an *extended-exponent* representation
``e^x = m * 2^n`` (m in [sqrt(1/2), sqrt(2)), n integral), whose dynamic range cannot overflow, and pass 2
writes ``y_i = m_i / m_sum * 2^(n_i - n_sum)``. The accumulator merge is

    n* = max(n_a, n_b);   m = m_a * 2^(n_a - n*) + m_b * 2^(n_b - n*)

with exact power-of-two rescaling. The online state of Milakov & Gimelshein (arXiv 1805.02867) keeps
(running max M, rescaled sum S) instead; ``lse = M + log S``. Both are implemented here in pure JAX and as
Pallas kernels (row blocks x column tiles, reductions inside ``fori_loop``; the GPU-correct layout).

Guards (``docs/design/kernels.md`` §3): ``-inf`` maps to (0, -inf); ``+inf`` and NaN give NaN (as
``jax.nn.softmax``); ``n`` is computed from ``clip(x log2 e, +-2^125)``; the reduced argument is clamped to
[-1, 1]. With the two-constant Cody-Waite split used here the reduction is exact only for
|x| below about 2.2e4 without FMA; beyond, results stay within rounding of ``jax.nn.softmax`` on the tested
rows because neighbouring floats are so far apart, but this is a measured, not a proven, property. The
``online`` state has no such caveat and is the default.

Which algorithm runs: :func:`two_pass_softmax` and :func:`two_pass_log_softmax` take
``algorithm='online'`` (the default: Milakov & Gimelshein's online normaliser, two passes, *not* the
Dukhan & Ablavatski representation) or ``algorithm='extexp'`` (the paper's (mantissa, exponent)
algorithm). The older keyword ``state=`` is a deprecated alias of ``algorithm=``.
"""

from __future__ import annotations

import functools
import warnings
from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.typing import ArrayLike

from lossjax.kernels.linear_ce_config import device_core_count

__all__ = [
    "two_pass_softmax",
    "two_pass_log_softmax",
    "extexp",
    "extexp_merge",
    "extexp_row_reduce",
    "online_softmax_update",
    "online_softmax_merge",
    "online_softmax_row_reduce",
    "SOFTMAX_ALGORITHMS",
    "SOFTMAX_STATES",
    "SOFTMAX_IMPLS",
]

SOFTMAX_ALGORITHMS = ("online", "extexp")
SOFTMAX_STATES = SOFTMAX_ALGORITHMS  # the older name of the same tuple
SOFTMAX_IMPLS = ("auto", "jax", "pallas")

_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
_LN2_HI = 0.693359375  # 9 significant bits: n * _LN2_HI is exact for |n| < 2^15
_LN2_LO = -2.12194440e-4
_N_CLIP = 2.0 ** 125


def _pow2(k: jax.Array) -> jax.Array:
    """2^k for integral-valued f32 k <= 0 (or -inf), built from the exponent bits; 0 below 2^-126."""
    kc = jnp.clip(k, -126.0, 0.0)
    bits = (kc.astype(jnp.int32) + 127) << 23
    p = lax.bitcast_convert_type(bits, jnp.float32)
    return jnp.where(k < -126.0, 0.0, p)


def _scale(m: jax.Array, dn: jax.Array) -> jax.Array:
    """m * 2^dn for dn <= 0 (dn = -inf gives 0; NaN propagates through m or dn)."""
    return jnp.where(jnp.isnan(dn), jnp.nan, m * _pow2(dn))


def extexp(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Extended-exponent exponential: ``e^x = m * 2^n`` with n = floor(x log2 e + 1/2), m = e^(x - n ln 2).

    Returns f32 ``(m, n)``; x = -inf gives (0, -inf), x = +inf or NaN gives m = NaN.

    Example:
      >>> import jax.numpy as jnp
      >>> m, n = extexp(jnp.array([0.0, 10.0]))   # e^10 = 1.3444 * 2^14
      >>> [round(float(v), 4) for v in m], [int(v) for v in n]
      ([1.0, 1.3444], [0, 14])
    """
    x = x.astype(jnp.float32)
    n = jnp.floor(jnp.clip(x * _LOG2E, -_N_CLIP, _N_CLIP) + 0.5)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    m = jnp.exp(jnp.clip(r, -1.0, 1.0))
    neg_inf = x == -jnp.inf
    m = jnp.where(neg_inf, 0.0, m)
    m = jnp.where(jnp.logical_or(x == jnp.inf, jnp.isnan(x)), jnp.nan, m)
    n = jnp.where(neg_inf, -jnp.inf, n)
    return m, n


def _dn(n: jax.Array, n_star: jax.Array) -> jax.Array:
    # exponent difference with the (-inf) - (-inf) case mapped to -inf (an empty accumulator scales to 0)
    return jnp.where(n == -jnp.inf, -jnp.inf, n - n_star)


def extexp_merge(m_a, n_a, m_b, n_b) -> tuple[jax.Array, jax.Array]:
    """Merge two extended-exponent sums: n* = max(n_a, n_b), m = m_a 2^(n_a-n*) + m_b 2^(n_b-n*).

    Example:
      >>> import jax.numpy as jnp
      >>> m, n = extexp_merge(*extexp(jnp.array(0.0)), *extexp(jnp.array(10.0)))
      >>> round(float(m), 4), int(n)
      (1.3444, 14)
    """
    n_star = jnp.maximum(n_a, n_b)
    return _scale(m_a, _dn(n_a, n_star)) + _scale(m_b, _dn(n_b, n_star)), n_star


def extexp_row_reduce(m: jax.Array, n: jax.Array, axis: int = -1) -> tuple[jax.Array, jax.Array]:
    """Reduce (m, n) along ``axis`` into one extended-exponent sum (pass 1 on a tile).

    Example:
      >>> import jax.numpy as jnp
      >>> m, n = extexp_row_reduce(*extexp(jnp.array([0.0, 10.0])))   # 1 + e^10 = 1.34445 * 2^14
      >>> round(float(m), 4), int(n)
      (1.3444, 14)
    """
    n_star = jnp.max(n, axis=axis, keepdims=True)
    m_sum = jnp.sum(_scale(m, _dn(n, n_star)), axis=axis)
    return m_sum, jnp.squeeze(n_star, axis)


def online_softmax_update(mx: jax.Array, s: jax.Array, x: jax.Array, axis: int = -1) -> tuple[jax.Array, jax.Array]:
    """Online normaliser update: M' = max(M, max x), S' = S e^(M - M') + sum e^(x - M').

    A running max of -inf uses 0 as the shift (empty tiles contribute 0, not NaN).

    Example:
      >>> import jax.numpy as jnp
      >>> mx, s = online_softmax_update(jnp.array(2.0), jnp.array(1.1353), jnp.array([3.0]))
      >>> float(mx), round(float(s), 4)   # 1.1353 e^-1 + 1
      (3.0, 1.4177)
    """
    x = x.astype(jnp.float32)
    m_new = jnp.maximum(mx, jnp.max(x, axis=axis))
    shift = jnp.where(m_new == -jnp.inf, 0.0, m_new)
    s = s * jnp.exp(mx - shift) + jnp.sum(jnp.exp(x - jnp.expand_dims(shift, axis)), axis=axis)
    return m_new, s


def online_softmax_merge(m_a, s_a, m_b, s_b) -> tuple[jax.Array, jax.Array]:
    """Merge two online states (M, S).

    Example:
      >>> import jax.numpy as jnp
      >>> mx, s = online_softmax_merge(jnp.array(2.0), jnp.array(1.1353), jnp.array(3.0), jnp.array(1.0))
      >>> float(mx), round(float(s), 4)
      (3.0, 1.4177)
    """
    m = jnp.maximum(m_a, m_b)
    shift = jnp.where(m == -jnp.inf, 0.0, m)
    return m, s_a * jnp.exp(m_a - shift) + s_b * jnp.exp(m_b - shift)


def online_softmax_row_reduce(x: jax.Array, axis: int = -1) -> tuple[jax.Array, jax.Array]:
    """(M, S) of a whole tile along ``axis``.

    Example:
      >>> import jax.numpy as jnp
      >>> mx, s = online_softmax_row_reduce(jnp.array([0.0, 2.0]))   # s = e^-2 + 1
      >>> float(mx), round(float(s), 4)
      (2.0, 1.1353)
    """
    red = x.shape[:axis % x.ndim] + x.shape[axis % x.ndim + 1:]
    return online_softmax_update(jnp.full(red, -jnp.inf, jnp.float32), jnp.zeros(red, jnp.float32), x, axis)


# ----------------------------------------------------------------------------------------------------
# Pure-JAX two-pass on [R, V]
# ----------------------------------------------------------------------------------------------------
def _stats_jax(x2, state):
    if state == "extexp":
        m, n = extexp(x2)
        return extexp_row_reduce(m, n, axis=1)
    return online_softmax_row_reduce(x2, axis=1)


def _finish(x2, a, b, state, log):
    """Pass 2: y from the per-row state (a, b) = (m_sum, n_sum) or (M, S)."""
    x = x2.astype(jnp.float32)
    if state == "extexp":
        m, n = extexp(x)
        dn = _dn(n, b[:, None])
        if log:
            return jnp.log(m) + dn * _LN2 - jnp.log(a)[:, None]
        return _scale(m, dn) * (1.0 / a)[:, None]
    shift = jnp.where(a == -jnp.inf, 0.0, a)[:, None]
    if log:
        return (x - shift) - jnp.log(b)[:, None]
    return jnp.exp(x - shift) * (1.0 / b)[:, None]


# ----------------------------------------------------------------------------------------------------
# Pallas kernels
# ----------------------------------------------------------------------------------------------------
def _full_spec(shape):
    nd = len(shape)
    return pl.BlockSpec(tuple(shape), lambda *_: (0,) * nd)


def _prev_pow2(x: int) -> int:
    return 1 << (max(int(x), 1).bit_length() - 1)


def _pass1_kernel(x_ref, a_ref, b_ref, *, rows, cols, br, bc, per, n_tiles, state):
    i = pl.program_id(0)
    sp = pl.program_id(1)
    r0 = jnp.minimum(i * br, rows - br)
    iota = lax.broadcasted_iota(jnp.int32, (1, bc), 1)

    def body(jj, carry):
        a, b = carry
        j = sp * per + jj
        c0 = jnp.minimum(j * bc, cols - bc)
        keep = jnp.logical_and(c0 + iota >= j * bc, j < n_tiles)
        x = x_ref[pl.ds(r0, br), pl.ds(c0, bc)].astype(jnp.float32)
        x = jnp.where(keep, x, -jnp.inf)
        if state == "extexp":
            m, n = extexp(x)
            mt, nt = extexp_row_reduce(m, n, axis=1)
            return extexp_merge(a, b, mt, nt)
        return online_softmax_update(a, b, x, axis=1)

    f32 = jnp.float32
    if state == "extexp":
        init = (jnp.zeros((br,), f32), jnp.full((br,), -jnp.inf, f32))
    else:
        init = (jnp.full((br,), -jnp.inf, f32), jnp.zeros((br,), f32))
    a, b = lax.fori_loop(0, per, body, init)
    a_ref[sp, pl.ds(r0, br)] = a
    b_ref[sp, pl.ds(r0, br)] = b


def _pass2_kernel(x_ref, a_ref, b_ref, y_ref, *, rows, cols, br, bc, state, log):
    i = pl.program_id(0)
    j = pl.program_id(1)
    r0 = jnp.minimum(i * br, rows - br)
    c0 = jnp.minimum(j * bc, cols - bc)  # clamped tail: overlapping columns are rewritten with equal values
    x = x_ref[pl.ds(r0, br), pl.ds(c0, bc)]
    y = _finish(x, a_ref[pl.ds(r0, br)], b_ref[pl.ds(r0, br)], state, log)
    y_ref[pl.ds(r0, br), pl.ds(c0, bc)] = y.astype(y_ref.dtype)


def _blocks(rows, cols, block_rows, block_cols, splits, interpret):
    br = min(block_rows, _prev_pow2(rows))
    bc = min(block_cols, _prev_pow2(cols))
    n_tiles = -(-cols // bc)
    if splits is None:
        # about two programs per core (SM) of the target device
        splits = 1 if interpret else max(1, min(n_tiles, -(-2 * device_core_count() // -(-rows // br))))
    splits = max(1, min(int(splits), n_tiles))
    return br, bc, n_tiles, splits


def _stats_pallas(x2, state, br, bc, n_tiles, splits, interpret, num_warps):
    rows, cols = x2.shape
    per = -(-n_tiles // splits)
    out = jax.ShapeDtypeStruct((splits, rows), jnp.float32)
    cp = None
    if not interpret:
        from jax.experimental.pallas import triton as plt

        cp = plt.CompilerParams(num_warps=num_warps, num_stages=2)
    a, b = pl.pallas_call(
        functools.partial(_pass1_kernel, rows=rows, cols=cols, br=br, bc=bc, per=per, n_tiles=n_tiles, state=state),
        out_shape=(out, out), grid=(-(-rows // br), splits),
        in_specs=[_full_spec(x2.shape)], out_specs=(_full_spec((splits, rows)), _full_spec((splits, rows))),
        interpret=interpret, compiler_params=cp, name="lossjax_softmax_pass1",
    )(x2)
    if state == "extexp":
        n_star = jnp.max(b, axis=0)
        return jnp.sum(_scale(a, _dn(b, n_star[None])), axis=0), n_star
    m, s = a, b
    m_all = jnp.max(m, axis=0)
    shift = jnp.where(m_all == -jnp.inf, 0.0, m_all)
    return m_all, jnp.sum(s * jnp.exp(m - shift[None]), axis=0)


def _finish_pallas(x2, a, b, state, log, br, bc, interpret, num_warps):
    rows, cols = x2.shape
    cp = None
    if not interpret:
        from jax.experimental.pallas import triton as plt

        cp = plt.CompilerParams(num_warps=num_warps, num_stages=2)
    return pl.pallas_call(
        functools.partial(_pass2_kernel, rows=rows, cols=cols, br=br, bc=bc, state=state, log=log),
        out_shape=jax.ShapeDtypeStruct(x2.shape, x2.dtype), grid=(-(-rows // br), -(-cols // bc)),
        in_specs=[_full_spec(x2.shape), _full_spec((rows,)), _full_spec((rows,))],
        out_specs=_full_spec(x2.shape), interpret=interpret, compiler_params=cp, name="lossjax_softmax_pass2",
    )(x2, a, b)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _softmax2d(x2, log: bool, state: str, opts: tuple):
    impl, br, bc, n_tiles, splits, interpret, num_warps = opts
    if impl == "jax":
        a, b = _stats_jax(x2, state)
        return _finish(x2, a, b, state, log).astype(x2.dtype)
    a, b = _stats_pallas(x2, state, br, bc, n_tiles, splits, interpret, num_warps)
    return _finish_pallas(x2, a, b, state, log, br, bc, interpret, num_warps)


def _softmax2d_fwd(x2, log, state, opts):
    y = _softmax2d(x2, log, state, opts)
    return y, y


def _softmax2d_bwd(log, state, opts, y, g):
    y32 = y.astype(jnp.float32)
    g32 = g.astype(jnp.float32)
    if log:
        dx = g32 - jnp.exp(y32) * jnp.sum(g32, axis=1, keepdims=True)
    else:
        dx = y32 * (g32 - jnp.sum(g32 * y32, axis=1, keepdims=True))
    return (dx.astype(y.dtype),)


_softmax2d.defvjp(_softmax2d_fwd, _softmax2d_bwd)


def _resolve_algorithm(algorithm: str | None, state: str | None, fn: str) -> str:
    """The algorithm name from ``algorithm=`` or the deprecated alias ``state=`` (default 'online')."""
    if state is not None:
        warnings.warn(
            f"{fn}(state=...) is deprecated; use algorithm=... (same values: 'online' or 'extexp')",
            DeprecationWarning, stacklevel=3,
        )
        if algorithm is not None and algorithm != state:
            raise ValueError(f"algorithm={algorithm!r} and its deprecated alias state={state!r} disagree")
        if state not in SOFTMAX_ALGORITHMS:
            raise ValueError(
                f"state (deprecated alias of algorithm) must be one of {SOFTMAX_ALGORITHMS}, got {state!r}")
        return state
    if algorithm is None:
        return "online"
    if algorithm not in SOFTMAX_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {SOFTMAX_ALGORITHMS}, got {algorithm!r}")
    return algorithm


def _validate_and_run(x, axis, state, impl, block_rows, block_cols, splits, interpret, num_warps, log):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating) or x.dtype not in (jnp.float32, jnp.bfloat16, jnp.float16):
        raise TypeError(f"x must be float32, bfloat16 or float16, got {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"x must have rank >= 1, got shape {x.shape}")
    if not isinstance(axis, int) or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis={axis!r} is out of range for x of rank {x.ndim}")
    if state not in SOFTMAX_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {SOFTMAX_ALGORITHMS}, got {state!r}")
    if impl not in SOFTMAX_IMPLS:
        raise ValueError(f"impl must be one of {SOFTMAX_IMPLS}, got {impl!r}")
    for name, v in (("block_rows", block_rows), ("block_cols", block_cols)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1 or v & (v - 1):
            raise ValueError(f"{name} must be a power of two (Pallas-Triton loads need power-of-two shapes), got {v!r}")
    if x.size == 0:
        return x
    if jax.default_backend() == "tpu" and impl in ("auto", "pallas") and not interpret:
        # the Mosaic-TPU kernels (docs/design/kernels_tpu.md); imported here: softmax_tpu imports this module
        from lossjax.kernels.softmax_tpu import two_pass_log_softmax_tpu, two_pass_softmax_tpu

        return (two_pass_log_softmax_tpu if log else two_pass_softmax_tpu)(x, axis, algorithm=state, interpret=False)
    if impl == "auto":
        impl = "pallas" if jax.default_backend() == "gpu" else "jax"
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    xm = jnp.moveaxis(x, axis, -1)
    shp = xm.shape
    x2 = xm.reshape(-1, shp[-1])
    br, bc, n_tiles, splits = _blocks(x2.shape[0], x2.shape[1], block_rows, block_cols, splits, interpret)
    opts = (impl, br, bc, n_tiles, splits, bool(interpret), int(num_warps))
    y = _softmax2d(x2, log, state, opts)
    return jnp.moveaxis(y.reshape(shp), -1, axis)


def two_pass_softmax(
    x: ArrayLike,
    axis: int = -1,
    *,
    algorithm: Literal["online", "extexp"] | None = None,
    impl: Literal["auto", "jax", "pallas"] = "auto",
    block_rows: int = 8,
    block_cols: int = 1024,
    splits: int | None = None,
    interpret: bool | None = None,
    num_warps: int = 4,
    state: Literal["online", "extexp"] | None = None,
) -> jax.Array:
    r"""Softmax ``y_i = e^{x_i} / sum_j e^{x_j}`` along ``axis`` with two passes over the input.

    **Which algorithm runs.** By default (``algorithm='online'``) pass 1 keeps the online running
    ``(M, S) = (max_j x_j, sum_j e^{x_j - M})`` of Milakov & Gimelshein (arXiv 1805.02867, Alg. 3) and pass 2
    writes ``y_i = e^{x_i - M} / S``. This is a two-pass softmax but *not* the representation of Dukhan &
    Ablavatski. ``algorithm='extexp'`` runs their algorithm (arXiv 2001.04438, Sec. 3, Alg. 2): pass 1
    accumulates ``sum_j e^{x_j} = m_sum 2^{n_sum}`` in the extended-exponent (mantissa, exponent) form,
    pass 2 writes ``y_i = m_i / m_sum * 2^{n_i - n_sum}``. Both read x twice and write y once, against three
    reads and one write for the three-pass (max, sum-exp, normalise) softmax. The online state is the
    default because it has no argument-range caveat (module docstring; ``docs/design/kernels.md`` §3) and
    was faster on the H100 (``benchmarks/results/kernels_gpu_h100.md``); CPU timings of both against the
    three-pass softmax are in ``benchmarks/results/softmax_cpu.md``.

    Computation is in f32; the output has the input dtype. NaN pattern matches ``jax.nn.softmax`` (rows
    with +inf/NaN or all -inf give NaN). Differentiable (custom VJP: ``dx = y (g - sum g y)``).

    Args:
      x: float array. axis: reduction axis.
      algorithm: 'online' (default when neither ``algorithm`` nor ``state`` is given) or 'extexp'.
      impl: 'jax' (pure JAX), 'pallas' (kernels; interpret mode off-GPU) or 'auto' (pallas on GPU). On a TPU,
        'auto' and 'pallas' run the Mosaic-TPU kernels (:mod:`lossjax.kernels.softmax_tpu`, their own blocks).
      block_rows, block_cols: Pallas tile (powers of two). splits: column splits of pass 1.
      state: deprecated alias of ``algorithm`` (emits a ``DeprecationWarning``).

    Example:
      >>> import jax.numpy as jnp
      >>> from lossjax.kernels import two_pass_softmax
      >>> y = two_pass_softmax(jnp.array([[0.0, jnp.log(3.0)]]), impl="jax")   # algorithm='online'
      >>> [round(float(v), 4) for v in y[0]]
      [0.25, 0.75]
      >>> y = two_pass_softmax(jnp.array([[0.0, jnp.log(3.0)]]), algorithm="extexp", impl="jax")
      >>> [round(float(v), 4) for v in y[0]]
      [0.25, 0.75]
    """
    algorithm = _resolve_algorithm(algorithm, state, "two_pass_softmax")
    return _validate_and_run(x, axis, algorithm, impl, block_rows, block_cols, splits, interpret, num_warps, False)


def two_pass_log_softmax(
    x: ArrayLike,
    axis: int = -1,
    *,
    algorithm: Literal["online", "extexp"] | None = None,
    impl: Literal["auto", "jax", "pallas"] = "auto",
    block_rows: int = 8,
    block_cols: int = 1024,
    splits: int | None = None,
    interpret: bool | None = None,
    num_warps: int = 4,
    state: Literal["online", "extexp"] | None = None,
) -> jax.Array:
    r"""Log-softmax ``x_i - log sum_j e^{x_j}`` in two passes (algorithms as in :func:`two_pass_softmax`).

    ``algorithm='online'`` (default; Milakov & Gimelshein, arXiv 1805.02867): ``log y_i = (x_i - M) - log S``.
    ``algorithm='extexp'`` (Dukhan & Ablavatski, arXiv 2001.04438, Sec. 3):
    ``log y_i = log m_i + (n_i - n_sum) ln 2 - log m_sum`` (no cancellation of the large ``n ln 2`` terms).
    Other arguments as in :func:`two_pass_softmax`; ``state`` is a deprecated alias of ``algorithm``.

    Example:
      >>> import jax.numpy as jnp
      >>> from lossjax.kernels import two_pass_log_softmax
      >>> float(two_pass_log_softmax(jnp.zeros(4), impl="jax")[0]) == float(-jnp.log(4.0))
      True
      >>> round(float(two_pass_log_softmax(jnp.zeros(4), algorithm="extexp", impl="jax")[0]), 6)
      -1.386294
    """
    algorithm = _resolve_algorithm(algorithm, state, "two_pass_log_softmax")
    return _validate_and_run(x, axis, algorithm, impl, block_rows, block_cols, splits, interpret, num_warps, True)
