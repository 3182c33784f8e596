"""Sharpness and curvature measurements of a training loss (diagnostics, not training code).

All functions take ``(loss_fn, params, batch, ...)`` with ``loss_fn(params, batch) -> scalar``
and ``params`` any pytree of float arrays (Flax linen params, an NNX ``nnx.State``, a dict);
they are pure, jit-able and vmap-able, and every random choice takes a ``key``.

* Hessian spectrum from Hessian-vector products (:mod:`lossjax.diagnostics.hessian`):
  :func:`hessian_top_eigenvalue` (power iteration), :func:`hessian_lanczos` (top-k),
  :func:`hessian_trace` (Hutchinson), :func:`hessian_vector_product`.
* Sharpness (:mod:`lossjax.diagnostics.sharpness`): :func:`epsilon_sharpness` (SAM),
  :func:`m_sharpness`, :func:`adaptive_sharpness` (ASAM), :func:`gradient_norm(s)
  <gradient_norms>` (e.g. ‖∇CE‖ vs ‖∇AACE‖).

* Per-epoch logging (:mod:`lossjax.diagnostics.report`): :func:`sharpness_report` (pure) and
  :func:`make_sharpness_report` (jitted once, returns python floats).

Loops and XLA:CPU: the iterative functions run a ``lax.while_loop`` / ``fori_loop`` by default
(early stopping, compile once). On XLA:CPU convolutions inside a loop body (or a ``lax.cond``
branch) run one to two orders of magnitude slower than the same convolutions outside (jax-ml/jax
issue 12868; about 60× for the digits CNN of ``experiments/``, see
``benchmarks/results/sharpness_measure_cpu.md``). Pass ``unroll=True`` there: the iterations are
traced as straight-line code with the same results (iterations after convergence are computed
and discarded), at the price of compile time growing with the number of iterations.

(Softmax-collapse metrics are a different thing: :mod:`lossjax.losses.diagnostics`.)

Example:
    >>> import jax, jax.numpy as jnp
    >>> from lossjax import diagnostics
    >>> f = lambda w, b: 0.5 * jnp.sum(b * w ** 2)          # Hessian diag(1, 4)
    >>> w, b = jnp.ones(2), jnp.array([1.0, 4.0])
    >>> r = diagnostics.hessian_lanczos(f, w, b, jax.random.key(0), num_iters=2)
    >>> round(float(r.eigenvalues[0]), 4)
    4.0
"""

from lossjax.diagnostics.hessian import (
    LanczosResult,
    PowerIterationResult,
    TraceEstimate,
    hessian_lanczos,
    hessian_top_eigenvalue,
    hessian_trace,
    hessian_vector_product,
)
from lossjax.diagnostics.report import make_sharpness_report, sharpness_report
from lossjax.diagnostics.sharpness import (
    SharpnessResult,
    adaptive_sharpness,
    default_adaptive_mask,
    epsilon_sharpness,
    gradient_norm,
    gradient_norms,
    m_sharpness,
)

__all__ = [
    "hessian_vector_product",
    "hessian_top_eigenvalue",
    "hessian_lanczos",
    "hessian_trace",
    "PowerIterationResult",
    "LanczosResult",
    "TraceEstimate",
    "epsilon_sharpness",
    "adaptive_sharpness",
    "m_sharpness",
    "gradient_norm",
    "gradient_norms",
    "default_adaptive_mask",
    "SharpnessResult",
    "sharpness_report",
    "make_sharpness_report",
]
