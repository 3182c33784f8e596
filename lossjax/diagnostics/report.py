r"""One call per epoch: the sharpness numbers a training study logs, as a flat dict.

:func:`sharpness_report` is pure and jit-able (returns scalar arrays);
:func:`make_sharpness_report` wraps it in ``jax.jit`` once for a given ``loss_fn`` and returns
python floats, ready for a JSONL logger.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from lossjax.diagnostics import _common as C
from lossjax.diagnostics.hessian import hessian_lanczos, hessian_trace
from lossjax.diagnostics.sharpness import adaptive_sharpness, epsilon_sharpness, gradient_norm

__all__ = ["sharpness_report", "make_sharpness_report"]


def sharpness_report(
    loss_fn: C.LossFn,
    params: Any,
    batch: Any,
    key: jax.Array,
    *,
    ascent_loss_fn: C.LossFn | None = None,
    rho: float = 0.05,
    asam_rho: float = 0.5,
    asam_eta: float = 0.01,
    num_steps: int = 5,
    lanczos_iters: int = 20,
    num_probes: int = 8,
    unroll: bool = False,
) -> dict[str, jax.Array]:
    r"""Loss, gradient norm(s), top Hessian eigenvalue, Hessian trace and (adaptive) sharpness.

    .. math::
        λ_{max}(∇^2L),\quad \mathrm{tr}(∇^2L) ≈ \tfrac1N\sum zᵀ∇^2Lz,\quad
        \max_{\|ε\|≤ρ}L(w+ε) − L(w),\quad \max_{\|T_w^{-1}ε\|≤ρ_A}L(w+ε) − L(w),\quad \|∇L\|

    — Lanczos (:func:`hessian_lanczos`, ``k = 1``), Hutchinson (:func:`hessian_trace`), SAM's
    ε-sharpness (Foret et al. 2021, §2), ASAM's adaptive sharpness (Kwon et al. 2021, §3) and,
    with ``ascent_loss_fn`` (e.g. the mean AACE loss), the ascent-loss gradient norm that
    AACE-SAM's argument is about (Ratchatorn & Tanaka 2024). Cost ≈ ``2·lanczos_iters +
    2·num_probes + 2·num_steps + 2`` gradient evaluations.

    Args:
      loss_fn: ``(params, batch) -> scalar`` training loss.
      params: pytree of float arrays.
      batch: anything ``loss_fn`` accepts (use a fixed measuring batch across epochs).
      key: PRNG key (Lanczos start vector and Hutchinson probes).
      ascent_loss_fn: optional second loss whose gradient norm is logged as ``ascent_grad_norm``.
      rho: SAM radius of the ε-sharpness.
      asam_rho, asam_eta: ASAM radius and η of the adaptive sharpness.
      num_steps: ascent steps of both sharpness maximisations.
      lanczos_iters: Lanczos steps (tolerance 1e-3).
      num_probes: Hutchinson probes.
      unroll: straight-line loops (conv nets on XLA:CPU; see :mod:`lossjax.diagnostics`).

    Returns:
      ``{"loss", "grad_norm", ["ascent_grad_norm",] "top_eigenvalue", "top_eigenvalue_residual",
      "lanczos_iterations", "trace", "trace_stderr", "eps_sharpness", "adaptive_sharpness"}``
      of scalar arrays.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> f = lambda w, b: 0.5 * jnp.sum(b * w ** 2)        # Hessian diag(1, 4)
        >>> r = sharpness_report(f, jnp.ones(2), jnp.array([1.0, 4.0]), jax.random.key(0))
        >>> round(float(r["top_eigenvalue"]), 4), float(r["trace"])
        (4.0, 5.0)
    """
    k_lz, k_tr = jax.random.split(key)
    lz = hessian_lanczos(loss_fn, params, batch, k_lz, k=1, num_iters=lanczos_iters, tol=1e-3, unroll=unroll)
    tr = hessian_trace(loss_fn, params, batch, k_tr, num_probes=num_probes, unroll=unroll)
    eps = epsilon_sharpness(loss_fn, params, batch, rho=rho, num_steps=num_steps, unroll=unroll)
    ada = adaptive_sharpness(loss_fn, params, batch, rho=asam_rho, eta=asam_eta, num_steps=num_steps,
                             unroll=unroll)
    out = {
        "loss": eps.loss,
        "grad_norm": gradient_norm(loss_fn, params, batch),
    }
    if ascent_loss_fn is not None:
        out["ascent_grad_norm"] = gradient_norm(ascent_loss_fn, params, batch)
    out.update(
        top_eigenvalue=lz.eigenvalues[0],
        top_eigenvalue_residual=lz.residuals[0],
        lanczos_iterations=lz.num_iterations,
        trace=tr.trace,
        trace_stderr=tr.stderr,
        eps_sharpness=eps.sharpness,
        adaptive_sharpness=ada.sharpness,
    )
    return out


def make_sharpness_report(loss_fn: C.LossFn, **options: Any) -> Callable[[Any, Any, jax.Array], dict[str, float]]:
    r"""``(params, batch, key) -> dict of python floats``: :func:`sharpness_report`, jitted once.

    Keep the returned function for the whole run (one compilation); ``options`` are the keyword
    arguments of :func:`sharpness_report` (``ascent_loss_fn``, ``rho``, ...).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> report = make_sharpness_report(lambda w, b: 0.5 * jnp.sum(b * w ** 2), rho=0.1)
        >>> r = report(jnp.zeros(2), jnp.array([1.0, 4.0]), jax.random.key(0))
        >>> r["eps_sharpness"], type(r["trace"]).__name__      # 0 at a stationary point (no key)
        (0.0, 'float')
    """
    if not callable(loss_fn):
        raise TypeError(f"`loss_fn` must be callable, got {type(loss_fn)}.")
    fn = jax.jit(lambda p, b, k: sharpness_report(loss_fn, p, b, k, **options))

    def report(params: Any, batch: Any, key: jax.Array) -> dict[str, float]:
        return {name: float(v) for name, v in jax.device_get(fn(params, batch, key)).items()}

    return report

