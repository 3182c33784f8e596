"""Fittable scaling laws: log-space parameterisations, natural-parameter maps and init grids.

A :class:`ScalingLaw` bundles what the robust fitter (:mod:`lossjax.scaling.fitting`) needs:

* ``log_predict(theta, x)`` — the log of the predicted loss for raw parameters ``theta`` ``[P]``
  and inputs ``x`` ``[n, k]``. Positive constants are parameterised by their logarithm and
  summed terms are combined with log-sum-exp, so predictions are positive and the Huber-on-log
  objective is smooth and well scaled (Hoffmann et al. 2022, Approach 3).
* ``to_natural(theta)`` / ``from_natural(params)`` — maps between raw parameters and the keyword
  arguments of the matching function in :mod:`lossjax.scaling.laws`.
* ``default_grid(x, y)`` — a grid of initialisations (data-aware where that helps).

Registered laws: :data:`POWER_LAW`, :data:`POWER_LAW_PLUS_CONSTANT`, :data:`CHINCHILLA`,
:data:`KAPLAN_ND`, :data:`LR_ANNEALING`, and the factory :func:`nmt_bivariate_law`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "ScalingLaw",
    "POWER_LAW",
    "POWER_LAW_PLUS_CONSTANT",
    "CHINCHILLA",
    "KAPLAN_ND",
    "LR_ANNEALING",
    "nmt_bivariate_law",
    "get_law",
    "product_grid",
    "CHINCHILLA_EPOCH_GRID",
]


def product_grid(axes: Mapping[str, Sequence[float]], names: Sequence[str]) -> np.ndarray:
    """Cartesian product of per-parameter values, ordered as ``names`` -> ``[G, P]`` float64.

    Example:
      >>> product_grid({"a": [0.0, 1.0], "b": [2.0]}, ["a", "b"]).tolist()
      [[0.0, 2.0], [1.0, 2.0]]
    """
    missing = [n for n in names if n not in axes]
    extra = [k for k in axes if k not in names]
    if missing or extra:
        raise ValueError(f"init_grid keys must be exactly {list(names)}; missing {missing}, extra {extra}")
    cols = [np.asarray(axes[n], dtype=np.float64).reshape(-1) for n in names]
    if any(c.size == 0 for c in cols):
        raise ValueError("init_grid: every parameter needs at least one value")
    return np.array(list(itertools.product(*cols)), dtype=np.float64).reshape(-1, len(names))


@dataclasses.dataclass(frozen=True, eq=False)
class ScalingLaw:
    """A scaling law in the form the robust fitter consumes.

    Attributes:
      name: short identifier.
      raw_names: names of the raw (fit-space) parameters, in ``theta`` order.
      natural_names: names of the natural parameters (keyword arguments of the law function).
      input_names: names of the input columns of ``x``.
      log_predict: ``(theta [P], x [n, k]) -> log L [n]`` (pure ``jnp``).
      to_natural: ``theta -> {name: value}``.
      from_natural: ``{name: value} -> theta``.
      default_grid: ``(x [n, k], y [n]) -> [G, P]`` initialisations (numpy).
      positive_inputs: per input column, whether values must be > 0 (else >= 0).
      equation: human-readable formula.
    """

    name: str
    raw_names: tuple[str, ...]
    natural_names: tuple[str, ...]
    input_names: tuple[str, ...]
    log_predict: Callable[[jax.Array, jax.Array], jax.Array]
    to_natural: Callable[[jax.Array], dict[str, jax.Array]]
    from_natural: Callable[[Mapping[str, float]], jax.Array]
    default_grid: Callable[[np.ndarray, np.ndarray], np.ndarray]
    positive_inputs: tuple[bool, ...]
    equation: str

    @property
    def num_params(self) -> int:
        return len(self.raw_names)

    @property
    def num_inputs(self) -> int:
        return len(self.input_names)

    def predict(self, params: Mapping[str, float], x: jax.typing.ArrayLike) -> jax.Array:
        """Loss predicted from natural ``params`` at inputs ``x`` (``[n]`` or ``[n, k]``)."""
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.result_type(float))
        if x.ndim == 1:
            x = x[:, None]
        theta = jnp.asarray(self.from_natural(params), x.dtype)
        return jnp.exp(self.log_predict(theta, x))

    def __repr__(self) -> str:
        return f"ScalingLaw({self.name!r}: {self.equation})"


def _lse(*terms: jax.Array) -> jax.Array:
    return jax.nn.logsumexp(jnp.stack(jnp.broadcast_arrays(*terms)), axis=0)


def _log_range(y: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64)
    rng = float(y.max() - y.min())
    return float(np.log(max(rng, 1e-3 * float(y.max()), 1e-12)))


# ------------------------------------------------------------------------------------------
# L = (x0/x)^alpha
# ------------------------------------------------------------------------------------------


def _pl_log_predict(theta, x):
    a, alpha = theta[0], theta[1]
    return a - alpha * jnp.log(x[:, 0])


def _pl_grid(x, y):
    lx = np.log(x[:, 0])
    alphas = [0.05, 0.2, 0.5, 1.0, 2.0]
    rows = []
    for al in alphas:
        # start with the curve through the data's geometric mean
        a0 = float(np.mean(np.log(y)) + al * lx.mean())
        rows.append([a0, al])
    return np.asarray(rows)


POWER_LAW = ScalingLaw(
    name="power_law",
    raw_names=("log_amplitude", "alpha"),
    natural_names=("x0", "alpha"),
    input_names=("x",),
    log_predict=_pl_log_predict,
    to_natural=lambda t: {"x0": jnp.exp(t[0] / t[1]), "alpha": t[1]},
    from_natural=lambda p: jnp.array([p["alpha"] * jnp.log(p["x0"]), p["alpha"]]),
    default_grid=_pl_grid,
    positive_inputs=(True,),
    equation="L = (x0/x)^alpha",
)

# ------------------------------------------------------------------------------------------
# L = L_inf + (x0/x)^alpha
# ------------------------------------------------------------------------------------------


def _plc_log_predict(theta, x):
    e, a, alpha = theta[0], theta[1], theta[2]
    return _lse(e, a - alpha * jnp.log(x[:, 0]))


def _plc_grid(x, y):
    lx_mid = float(np.mean(np.log(x[:, 0])))
    ymin = float(np.min(y))
    es = [np.log(ymin * f) for f in (0.05, 0.5, 0.9)]
    alphas = [0.1, 0.3, 0.7, 1.5]
    amps = [_log_range(y) + s for s in (-2.0, 0.0, 2.0)]
    rows = [[e, amp + al * lx_mid, al] for e in es for amp in amps for al in alphas]
    return np.asarray(rows)


POWER_LAW_PLUS_CONSTANT = ScalingLaw(
    name="power_law_plus_constant",
    raw_names=("log_l_inf", "log_amplitude", "alpha"),
    natural_names=("l_inf", "x0", "alpha"),
    input_names=("x",),
    log_predict=_plc_log_predict,
    to_natural=lambda t: {"l_inf": jnp.exp(t[0]), "x0": jnp.exp(t[1] / t[2]), "alpha": t[2]},
    from_natural=lambda p: jnp.array(
        [jnp.log(p["l_inf"]), p["alpha"] * jnp.log(p["x0"]), p["alpha"]]
    ),
    default_grid=_plc_grid,
    positive_inputs=(True,),
    equation="L = L_inf + (x0/x)^alpha",
)

# ------------------------------------------------------------------------------------------
# Chinchilla: L = E + A/N^alpha + B/D^beta
# ------------------------------------------------------------------------------------------

#: The initialisation grid of Hoffmann et al. / Besiroglu et al. (4,500 starts, raw names
#: ``log_e, log_a, log_b, alpha, beta``).
CHINCHILLA_EPOCH_GRID: dict[str, list[float]] = {
    "log_e": [-1.0, -0.5, 0.0, 0.5, 1.0],
    "log_a": [0.0, 5.0, 10.0, 15.0, 20.0, 25.0],
    "log_b": [0.0, 5.0, 10.0, 15.0, 20.0, 25.0],
    "alpha": [0.0, 0.5, 1.0, 1.5, 2.0],
    "beta": [0.0, 0.5, 1.0, 1.5, 2.0],
}


def _ch_log_predict(theta, x):
    e, a, b, alpha, beta = theta[0], theta[1], theta[2], theta[3], theta[4]
    return _lse(e, a - alpha * jnp.log(x[:, 0]), b - beta * jnp.log(x[:, 1]))


CHINCHILLA = ScalingLaw(
    name="chinchilla",
    raw_names=("log_e", "log_a", "log_b", "alpha", "beta"),
    natural_names=("e", "a", "b", "alpha", "beta"),
    input_names=("n", "d"),
    log_predict=_ch_log_predict,
    to_natural=lambda t: {
        "e": jnp.exp(t[0]), "a": jnp.exp(t[1]), "b": jnp.exp(t[2]), "alpha": t[3], "beta": t[4]
    },
    from_natural=lambda p: jnp.array(
        [jnp.log(p["e"]), jnp.log(p["a"]), jnp.log(p["b"]), p["alpha"], p["beta"]]
    ),
    default_grid=lambda x, y: product_grid(
        CHINCHILLA_EPOCH_GRID, ("log_e", "log_a", "log_b", "alpha", "beta")
    ),
    positive_inputs=(True, True),
    equation="L = E + A/N^alpha + B/D^beta",
)

# ------------------------------------------------------------------------------------------
# Kaplan joint: L = [(Nc/N)^(aN/aD) + Dc/D]^aD
# ------------------------------------------------------------------------------------------


def _kap_log_predict(theta, x):
    log_nc, log_dc, alpha_n, alpha_d = theta[0], theta[1], theta[2], theta[3]
    t_n = (alpha_n / alpha_d) * (log_nc - jnp.log(x[:, 0]))
    t_d = log_dc - jnp.log(x[:, 1])
    return alpha_d * jnp.logaddexp(t_n, t_d)


def _kap_grid(x, y):
    ln_max = float(np.log(x[:, 0]).max())
    ld_max = float(np.log(x[:, 1]).max())
    return product_grid(
        {
            "log_n_c": [ln_max + s for s in (2.0, 10.0, 20.0)],
            "log_d_c": [ld_max + s for s in (2.0, 10.0, 20.0)],
            "alpha_n": [0.05, 0.2, 0.6],
            "alpha_d": [0.05, 0.2, 0.6],
        },
        ("log_n_c", "log_d_c", "alpha_n", "alpha_d"),
    )


KAPLAN_ND = ScalingLaw(
    name="kaplan_nd",
    raw_names=("log_n_c", "log_d_c", "alpha_n", "alpha_d"),
    natural_names=("n_c", "d_c", "alpha_n", "alpha_d"),
    input_names=("n", "d"),
    log_predict=_kap_log_predict,
    to_natural=lambda t: {
        "n_c": jnp.exp(t[0]), "d_c": jnp.exp(t[1]), "alpha_n": t[2], "alpha_d": t[3]
    },
    from_natural=lambda p: jnp.array(
        [jnp.log(p["n_c"]), jnp.log(p["d_c"]), p["alpha_n"], p["alpha_d"]]
    ),
    default_grid=_kap_grid,
    positive_inputs=(True, True),
    equation="L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D",
)

# ------------------------------------------------------------------------------------------
# Ghorbani NMT: L = beta (Ne_ref/Ne)^pe (Nd_ref/Nd)^pd + L_inf
# ------------------------------------------------------------------------------------------


@functools.cache
def nmt_bivariate_law(n_enc_ref: float = 1.0, n_dec_ref: float = 1.0) -> ScalingLaw:
    """Ghorbani et al.'s encoder/decoder law with fixed reference sizes, as a fittable law.

    ``L = β·(N̄e/Ne)^pe·(N̄d/Nd)^pd + L∞``; inputs ``x[:, 0] = Ne``, ``x[:, 1] = Nd``; natural
    parameters ``beta, p_enc, p_dec, l_inf`` (see :func:`lossjax.scaling.laws.nmt_bivariate_loss`).
    Cached per ``(n_enc_ref, n_dec_ref)`` so repeated fits reuse compiled code.

    Example:
      >>> nmt_bivariate_law(1e8, 1e8).natural_names
      ('beta', 'p_enc', 'p_dec', 'l_inf')
    """
    if not (n_enc_ref > 0 and n_dec_ref > 0):
        raise ValueError("n_enc_ref and n_dec_ref must be positive")
    lre, lrd = float(np.log(n_enc_ref)), float(np.log(n_dec_ref))

    def log_predict(theta, x):
        e, lb, pe, pd = theta[0], theta[1], theta[2], theta[3]
        return _lse(e, lb + pe * (lre - jnp.log(x[:, 0])) + pd * (lrd - jnp.log(x[:, 1])))

    def grid(x, y):
        ymin = float(np.min(y))
        return product_grid(
            {
                "log_l_inf": [np.log(ymin * f) for f in (0.3, 0.7, 0.95)],
                "log_beta": [_log_range(y) + s for s in (-2.0, 0.0, 2.0)],
                "p_enc": [0.1, 0.4, 1.0],
                "p_dec": [0.1, 0.4, 1.0],
            },
            ("log_l_inf", "log_beta", "p_enc", "p_dec"),
        )

    return ScalingLaw(
        name=f"nmt_bivariate(n_enc_ref={n_enc_ref:g}, n_dec_ref={n_dec_ref:g})",
        raw_names=("log_l_inf", "log_beta", "p_enc", "p_dec"),
        natural_names=("beta", "p_enc", "p_dec", "l_inf"),
        input_names=("n_enc", "n_dec"),
        log_predict=log_predict,
        to_natural=lambda t: {
            "beta": jnp.exp(t[1]), "p_enc": t[2], "p_dec": t[3], "l_inf": jnp.exp(t[0])
        },
        from_natural=lambda p: jnp.array(
            [jnp.log(p["l_inf"]), jnp.log(p["beta"]), p["p_enc"], p["p_dec"]]
        ),
        default_grid=grid,
        positive_inputs=(True, True),
        equation="L = beta (Ne_ref/Ne)^p_enc (Nd_ref/Nd)^p_dec + L_inf",
    )


# ------------------------------------------------------------------------------------------
# Tissue LR annealing: L = L0 + A S1^-alpha - C S2
# ------------------------------------------------------------------------------------------

_TINY = 1e-30


def _lra_log_predict(theta, x):
    l0, a, alpha, c = theta[0], theta[1], theta[2], theta[3]
    pred = jnp.exp(l0) + jnp.exp(a - alpha * jnp.log(x[:, 0])) - jnp.exp(c) * x[:, 1]
    return jnp.log(jnp.maximum(pred, _TINY))


def _lra_grid(x, y):
    ymin = float(np.min(y))
    ls1_mid = float(np.mean(np.log(x[:, 0])))
    s2max = float(np.max(x[:, 1]))
    s2max = s2max if s2max > 0 else 1.0
    lr = _log_range(y)
    rows = []
    for f in (0.3, 0.7, 0.95):
        for al in (0.2, 0.5, 1.0):
            for sa in (-1.0, 1.0):
                for sc in (-3.0, -1.0, 0.0):
                    rows.append([np.log(ymin * f), lr + sa + al * ls1_mid, al, lr + sc - np.log(s2max)])
    return np.asarray(rows)


LR_ANNEALING = ScalingLaw(
    name="lr_annealing",
    raw_names=("log_l0", "log_a", "alpha", "log_c"),
    natural_names=("l0", "a", "alpha", "c"),
    input_names=("s1", "s2"),
    log_predict=_lra_log_predict,
    to_natural=lambda t: {"l0": jnp.exp(t[0]), "a": jnp.exp(t[1]), "alpha": t[2], "c": jnp.exp(t[3])},
    from_natural=lambda p: jnp.array(
        [jnp.log(p["l0"]), jnp.log(p["a"]), p["alpha"], jnp.log(p["c"])]
    ),
    default_grid=_lra_grid,
    positive_inputs=(True, False),
    equation="L = L0 + A S1^-alpha - C S2",
)

_REGISTRY = {
    law.name: law for law in (POWER_LAW, POWER_LAW_PLUS_CONSTANT, CHINCHILLA, KAPLAN_ND, LR_ANNEALING)
}


def get_law(law: ScalingLaw | str) -> ScalingLaw:
    """Returns ``law`` itself or the registered law of that name.

    Names: ``power_law``, ``power_law_plus_constant``, ``chinchilla``, ``kaplan_nd``,
    ``lr_annealing``, ``nmt_bivariate`` (reference sizes 1; use :func:`nmt_bivariate_law` for
    others).

    Example:
      >>> get_law("chinchilla").natural_names
      ('e', 'a', 'b', 'alpha', 'beta')
    """
    if isinstance(law, ScalingLaw):
        return law
    if isinstance(law, str):
        if law == "nmt_bivariate":
            return nmt_bivariate_law()
        if law in _REGISTRY:
            return _REGISTRY[law]
        raise ValueError(f"law: unknown name {law!r}; known: {sorted(_REGISTRY) + ['nmt_bivariate']}")
    raise TypeError(f"law must be a ScalingLaw or a name, got {type(law).__name__}")
