"""Task code of the NMT scaling study (:mod:`experiments.nmt_scaling_study`).

* :func:`make_translation_map`, :func:`translate` — a fixed, deterministic synthetic "translation" of
  token sequences: target token ``i`` is a context-dependent substitution of the source token at the
  permuted position ``π(i)`` (table ``A`` when its right neighbour ``s_{π(i)+1}`` is in the lower half
  of the vocabulary, table ``B`` otherwise), and adjacent target pairs are swapped when the first
  source token is odd (a local, source-dependent reordering);
* :func:`param_counts` — encoder / decoder parameter counts of the toy encoder–decoder;
* :func:`train` — every seed of one (encoder width, decoder width) cell at once (``jax.vmap``),
  fresh random source sentences every step; held-out per-token cross-entropy;
* :func:`fit_metrics` — per seed, the bivariate law of Ghorbani et al. (2021) and the univariate
  total-size law fitted to the grid, with leave-one-out prediction errors.

The model is attention-free: encoder = token embedding + a one-hidden-layer MLP over the flattened
source to a code of ``code_dim`` numbers; decoder = a one-hidden-layer MLP that predicts target token
``i`` from ``[code, one-hot(i)]``. ``cfg`` is the study's
:class:`experiments.nmt_scaling_study.NMTScalingConfig`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lossjax import scaling as S

if TYPE_CHECKING:
    from experiments.nmt_scaling_study import NMTScalingConfig

__all__ = ["make_translation_map", "translate", "param_counts", "init_params", "train", "mape", "r_squared",
           "fit_metrics", "FIT_METRICS"]

_MAP_SEED = 2109  # the translation map is one fixed function, the same for every seed and arm
_TEST_SALT = 7740
FIT_METRICS = ("p_enc", "p_dec", "split_ratio", "r2", "mape_in", "loo_mape_bivariate", "loo_mape_total")


# ----------------------------------------------------------------------------------------------
# data


def make_translation_map(vocab: int, length: int) -> dict[str, np.ndarray]:
    """The fixed map: permutation ``perm [L]`` and substitution tables ``sub_a, sub_b [V]`` (numpy)."""
    if vocab < 2 or length < 2:
        raise ValueError(f"`vocab` and `length` must be >= 2, got {vocab}, {length}.")
    rng = np.random.default_rng(_MAP_SEED)
    return {"perm": rng.permutation(length), "sub_a": rng.permutation(vocab), "sub_b": rng.permutation(vocab)}


def translate(src: jax.Array, tmap: dict[str, np.ndarray], vocab: int) -> jax.Array:
    """Targets ``[..., L]`` of source sequences ``src [..., L]`` (integers in ``[0, vocab)``).

    Example:
      >>> m = {"perm": np.array([1, 0]), "sub_a": np.array([0, 1, 2, 3]), "sub_b": np.array([3, 2, 1, 0])}
      >>> translate(jnp.array([2, 1]), m, 4).tolist()  # t0 = B[s1] (s0 = 2 >= 4 // 2), t1 = A[s0]
      [2, 2]
      >>> translate(jnp.array([1, 3]), m, 4).tolist()  # s0 odd: the pair is swapped
      [2, 3]
    """
    perm = jnp.asarray(tmap["perm"])
    length = src.shape[-1]
    tok = src[..., perm]
    right = src[..., (perm + 1) % length]
    sub = jnp.where(right < vocab // 2, jnp.asarray(tmap["sub_a"])[tok], jnp.asarray(tmap["sub_b"])[tok])
    h = length // 2
    swapped = sub[..., :2 * h].reshape(*sub.shape[:-1], h, 2)[..., ::-1].reshape(*sub.shape[:-1], 2 * h)
    if length % 2:
        swapped = jnp.concatenate([swapped, sub[..., -1:]], axis=-1)
    return jnp.where((src[..., :1] % 2) == 1, swapped, sub)


# ----------------------------------------------------------------------------------------------
# model


def param_counts(cfg: NMTScalingConfig) -> tuple[int, int]:
    """``(N_enc, N_dec)``: embedding + encoder MLP; decoder MLP (biases included)."""
    v, L, e, c = cfg.vocab, cfg.length, cfg.embed_dim, cfg.code_dim
    n_enc = v * e + (L * e) * cfg.enc_width + cfg.enc_width + cfg.enc_width * c + c
    n_dec = (c + L) * cfg.dec_width + cfg.dec_width + cfg.dec_width * v + v
    return n_enc, n_dec


def _dense(key, n_in, n_out):
    return {"w": jax.random.normal(key, (n_in, n_out)) / np.sqrt(n_in), "b": jnp.zeros((n_out,))}


def init_params(key: jax.Array, cfg: NMTScalingConfig) -> dict:
    """Parameters of one model (leaf sizes add up to :func:`param_counts`)."""
    k = jax.random.split(key, 5)
    v, L, e, c = cfg.vocab, cfg.length, cfg.embed_dim, cfg.code_dim
    return {"enc": {"emb": jax.random.normal(k[0], (v, e)), "h": _dense(k[1], L * e, cfg.enc_width),
                    "code": _dense(k[2], cfg.enc_width, c)},
            "dec": {"h": _dense(k[3], c + L, cfg.dec_width), "out": _dense(k[4], cfg.dec_width, v)}}


def _logits(params: dict, src: jax.Array) -> jax.Array:
    """``[B, L] -> [B, L, V]``."""
    b, L = src.shape
    enc = params["enc"]
    x = enc["emb"][src].reshape(b, -1)
    h = jax.nn.gelu(x @ enc["h"]["w"] + enc["h"]["b"])
    code = h @ enc["code"]["w"] + enc["code"]["b"]
    pos = jnp.broadcast_to(jnp.eye(L), (b, L, L))
    z = jnp.concatenate([jnp.broadcast_to(code[:, None, :], (b, L, code.shape[-1])), pos], axis=-1)
    dec = params["dec"]
    hd = jax.nn.gelu(z @ dec["h"]["w"] + dec["h"]["b"])
    return hd @ dec["out"]["w"] + dec["out"]["b"]


def _ce(params, src, tgt):
    return optax.softmax_cross_entropy_with_integer_labels(_logits(params, src), tgt).mean()


def train(cfg: NMTScalingConfig) -> dict:
    """Train every seed of one grid cell (``jax.vmap``); held-out per-token cross-entropy (nats)."""
    tmap = make_translation_map(cfg.vocab, cfg.length)
    test_src = jax.random.randint(jax.random.PRNGKey(_TEST_SALT), (cfg.n_test, cfg.length), 0, cfg.vocab)
    test_tgt = translate(test_src, tmap, cfg.vocab)
    sched = optax.cosine_decay_schedule(cfg.learning_rate, cfg.steps)
    opt = optax.adam(sched)

    def one_seed(seed):
        key = jax.random.PRNGKey(seed)
        params = init_params(jax.random.fold_in(key, 0), cfg)
        state = opt.init(params)

        def step(carry, i):
            p, s = carry
            src = jax.random.randint(jax.random.fold_in(jax.random.fold_in(key, 1), i),
                                     (cfg.batch_size, cfg.length), 0, cfg.vocab)
            loss, g = jax.value_and_grad(_ce)(p, src, translate(src, tmap, cfg.vocab))
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss

        (params, _), losses = jax.lax.scan(step, (params, state), jnp.arange(cfg.steps))
        logits = _logits(params, test_src)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, test_tgt).mean()
        acc = (logits.argmax(-1) == test_tgt).mean()
        return ce, acc, losses[-max(1, cfg.steps // 20):].mean()

    ce, acc, tr = jax.jit(jax.vmap(one_seed))(jnp.asarray(cfg.seeds))
    n_enc, n_dec = param_counts(cfg)
    n_leaves = sum(x.size for x in jax.tree_util.tree_leaves(init_params(jax.random.PRNGKey(0), cfg)))
    assert n_leaves == n_enc + n_dec, (n_leaves, n_enc, n_dec)
    return {"metrics": {"test_ce": np.asarray(ce).tolist(), "test_acc": np.asarray(acc).tolist(),
                        "train_ce": np.asarray(tr).tolist()},
            "seeds": list(cfg.seeds), "n_enc": n_enc, "n_dec": n_dec}


# ----------------------------------------------------------------------------------------------
# fits


def mape(pred: np.ndarray, obs: np.ndarray) -> float:
    """Mean absolute percentage error ``100 · mean |pred − obs| / obs``.

    Example:
      >>> round(mape(np.array([1.1, 1.8]), np.array([1.0, 2.0])), 5)
      10.0
    """
    pred, obs = np.asarray(pred, float), np.asarray(obs, float)
    return float(100.0 * np.mean(np.abs(pred - obs) / obs))


def r_squared(pred: np.ndarray, obs: np.ndarray) -> float:
    """Coefficient of determination ``1 − SS_res / SS_tot``.

    Example:
      >>> r_squared(np.array([1.0, 2.0, 4.0]), np.array([1.0, 2.0, 3.0]))
      0.5
    """
    pred, obs = np.asarray(pred, float), np.asarray(obs, float)
    return float(1.0 - np.sum((obs - pred) ** 2) / np.sum((obs - obs.mean()) ** 2))


def fit_metrics(n_enc: np.ndarray, n_dec: np.ndarray, loss: np.ndarray, *, max_iter: int = 300) -> dict:
    """Fit ``L(N_e, N_d) = β (N̄e/N_e)^{p_e} (N̄d/N_d)^{p_d} + L∞`` (references: the grid's geometric
    mean sizes) to one seed's grid; leave-one-out MAPE of that law and of ``L(N) = L∞ + (N0/N)^α`` in the
    total ``N = N_e + N_d``. ``split_ratio = p_e / (p_e + p_d)``: the loss-optimal encoder share
    ``N_e / (N_e + N_d)`` at a fixed total implied by the fit."""
    n_enc, n_dec, loss = (np.asarray(a, np.float64) for a in (n_enc, n_dec, loss))
    law = S.nmt_bivariate_law(float(np.exp(np.log(n_enc).mean())), float(np.exp(np.log(n_dec).mean())))
    x = np.stack([n_enc, n_dec], axis=1)
    fit = S.fit_scaling_law(law, x, loss, max_iter=max_iter)
    pred = np.asarray(fit.predict(x))
    total = n_enc + n_dec
    plc = S.get_law("power_law_plus_constant")
    loo_b, loo_t = [], []
    for i in range(len(loss)):  # leave-one-out as a zero weight: one compiled shape for every fold
        keep = np.arange(len(loss)) != i
        w = keep.astype(np.float64)
        fb = S.fit_scaling_law(law, x, loss, weights=w, init_grid=law.default_grid(x[keep], loss[keep]),
                               max_iter=max_iter)
        loo_b.append(float(np.asarray(fb.predict(x[i:i + 1]))[0]))
        ft = S.fit_scaling_law(plc, total, loss, weights=w, init_grid=plc.default_grid(total[keep, None], loss[keep]),
                               max_iter=max_iter)
        loo_t.append(float(np.asarray(ft.predict(total[i:i + 1]))[0]))
    pe, pd = fit.params["p_enc"], fit.params["p_dec"]
    return {"p_enc": pe, "p_dec": pd, "beta": fit.params["beta"], "l_inf": fit.params["l_inf"],
            "split_ratio": pe / (pe + pd) if pe + pd > 0 else float("nan"), "r2": r_squared(pred, loss),
            "mape_in": mape(pred, loss), "loo_mape_bivariate": mape(loo_b, loss),
            "loo_mape_total": mape(loo_t, loss), "pred": pred.tolist(), "loo_pred": loo_b}
