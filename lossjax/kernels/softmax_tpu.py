r"""Two-pass softmax as Pallas Mosaic-TPU kernels (Dukhan & Ablavatski, arXiv 2001.04438).

Pass 1, grid ``(cdiv(R, br), cdiv(V, bc))`` (rows PARALLEL, columns ARBITRARY): each step reads one
``[br, bc]`` block of x and folds it into a per-row normaliser kept in ``[br, 1]`` VMEM scratch, either the
online state (running max M, rescaled sum S; Milakov & Gimelshein, arXiv 1805.02867) or the
extended-exponent sum ``(m, n)`` with ``sum e^x = m 2^n`` (Dukhan & Ablavatski); the last column
step writes it. Pass 2, grid ``(rows, columns)`` both PARALLEL: ``y = e^(x - M) / S`` (resp.
``m_i / m_sum 2^(n_i - n_sum)``). HBM traffic: two reads and one write of x.

Same maths and guards as :mod:`lossjax.kernels.softmax` (whose element-wise helpers are reused): masked
columns of an edge block are ``-inf`` before any reduction; +inf / NaN rows and all ``-inf`` rows give NaN
as ``jax.nn.softmax`` does. Tiling and the bandwidth roofline are in ``docs/design/kernels_tpu.md``.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.typing import ArrayLike

from lossjax.kernels.softmax import _LN2, _dn, _scale, _softmax2d_bwd, extexp

__all__ = ["two_pass_softmax_tpu", "two_pass_log_softmax_tpu"]

_STATES = ("online", "extexp")


def _pass1_kernel(x_ref, a_ref, b_ref, a_sc, b_sc, *, cols, state):
    j = pl.program_id(1)
    br, bc = x_ref.shape

    @pl.when(j == 0)
    def _init():
        if state == "extexp":  # empty sum: m = 0, n = -inf
            a_sc[...] = jnp.zeros(a_sc.shape, jnp.float32)
            b_sc[...] = jnp.full(b_sc.shape, -jnp.inf, jnp.float32)
        else:  # empty online state: M = -inf, S = 0
            a_sc[...] = jnp.full(a_sc.shape, -jnp.inf, jnp.float32)
            b_sc[...] = jnp.zeros(b_sc.shape, jnp.float32)

    col = j * bc + lax.broadcasted_iota(jnp.int32, (br, bc), 1)
    x = jnp.where(col < cols, x_ref[...].astype(jnp.float32), -jnp.inf)
    if state == "extexp":
        m, n = extexp(x)
        nt = jnp.max(n, axis=1, keepdims=True)
        mt = jnp.sum(_scale(m, _dn(n, nt)), axis=1, keepdims=True)
        ma, na = a_sc[...], b_sc[...]
        n_star = jnp.maximum(na, nt)
        a_sc[...] = _scale(ma, _dn(na, n_star)) + _scale(mt, _dn(nt, n_star))
        b_sc[...] = n_star
    else:
        mx = a_sc[...]
        m_new = jnp.maximum(mx, jnp.max(x, axis=1, keepdims=True))
        shift = jnp.where(m_new == -jnp.inf, 0.0, m_new)
        b_sc[...] = b_sc[...] * jnp.exp(mx - shift) + jnp.sum(jnp.exp(x - shift), axis=1, keepdims=True)
        a_sc[...] = m_new

    @pl.when(j == pl.num_programs(1) - 1)
    def _write():
        a_ref[...] = a_sc[...]
        b_ref[...] = b_sc[...]


def _pass2_kernel(x_ref, a_ref, b_ref, y_ref, *, state, log):
    x = x_ref[...].astype(jnp.float32)
    a, b = a_ref[...], b_ref[...]
    if state == "extexp":
        m, n = extexp(x)
        dn = _dn(n, b)
        y = jnp.log(m) + dn * _LN2 - jnp.log(a) if log else _scale(m, dn) * (1.0 / a)
    else:
        shift = jnp.where(a == -jnp.inf, 0.0, a)
        y = (x - shift) - jnp.log(b) if log else jnp.exp(x - shift) * (1.0 / b)
    y_ref[...] = y.astype(y_ref.dtype)


def _kw(interpret: bool, semantics):
    if interpret:
        return {"interpret": pltpu.InterpretParams()}
    return {"compiler_params": pltpu.CompilerParams(dimension_semantics=semantics)}


def _run(x2, log, state, br, bc, interpret):
    rows, cols = x2.shape
    grid = (pl.cdiv(rows, br), pl.cdiv(cols, bc))
    xspec = pl.BlockSpec((br, bc), lambda i, j: (i, j))
    rspec = pl.BlockSpec((br, 1), lambda i, j: (i, 0))
    row = jax.ShapeDtypeStruct((rows, 1), jnp.float32)
    a, b = pl.pallas_call(
        functools.partial(_pass1_kernel, cols=cols, state=state),
        out_shape=(row, row), grid=grid, in_specs=[xspec], out_specs=(rspec, rspec),
        scratch_shapes=[pltpu.VMEM((br, 1), jnp.float32), pltpu.VMEM((br, 1), jnp.float32)],
        name="lossjax_softmax_tpu_pass1", **_kw(interpret, ("parallel", "arbitrary")),
    )(x2)
    return pl.pallas_call(
        functools.partial(_pass2_kernel, state=state, log=log),
        out_shape=jax.ShapeDtypeStruct(x2.shape, x2.dtype), grid=grid,
        in_specs=[xspec, rspec, rspec], out_specs=xspec,
        name="lossjax_softmax_tpu_pass2", **_kw(interpret, ("parallel", "parallel")),
    )(x2, a, b)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _softmax2d(x2, log: bool, state: str, opts: tuple):
    return _run(x2, log, state, *opts)


def _softmax2d_fwd(x2, log, state, opts):
    y = _softmax2d(x2, log, state, opts)
    return y, y


def _bwd(log, state, opts, y, g):
    return _softmax2d_bwd(log, state, opts, y, g)


_softmax2d.defvjp(_softmax2d_fwd, _bwd)


def _validate_and_run(x, axis, state, block_rows, block_cols, interpret, log):
    x = jnp.asarray(x)
    if x.dtype not in (jnp.float32, jnp.bfloat16, jnp.float16):
        raise TypeError(f"x must be float32, bfloat16 or float16, got {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"x must have rank >= 1, got shape {x.shape}")
    if isinstance(axis, bool) or not isinstance(axis, int) or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis={axis!r} is out of range for x of rank {x.ndim}")
    if state not in _STATES:
        raise ValueError(f"`algorithm` must be one of {_STATES}, got {state!r}")
    if isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 8 or block_rows % 8:
        raise ValueError(f"block_rows must be a positive multiple of 8 (TPU sublanes), got {block_rows!r}")
    if isinstance(block_cols, bool) or not isinstance(block_cols, int) or block_cols < 128 or block_cols % 128:
        raise ValueError(f"block_cols must be a positive multiple of 128 (TPU lanes), got {block_cols!r}")
    if interpret is not None and not isinstance(interpret, bool):
        raise ValueError(f"interpret must be None or a bool, got {interpret!r}")
    if x.size == 0:
        return x
    if interpret is None:
        interpret = jax.default_backend() != "tpu"
    xm = jnp.moveaxis(x, axis, -1)
    shp = xm.shape
    x2 = xm.reshape(-1, shp[-1])
    rows, cols = x2.shape
    br = rows if block_rows >= rows else block_rows  # a full-dimension block is always legal
    bc = cols if block_cols >= cols else block_cols
    y = _softmax2d(x2, log, state, (br, bc, bool(interpret)))
    return jnp.moveaxis(y.reshape(shp), -1, axis)


def two_pass_softmax_tpu(
    x: ArrayLike,
    axis: int = -1,
    *,
    algorithm: Literal["online", "extexp"] = "online",
    block_rows: int = 256,
    block_cols: int = 1024,
    interpret: bool | None = None,
) -> jax.Array:
    r"""Softmax ``y_i = e^{x_i} / sum_j e^{x_j}`` along ``axis`` as two Pallas Mosaic-TPU passes.

    Pass 1 computes the normaliser (``algorithm='online'``: ``(M, S)`` with ``S = sum e^(x - M)``, Milakov &
    Gimelshein, arXiv 1805.02867, Alg. 3; ``algorithm='extexp'``: ``sum e^x = m_sum 2^n_sum``, Dukhan &
    Ablavatski, arXiv 2001.04438); pass 2 writes ``y = e^(x - M) / S``. f32 arithmetic, output in
    the input dtype; the NaN pattern of ``jax.nn.softmax``; differentiable (``dx = y (g - sum g y)``).

    Args:
      x: float32/bfloat16/float16 array. axis: the softmax axis.
      algorithm: 'online' (default) or 'extexp'.
      block_rows, block_cols: VMEM block (multiples of 8 and 128; clamped to the array, so any shape works).
        The default ``[256, 1024]`` f32 block is 1 MiB, 4 MiB double-buffered in and out.
      interpret: Pallas TPU interpret mode; None: True unless the default backend is a TPU.

    Example:
      >>> import jax.numpy as jnp
      >>> y = two_pass_softmax_tpu(jnp.array([[0.0, jnp.log(3.0)]]))
      >>> [round(float(v), 4) for v in y[0]]
      [0.25, 0.75]
    """
    return _validate_and_run(x, axis, algorithm, block_rows, block_cols, interpret, False)


def two_pass_log_softmax_tpu(
    x: ArrayLike,
    axis: int = -1,
    *,
    algorithm: Literal["online", "extexp"] = "online",
    block_rows: int = 256,
    block_cols: int = 1024,
    interpret: bool | None = None,
) -> jax.Array:
    r"""Log-softmax ``x_i - log sum_j e^{x_j}`` as two Pallas Mosaic-TPU passes (see
    :func:`two_pass_softmax_tpu`): ``(x - M) - log S``, or ``log m_i + (n_i - n_sum) ln 2 - log m_sum`` with
    the extended-exponent state (Dukhan & Ablavatski, arXiv 2001.04438).

    Example:
      >>> import jax.numpy as jnp
      >>> float(two_pass_log_softmax_tpu(jnp.zeros(4))[0]) == float(-jnp.log(4.0))
      True
    """
    return _validate_and_run(x, axis, algorithm, block_rows, block_cols, interpret, True)
