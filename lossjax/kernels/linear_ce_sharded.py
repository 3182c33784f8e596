"""Linear cross-entropy on device meshes: data-parallel rows and the vocab-parallel (Megatron-style) path.

Two ``jax.shard_map`` wrappers around the single-device row computation:

* **Data-parallel rows** (any impl, Explicit meshes): each device computes the per-row losses of its own
  rows of ``E`` against the whole classifier (gathered, as in FSDP); the classifier gradient is summed over
  the row axes by ``shard_map``'s transpose and comes back with the classifier's sharding.
* **Vocab-parallel** (``vocab_axis``): the classifier is split over its vocabulary ``V`` along one mesh
  axis and is never gathered. Device ``k`` holds rows ``[k V_l, (k+1) V_l)`` of C and forms logits only for
  them, streaming tiles with the online (max, sum) state. With the local log-sum-exp ``lse_k``, the local
  target logit ``z_t^k`` (0 unless the target is in shard k) and the local logit sum ``sz_k``::

      M     = pmax_k lse_k
      lse   = M + log psum_k exp(lse_k - M)
      nll   = lse - (1 - a) psum_k z_t^k - (a / V) psum_k sz_k

  (Shoeybi et al., "Megatron-LM", arXiv 1909.08053, Sec. 3, the parallel cross-entropy; the local tiles
  are those of Cut Cross-Entropy, Wijmans et al., arXiv 2411.09009, Sec. 4). The backward recomputes the
  local tiles: with cotangents ``u, w, y`` of ``(lse_k, z_t^k, sz_k)``, ``G = u softmax_k(z) + w onehot +
  y`` (times the softcap derivative), ``dE_k = G C_k`` (summed over the vocab axis by the transpose of the
  replication of E) and ``dC_k = G^T E`` stays local. A V that the axis size does not divide is padded to
  ``ceil(V / m) m`` rows and the padded columns are masked.

In the forward only per-row vectors ([N] floats) cross the vocabulary axis; the backward adds one
all-reduce of dE ([N, D]) over it, as in Megatron.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lossjax.kernels.linear_ce_chunked import accumulate_tile_grads, grad_accumulators, tile_logits, vocab_tiles
from lossjax.kernels.linear_ce_common import (
    LinearCEConfig,
    online_lse_update,
    softcap_grad_factor,
    vary_like,
    varying_axes,
)

__all__ = [
    "input_mesh",
    "is_explicit",
    "data_parallel_rows",
    "vocab_parallel_rows",
    "vocab_parallel_nll_lse",
    "shard_partials",
]


def input_mesh(*xs, min_size: int = 2) -> jax.sharding.AbstractMesh | None:
    """The (abstract) mesh of the first input with a ``NamedSharding`` on a mesh of at least ``min_size``
    devices, else the mesh in context (``jax.set_mesh``); None when there is none."""
    for x in xs:
        if x is None:
            continue
        sh = getattr(jax.typeof(x), "sharding", None)
        mesh = getattr(sh, "mesh", None)
        if mesh is not None and not mesh.empty and mesh.size >= min_size:
            return mesh
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is not None and not mesh.empty and mesh.size >= min_size:
        return mesh
    return None


def is_explicit(mesh) -> bool:
    """True if some axis of ``mesh`` is ``AxisType.Explicit`` (shardings are part of the types)."""
    return any(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types)


def _spec(x, ndim: int) -> tuple:
    sh = getattr(jax.typeof(x), "sharding", None)
    spec = tuple(getattr(sh, "spec", ()) or ())
    return (spec + (None,) * ndim)[:ndim]


def _axes(entry) -> tuple:
    if entry is None:
        return ()
    return tuple(entry) if isinstance(entry, (tuple, list)) else (entry,)


def _drop(entry, axes) -> object:
    kept = tuple(a for a in _axes(entry) if a not in axes)
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else kept


def _lead_spec(e, lead_ndim: int, mesh, *, drop=(), unshard_last: bool = False) -> tuple:
    """Row sharding for ``e`` [..., D]: its own (Explicit) lead spec, or on Auto meshes the first lead
    dimension split over every other mesh axis when that divides it."""
    if is_explicit(mesh):
        spec = [_drop(s, drop) for s in _spec(e, lead_ndim + 1)[:lead_ndim]]
    else:
        axes = tuple(a for a in mesh.axis_names if a not in drop and mesh.shape[a] > 1)
        size = math.prod(mesh.shape[a] for a in axes)
        spec = [None] * lead_ndim
        if axes and e.shape[0] % size == 0:
            spec[0] = axes if len(axes) > 1 else axes[0]
    if unshard_last:
        spec[-1] = None
    return tuple(spec)


def _place(x, mesh, spec):
    """Reshard ``x`` to ``spec`` on Explicit meshes (its transpose reshards the cotangent back); on Auto
    meshes ``shard_map`` inserts the resharding itself."""
    if x is None or not is_explicit(mesh):
        return x
    if _spec(x, x.ndim) == tuple(spec):
        return x
    return jax.sharding.reshard(x, NamedSharding(mesh, P(*spec)))


def _vary(x, axes):
    """Mark ``x`` as varying over ``axes`` inside ``shard_map`` (the transpose sums the cotangent)."""
    if x is None:
        return None
    missing = tuple(a for a in axes if a not in varying_axes(x))
    return lax.pcast(x, missing, to="varying") if missing else x


def _spec_axes(spec) -> tuple:
    return tuple(a for entry in spec for a in _axes(entry))


def data_parallel_rows(rows_fn: Callable, mesh, e, c, bias, t, *, unshard_last: bool, check_vma: bool = True):
    """Run ``rows_fn(e, c, bias, t) -> per-row outputs`` on each device's rows of ``e`` and ``t``.

    The classifier (and bias) are replicated into the ``shard_map`` (an FSDP gather when they are sharded);
    their gradients are summed over the row axes and return with their own sharding. ``check_vma=False``
    is needed by Pallas interpret mode (its HLO interpreter does not track varying axes, jax 0.10).
    """
    lead_ndim = e.ndim - 1
    lead = _lead_spec(e, lead_ndim, mesh, unshard_last=unshard_last)
    row_axes = _spec_axes(lead)
    e = _place(e, mesh, lead + (None,))
    t = _place(t, mesh, lead)
    c = _place(c, mesh, (None, None))
    bias = _place(bias, mesh, (None,))

    vary_axes = row_axes if check_vma else ()

    def local(e, c, bias, t):
        return rows_fn(_vary(e, vary_axes), _vary(c, vary_axes), _vary(bias, vary_axes), _vary(t, vary_axes))

    in_specs = (P(*lead, None), P(None, None), None if bias is None else P(None), P(*lead))
    return jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=P(*lead), check_vma=check_vma)(e, c, bias, t)


def vocab_parallel_rows(rows_fn: Callable, mesh, axis_name: str, e, c, bias, t, *, unshard_last: bool):
    """Run ``rows_fn(e, c_local, bias_local, t, offset)`` with the classifier split over ``axis_name``.

    Pads V to a multiple of the axis size (the padded rows get no gradient), splits C (and bias) over
    ``axis_name`` and E's rows over the other axes; ``rows_fn`` combines the shards with collectives.
    """
    m = mesh.shape[axis_name]
    vocab = c.shape[0]
    vp = -(-vocab // m) * m
    if vp != vocab:
        c = jnp.pad(c, ((0, vp - vocab), (0, 0)))
        bias = None if bias is None else jnp.pad(bias, (0, vp - vocab))
    lead_ndim = e.ndim - 1
    lead = _lead_spec(e, lead_ndim, mesh, drop=(axis_name,), unshard_last=unshard_last)
    row_axes = _spec_axes(lead)
    e = _place(e, mesh, lead + (None,))
    t = _place(t, mesh, lead)
    c = _place(c, mesh, (axis_name, None))
    bias = _place(bias, mesh, (axis_name,))
    both = row_axes + (axis_name,)

    def local(e, c, bias, t):
        # t stays invariant over the vocab axis, so the per-row outputs (after the psums) are too
        return rows_fn(_vary(e, both), _vary(c, both), _vary(bias, both), _vary(t, row_axes))

    in_specs = (P(*lead, None), P(axis_name, None), None if bias is None else P(axis_name), P(*lead))
    return jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=P(*lead))(e, c, bias, t)


# ---- the local (per vocabulary shard) computation -------------------------------------------------------


def _partials_forward(e, c, bias, tl, n_real, cfg: LinearCEConfig):
    n = e.shape[0]
    bv, n_tiles = vocab_tiles(c.shape[0], cfg.block_v)
    vl = c.shape[0]
    iota = lax.broadcasted_iota(jnp.int32, (1, bv), 1)
    tcol = tl[:, None]

    def body(j, carry):
        m, s, zt, sz = carry
        v0 = jnp.minimum(j * bv, vl - bv)
        cols = v0 + iota
        keep = jnp.logical_and(cols >= j * bv, cols < n_real)
        z, _ = tile_logits(e, c, bias, v0, bv, cfg.softcap)
        m, s = online_lse_update(m, s, jnp.where(keep, z, -jnp.inf))
        zt = zt + jnp.sum(jnp.where(jnp.logical_and(cols == tcol, keep), z, 0.0), axis=1)
        if cfg.label_smoothing:
            sz = sz + jnp.sum(jnp.where(keep, z, 0.0), axis=1)
        return m, s, zt, sz

    f32 = jnp.float32
    zero = jnp.zeros((n,), f32)
    init = (jnp.full((n,), -jnp.inf, f32), zero, zero, zero)
    m, s, zt, sz = lax.fori_loop(0, n_tiles, body, vary_like(init, e, c, bias, tl))
    return m + jnp.log(s), zt, sz


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def shard_partials(e, c, bias, tl, n_real, cfg: LinearCEConfig):
    """Per-row ``(lse_k, z_t^k, sz_k)`` (f32) of one vocabulary shard, streamed over tiles of ``cfg.block_v``.

    Args:
      e: [N, D] rows; c: [V_l, D] local classifier rows; bias: [V_l] or None.
      tl: [N] int32 targets relative to the shard (global target minus the shard's first row).
      n_real: int32 scalar, number of real (unpadded) rows of ``c``; the others are masked.
      cfg: static options (softcap, label smoothing, block_v).
    """
    return _partials_forward(e, c, bias, tl, n_real, cfg)


def _partials_fwd(e, c, bias, tl, n_real, cfg):
    out = _partials_forward(e, c, bias, tl, n_real, cfg)
    return out, (e, c, bias, tl, n_real, out[0])


def _partials_bwd(cfg: LinearCEConfig, res, cts):
    e, c, bias, tl, n_real, lse = res
    u, w, y = (x.astype(jnp.float32) for x in cts)
    vl = c.shape[0]
    bv, n_tiles = vocab_tiles(vl, cfg.block_v)
    iota = lax.broadcasted_iota(jnp.int32, (1, bv), 1)
    tcol = tl[:, None]

    def body(j, carry):
        v0 = jnp.minimum(j * bv, vl - bv)
        cols = v0 + iota
        keep = jnp.logical_and(cols >= j * bv, cols < n_real)
        z, c_t = tile_logits(e, c, bias, v0, bv, cfg.softcap)
        p = jnp.where(keep, jnp.exp(z - lse[:, None]), 0.0)
        grad = u[:, None] * p + jnp.where(jnp.logical_and(cols == tcol, keep), w[:, None], 0.0)
        if cfg.label_smoothing:
            grad = grad + jnp.where(keep, y[:, None], 0.0)
        if cfg.softcap is not None:
            grad = grad * softcap_grad_factor(z, cfg.softcap)
        return accumulate_tile_grads(carry, grad, e, c_t, v0, (cols >= j * bv)[0])

    de, dc, db = lax.fori_loop(0, n_tiles, body, grad_accumulators(e, c, bias))
    return de.astype(e.dtype), dc, db, None, None


shard_partials.defvjp(_partials_fwd, _partials_bwd)


def vocab_parallel_nll_lse(e, c, bias, targets, cfg: LinearCEConfig, *, axis_name: str, vocab: int):
    """Per-row ``(nll, lse)`` of rows ``e`` [N, D] when ``c`` [V_l, D] is this device's vocabulary shard.

    Call inside ``shard_map`` with ``axis_name`` manual; ``vocab`` is the unpadded global V and shard k
    holds global rows ``[k V_l, (k+1) V_l)``. Row max, sum of exponentials and target logit are combined
    with ``pmax`` / ``psum`` over ``axis_name`` (equations in the module docstring; Shoeybi et al.,
    arXiv 1909.08053, Sec. 3). ``linear_cross_entropy(..., vocab_axis=...)`` builds this ``shard_map``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jax.sharding import PartitionSpec as P
      >>> from lossjax.kernels import LinearCEConfig
      >>> mesh = jax.make_mesh((1,), ("model",), axis_types=(jax.sharding.AxisType.Auto,))
      >>> e, c = jnp.ones((4, 8)), jnp.zeros((10, 8))
      >>> t = jnp.array([0, 1, 2, -100])
      >>> f = jax.shard_map(lambda e, c, t: vocab_parallel_nll_lse(
      ...     e, c, None, t, LinearCEConfig(block_v=4), axis_name="model", vocab=10),
      ...     mesh=mesh, in_specs=(P(), P("model"), P()), out_specs=P())
      >>> nll, lse = jax.jit(f)(e, c, t)
      >>> [round(float(x), 4) for x in nll], round(float(lse[0]), 4)   # log(10) for uniform logits
      ([2.3026, 2.3026, 2.3026, 0.0], 2.3026)
    """
    vl = c.shape[0]
    offset = lax.axis_index(axis_name) * vl
    n_real = jnp.clip(vocab - offset, 0, vl).astype(jnp.int32)
    lse_k, zt_k, sz_k = shard_partials(e, c, bias, targets - offset, n_real, cfg)
    mx = lax.stop_gradient(lax.pmax(lax.stop_gradient(lse_k), axis_name))
    mx = jnp.where(jnp.isinf(mx), 0.0, mx)  # all shards empty only for -inf rows; NaN stays NaN
    lse = mx + jnp.log(lax.psum(jnp.exp(lse_k - mx), axis_name))
    nll = lse - (1.0 - cfg.label_smoothing) * lax.psum(zt_k, axis_name)
    if cfg.label_smoothing:
        nll = nll - (cfg.label_smoothing / vocab) * lax.psum(sz_k, axis_name)
    return jnp.where(targets != cfg.ignore_index, nll, 0.0), lse
