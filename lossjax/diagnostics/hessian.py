r"""Curvature of a training loss from Hessian-vector products: top eigenvalues and trace.

Every function takes ``(loss_fn, params, batch, key)`` with ``loss_fn(params, batch) ->``
scalar (e.g. the batch-mean cross-entropy) and ``params`` any pytree of float arrays (a Flax
linen ``params`` dict, an NNX ``nnx.State``, a plain dict). The Hessian
:math:`H = ∇^2_w L(w; \text{batch})` is never formed: each step is one forward-over-reverse
product :math:`Hv = \tfrac{d}{dt}∇L(w + tv)|_{t=0}` (``jax.jvp`` of ``jax.grad``; Pearlmutter,
Neural Computation 6(1), 1994), about the cost of two gradient evaluations. Vectors are the
parameters flattened into one array in float32 (float64 for float64 parameters).

All functions are pure and jit-able (``loss_fn`` is a python callable: close over it, or mark
it static) and work under ``jax.vmap`` (e.g. over keys, or over stacked per-seed params).

References: Yao et al., "PyHessian: Neural Networks Through the Lens of the Hessian", IEEE
BigData 2020 (arXiv 1912.07145), Alg. 1 (power iteration) and Alg. 2 (Hutchinson);
Lanczos, J. Res. Nat. Bur. Standards 45, 1950; Ghorbani, Krishnan & Xiao, ICML 2019
(arXiv 1901.10159) §2 (Lanczos on deep-net Hessians); Hutchinson, Commun. Stat. Simul.
Comput. 18(3), 1989.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lossjax.diagnostics import _common as C
from lossjax.losses._core import require_nonnegative

__all__ = [
    "PowerIterationResult",
    "LanczosResult",
    "TraceEstimate",
    "hessian_vector_product",
    "hessian_top_eigenvalue",
    "hessian_lanczos",
    "hessian_trace",
]


class PowerIterationResult(NamedTuple):
    """Result of :func:`hessian_top_eigenvalue`.

    Attributes:
      eigenvalue: the Rayleigh quotient ``λ = vᵀHv`` of the last iterate (float32/float64).
      eigenvector: ``v`` (unit norm over all leaves), a pytree shaped like ``params``.
      num_iterations: int32 number of Hessian-vector products used.
      residual: ``‖Hv − λv‖``; some eigenvalue of ``H`` lies within this distance of ``λ``.
      converged: bool, the relative change of ``λ`` fell to ``tol`` before ``num_iters``.
    """

    eigenvalue: jax.Array
    eigenvector: Any
    num_iterations: jax.Array
    residual: jax.Array
    converged: jax.Array


class LanczosResult(NamedTuple):
    """Result of :func:`hessian_lanczos`.

    Attributes:
      eigenvalues: ``(k,)`` largest Ritz values, descending.
      eigenvectors: Ritz vectors, a pytree shaped like ``params`` with a leading axis ``k``.
      num_iterations: int32 Lanczos steps (= Hessian-vector products) used.
      residuals: ``(k,)`` ``‖Hy_i − θ_i y_i‖`` of each Ritz pair (``|β_j s_{j,i}|``).
      converged: bool, every residual ``≤ tol·|θ_i|``.
    """

    eigenvalues: jax.Array
    eigenvectors: Any
    num_iterations: jax.Array
    residuals: jax.Array
    converged: jax.Array


class TraceEstimate(NamedTuple):
    """Result of :func:`hessian_trace`.

    Attributes:
      trace: mean of the probe values ``zᵀHz``.
      stderr: their sample standard deviation / ``√num_probes`` (NaN for one probe).
      samples: ``(num_probes,)`` the probe values ``z_iᵀHz_i``.
    """

    trace: jax.Array
    stderr: jax.Array
    samples: jax.Array


def hessian_vector_product(loss_fn: C.LossFn, params: Any, batch: Any, vector: Any) -> Any:
    r"""The Hessian-vector product :math:`∇^2_w L(w)\,v` by forward-over-reverse autodiff.

    .. math::
        Hv = \frac{d}{dt}\, ∇_w L(w + t v;\ \text{batch})\Big|_{t=0}

    (Pearlmutter 1994), computed as ``jax.jvp(jax.grad(loss), (params,), (vector,))``.

    Args:
      loss_fn: ``(params, batch) -> scalar`` loss.
      params: pytree of float arrays.
      batch: anything ``loss_fn`` accepts.
      vector: pytree with the structure and shapes of ``params``.

    Returns:
      ``H v`` with the structure of ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda w, b: 0.5 * jnp.sum(b * w ** 2)       # H = diag(b)
        >>> hessian_vector_product(f, jnp.ones(2), jnp.array([1.0, 10.0]), jnp.ones(2))
        Array([ 1., 10.], dtype=float32)
    """
    C.check_problem(loss_fn, params, batch)
    try:
        jax.tree.map(lambda p, v: None, params, vector)
    except (ValueError, TypeError) as err:
        raise ValueError(f"`vector` must have the tree structure of `params`: {err}") from None
    vector = jax.tree.map(lambda p, v: jnp.asarray(v, jnp.result_type(p)), params, vector)
    return jax.jvp(jax.grad(lambda p: loss_fn(p, batch)), (params,), (vector,))[1]


def hessian_top_eigenvalue(
    loss_fn: C.LossFn,
    params: Any,
    batch: Any,
    key: jax.Array,
    *,
    num_iters: int = 20,
    tol: float = 1e-3,
    unroll: bool = False,
) -> PowerIterationResult:
    r"""The dominant Hessian eigenvalue by power iteration on Hessian-vector products.

    .. math::
        v_0 \sim \mathcal N(0, I)/\|\cdot\|,\qquad λ_t = v_tᵀ H v_t,\qquad
        v_{t+1} = H v_t / \|H v_t\|,

    stopping when :math:`|λ_t − λ_{t−1}| ≤ \mathrm{tol}\,|λ_t|` or after ``num_iters``
    products (PyHessian, Yao et al. 2020, Alg. 1). Power iteration converges to the eigenvalue
    of largest **magnitude**; near a minimum that is the top (sharpness) eigenvalue, but where
    a large negative eigenvalue dominates it returns that one — use :func:`hessian_lanczos`
    for the largest algebraic eigenvalues. The error of ``λ`` shrinks like
    :math:`(λ_2/λ_1)^{2t}`; ``residual`` = :math:`\|Hv − λv\|` bounds the distance from ``λ``
    to the spectrum.

    Args:
      loss_fn: ``(params, batch) -> scalar`` loss.
      params: pytree of float arrays (linen params, ``nnx.State``, ...).
      batch: anything ``loss_fn`` accepts.
      key: PRNG key for the start vector.
      num_iters: maximum number of Hessian-vector products (python int ≥ 1).
      tol: relative tolerance on the change of ``λ``; ``0`` runs all ``num_iters`` (fixed cost).
      unroll: see below.

    Returns:
      :class:`PowerIterationResult`. NaN in the loss or params gives a NaN eigenvalue.

    On ``unroll``: trace the iterations as straight-line code instead of a ``lax.while_loop``
    (see :mod:`lossjax.diagnostics`): same results, fixed cost, compile time × iterations;
    use it for conv nets on CPU, where XLA runs convolutions inside loops far slower.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> f = lambda w, b: 0.5 * jnp.sum(b * w ** 2)       # H = diag(b)
        >>> r = hessian_top_eigenvalue(f, jnp.zeros(3), jnp.array([1.0, 2.0, 5.0]),
        ...                            jax.random.key(0), num_iters=100, tol=1e-6)
        >>> round(float(r.eigenvalue), 4), bool(r.converged)
        (5.0, True)
    """
    C.require_count(num_iters, "num_iters")
    require_nonnegative(tol, "tol")
    C.require_key(key)
    C.check_problem(loss_fn, params, batch)
    prob = C.flat_problem(loss_fn, params, batch)
    dt = prob.flat.dtype
    v0, _ = C.safe_normalize(jax.random.normal(key, (prob.size,), dt))
    tol_c = jnp.asarray(tol, dt)
    stop_early = tol_c > 0
    inf = jnp.asarray(jnp.inf, dt)

    def cond(c: tuple) -> jax.Array:
        i, _, _, _, _, done = c
        return (i < num_iters) & ~(done & stop_early)

    def body(c: tuple) -> tuple:
        i, v, _, lam_prev, _, _ = c
        w = prob.hvp(v)
        lam = jnp.vdot(v, w)
        res = jnp.linalg.norm(w - lam * v)
        done = jnp.abs(lam - lam_prev) <= tol_c * jnp.abs(lam)
        v_next, _ = C.safe_normalize(w)
        return i + 1, v_next, v, lam, res, done

    init = (jnp.zeros((), jnp.int32), v0, v0, inf, inf, jnp.zeros((), bool))
    i, _, v, lam, res, done = C.bounded_while(cond, body, init, num_iters, unroll)
    return PowerIterationResult(lam, prob.unravel(v), i, res, done)


def hessian_lanczos(
    loss_fn: C.LossFn,
    params: Any,
    batch: Any,
    key: jax.Array,
    *,
    k: int = 1,
    num_iters: int = 30,
    tol: float = 1e-3,
    unroll: bool = False,
) -> LanczosResult:
    r"""The ``k`` largest Hessian eigenvalues by the Lanczos method (full reorthogonalisation).

    Builds an orthonormal Krylov basis :math:`Q_j = [q_1 … q_j]` of
    :math:`\{q_1, Hq_1, H^2q_1, …\}` from a Gaussian start vector, with

    .. math::
        H Q_j = Q_j T_j + β_j q_{j+1} e_jᵀ,\qquad
        T_j = \mathrm{tridiag}(β_{i−1}, α_i, β_i),\quad α_i = q_iᵀHq_i,

    (Lanczos 1950; Ghorbani et al. 2019 §2) and takes the Ritz pairs :math:`T_j s_i = θ_i s_i`,
    :math:`y_i = Q_j s_i` with residuals :math:`\|Hy_i − θ_iy_i\| = |β_j s_{j,i}|`. It stops
    when the ``k`` largest Ritz values all have residual ``≤ tol·|θ_i|``, after ``num_iters``
    steps, or when the Krylov space fills the parameter space. Each new vector is
    re-orthogonalised against the whole basis (twice), so no spurious copies of converged
    eigenvalues appear; memory is ``num_iters × #params``. When the Krylov space becomes
    invariant (``β_j ≈ 0``) the iteration restarts from a fresh random vector orthogonal to the
    basis, so exactly repeated eigenvalues are found with their multiplicity (a *cluster* of
    nearly equal eigenvalues can still be under-resolved by a single start vector: check with
    another key). Unlike power iteration
    the result is the largest **algebraic** eigenvalues (negative curvature does not mask them),
    and for the same number of products it converges much faster.

    Args:
      loss_fn: ``(params, batch) -> scalar`` loss.
      params: pytree of float arrays.
      batch: anything ``loss_fn`` accepts.
      key: PRNG key (start vector and restart vectors).
      k: number of top eigenvalues (``1 ≤ k ≤ num_iters`` and ``k ≤`` #params).
      num_iters: maximum Lanczos steps = Hessian-vector products (capped at #params).
      tol: relative residual tolerance; ``0`` runs all steps (fixed cost).
      unroll: see below.

    Returns:
      :class:`LanczosResult`; NaN in the loss or params gives NaN eigenvalues.

    On ``unroll``: trace the iterations as straight-line code instead of a ``lax.while_loop``
    (see :mod:`lossjax.diagnostics`): same results, fixed cost, compile time × iterations;
    use it for conv nets on CPU, where XLA runs convolutions inside loops far slower.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> f = lambda w, b: 0.5 * jnp.sum(b * w ** 2)       # H = diag(b)
        >>> r = hessian_lanczos(f, jnp.zeros(4), jnp.array([1.0, -7.0, 3.0, 5.0]),
        ...                     jax.random.key(0), k=2, num_iters=4)
        >>> [round(float(x), 4) for x in r.eigenvalues]
        [5.0, 3.0]
    """
    C.require_count(k, "k")
    C.require_count(num_iters, "num_iters")
    require_nonnegative(tol, "tol")
    C.require_key(key)
    if k > num_iters:
        raise ValueError(f"`k`={k} must be <= `num_iters`={num_iters}.")
    C.check_problem(loss_fn, params, batch)
    prob = C.flat_problem(loss_fn, params, batch)
    n = prob.size
    if k > n:
        raise ValueError(f"`k`={k} exceeds the number of parameters ({n}).")
    m = min(num_iters, n)
    dt = prob.flat.dtype
    tiny = jnp.asarray(jnp.finfo(dt).eps ** 0.5, dt)
    tol_c = jnp.asarray(tol, dt)
    stop_early = tol_c > 0
    idx = jnp.arange(m)
    key0, key_restart = jax.random.split(key)
    q0, _ = C.safe_normalize(jax.random.normal(key0, (n,), dt))

    def reorth(w: jax.Array, basis: jax.Array) -> jax.Array:
        for _ in range(2):  # "twice is enough" (Kahan / Parlett)
            w = w - basis.T @ (basis @ w)
        return w

    def ritz(alpha: jax.Array, beta: jax.Array, j: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Eigenpairs of the active (j+1)×(j+1) block of T, padded below its spectrum."""
        active = idx <= j
        a = jnp.where(active, alpha, 0)
        b = jnp.where(idx < j, beta, 0)[: m - 1]
        bound = jnp.max(jnp.abs(a) + jnp.pad(jnp.abs(b), (0, 1)) + jnp.pad(jnp.abs(b), (1, 0)))
        a = jnp.where(active, a, -(2 * bound + 1))  # padded eigenvalues sit below the active ones
        t = jnp.diag(a) + jnp.diag(b, 1) + jnp.diag(b, -1)
        theta, s = jnp.linalg.eigh(t)
        return theta[::-1][:k], s[:, ::-1][:, :k]

    def cond(c: tuple) -> jax.Array:
        j, *_, done = c
        return (j < m) & ~(done & stop_early)

    def body(c: tuple) -> tuple:
        j, basis, alpha, beta, q, q_prev, b_prev, _, _, _ = c
        basis = basis.at[j].set(q)
        w = prob.hvp(q)
        a = jnp.vdot(q, w)
        w = reorth(w - a * q - b_prev * q_prev, basis)
        b = jnp.linalg.norm(w)
        alpha = alpha.at[j].set(a)
        scale = jnp.max(jnp.abs(alpha)) + jnp.max(beta) + b
        breakdown = b <= tiny * scale
        b_store = jnp.where(breakdown, jnp.zeros_like(b), b)
        beta = beta.at[j].set(b_store)
        theta, s = ritz(alpha, beta, j)
        res = jnp.abs(b * s[j])
        # after a breakdown the basis spans an invariant subspace: its Ritz pairs are exact,
        # but eigenvalues outside it (or further copies of repeated ones) are not yet seen
        done = (j + 1 >= k) & jnp.all(res <= tol_c * jnp.abs(theta)) & (~breakdown | (j + 1 >= n))
        q_next = jax.lax.cond(
            breakdown,
            lambda: reorth(jax.random.normal(jax.random.fold_in(key_restart, j), (n,), dt), basis),
            lambda: w,
        )
        q_next, _ = C.safe_normalize(q_next)
        return j + 1, basis, alpha, beta, q_next, q, b_store, theta, res, done

    zeros_k = jnp.zeros((k,), dt)
    init = (
        jnp.zeros((), jnp.int32),
        jnp.zeros((m, n), dt),
        jnp.zeros((m,), dt),
        jnp.zeros((m,), dt),
        q0,
        jnp.zeros((n,), dt),
        jnp.zeros((), dt),
        zeros_k,
        zeros_k,
        jnp.zeros((), bool),
    )
    j, basis, alpha, beta, _, _, _, theta, res, done = C.bounded_while(cond, body, init, m, unroll)
    _, s = ritz(alpha, beta, j - 1)  # same block as the last iteration's (β_{j-1} is outside it)
    vectors = s.T @ basis  # rows of the basis beyond j are zero, and so are s's padded rows
    finite = jnp.all(jnp.isfinite(jnp.where(idx < j, alpha, 0))) & jnp.all(jnp.isfinite(beta))
    theta = jnp.where(finite, theta, jnp.nan)
    res = jnp.where(finite, res, jnp.nan)
    return LanczosResult(theta, jax.vmap(prob.unravel)(vectors), j, res, done & finite)


def hessian_trace(
    loss_fn: C.LossFn,
    params: Any,
    batch: Any,
    key: jax.Array,
    *,
    num_probes: int = 16,
    probe_batch_size: int | None = None,
    unroll: bool = False,
) -> TraceEstimate:
    r"""The Hessian trace by Hutchinson's estimator with Rademacher probes.

    .. math::
        \mathrm{tr}(H) = \mathbb E_z[zᵀHz],\quad z_i \in \{−1, +1\}^P \text{ i.i.d. uniform},
        \qquad \widehat{\mathrm{tr}} = \frac1N\sum_{i=1}^N z_iᵀHz_i,\qquad
        \mathrm{SE} = \frac{s_z}{\sqrt N}

    (Hutchinson 1989; PyHessian, Yao et al. 2020, Alg. 2). The estimate is unbiased; its
    variance per probe is :math:`2\sum_{i≠j} H_{ij}^2` (zero for a diagonal ``H``, for which
    every probe returns the exact trace). ``stderr`` uses the sample standard deviation
    (``ddof = 1``) of the ``N`` probe values.

    Args:
      loss_fn: ``(params, batch) -> scalar`` loss.
      params: pytree of float arrays.
      batch: anything ``loss_fn`` accepts.
      key: PRNG key for the probes.
      num_probes: ``N`` (python int ≥ 1).
      probe_batch_size: probes evaluated together with ``vmap`` (memory ``×`` this); ``None``
        evaluates them one after another (``jax.lax.map``).
      unroll: evaluate the probe groups as straight-line code instead of ``jax.lax.map``
        (see below).

    Returns:
      :class:`TraceEstimate` ``(trace, stderr, samples)``.

    On ``unroll``: trace the iterations as straight-line code instead of a ``lax.while_loop``
    (see :mod:`lossjax.diagnostics`): same results, fixed cost, compile time × iterations;
    use it for conv nets on CPU, where XLA runs convolutions inside loops far slower.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> f = lambda w, b: 0.5 * jnp.sum(b * w ** 2)       # H = diag(b): exact
        >>> t = hessian_trace(f, jnp.zeros(3), jnp.array([1.0, 2.0, 5.0]), jax.random.key(0))
        >>> float(t.trace), float(t.stderr)
        (8.0, 0.0)
    """
    C.require_count(num_probes, "num_probes")
    if probe_batch_size is not None:
        C.require_count(probe_batch_size, "probe_batch_size")
    C.require_key(key)
    C.check_problem(loss_fn, params, batch)
    prob = C.flat_problem(loss_fn, params, batch)
    dt = prob.flat.dtype
    probes = jax.random.rademacher(key, (num_probes, prob.size), dtype=dt)
    one = lambda z: jnp.vdot(z, prob.hvp(z))  # noqa: E731
    if unroll:
        size = probe_batch_size or 1
        samples = jnp.concatenate(
            [jax.vmap(one)(probes[i : i + size]) for i in range(0, num_probes, size)])
    else:
        samples = jax.lax.map(one, probes, batch_size=probe_batch_size)
    trace = jnp.mean(samples)
    if num_probes > 1:
        stderr = jnp.std(samples, ddof=1) / jnp.sqrt(jnp.asarray(num_probes, dt))
    else:
        stderr = jnp.full((), jnp.nan, dt)
    return TraceEstimate(trace, stderr, samples)
