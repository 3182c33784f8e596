"""Task ``oneclass`` of the structure study: one-class anomaly detection with the Hyp-OC losses.

Narayan & Patel, "Hyp-OC: Hyperbolic One Class Classification for Face Anti-Spoofing", FG 2024
(arXiv:2404.14406), scaled down to scikit-learn's 8×8 digits:

* **data** (:func:`make_one_class_data`): seed ``s`` makes digit ``s mod 10`` the *normal* (real) class.
  Every digit's images are split once, by a fixed permutation that does not depend on the seed: the
  first ``n_train`` images of the normal digit train, and the held-out images of *all* digits form the
  test set (the normal digit's are label 0, every other digit's are anomalies, label 1). So all seeds
  share one test pool (≈ 800 images, ≈ 80 normal) and differ in which digit is normal.
* **frozen encoder** (:func:`pca_features`), standing in for the paper's pretrained face encoder: a PCA
  fitted on the normal training images only (``dim`` components, *not* whitened, so the features keep
  the normal class's anisotropic spectrum), then one global scale so that the normal training
  features have mean 0 and unit average per-dimension variance. This makes the paper's pseudo-negative
  variance ``σ² = 1`` comparable to the real class's spread (a fixed random ReLU projection was the
  alternative; PCA keeps the pixels' information in fewer dimensions and needs no extra seed). The
  encoder sees only normal images, as a one-class method must.
* **trainable head**: an MLP (``hidden`` ReLU layers) to ``dim`` coordinates, shared by real features
  and pseudo-negatives; then either the Poincaré ball (:func:`lossjax.losses.poincare_expmap0` with
  feature clipping ``clip_r``, curvature ``c``) and the two-class hyperbolic MLR
  (:func:`lossjax.losses.hyperbolic_mlr_logits`, offsets ``p_k = exp_0(u_k)``), or — the Euclidean
  counterpart — no ball, no clipping and the Euclidean MLR ``⟨x − p_k, a_k⟩``.
* **pseudo-negatives** (:func:`lossjax.losses.gaussian_pseudo_negatives`): per step, ``B`` samples of
  ``N(μ, σ² I)`` around ``μ = α·f̄_prev + (1 − α)·f̄`` in the frozen feature space, with the released
  recursion (``f̄_prev`` the previous *batch mean*, zeros at the first step), drawn with a per-seed key.
* **loss**: Hyp-CE (:func:`lossjax.losses.hyperbolic_one_class_cross_entropy_loss`, mean over the ``2B``
  rows) plus, unless ``confusion = "none"``, Hyp-PC on the real rows
  (:func:`lossjax.losses.hyperbolic_pairwise_confusion_loss`, ``.sum() / B``; ``"geodesic"`` or the
  released ``"released"`` distance). The Euclidean head uses softmax CE and the Euclidean pairwise
  confusion ``Σ_i ‖x_i − x_{i+B/2}‖ / B``.
* **optimizer**: gradient-norm clipping (``grad_clip``) before AdamW with a cosine schedule.
* **score and metrics**: the anomaly score is ``softmax(ζ(x))₁`` (the pseudo-negative probability);
  per seed :func:`experiments.tasks.sequence.auroc` (anomalies positive) and :func:`eer_hter` (HTER at
  the equal-error threshold). ``baseline_auroc``: the AUROC of the distance to the normal mean in the
  frozen feature space (no training), as a reference point.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lossjax
from experiments.common import small_models as sm
from experiments.kit.mlp import MLP
from experiments.tasks.sequence import auroc

__all__ = ["make_one_class_data", "pca_features", "auroc", "eer_hter", "train_one_class"]

_SPLIT_SALT = 4049
_INIT_SALT = 23
_NEG_SALT = 101
_MAX_TRAIN = 160  # of the smallest digit's 174 images, so every digit keeps >= 14 held-out images


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int32)


@functools.lru_cache(maxsize=4)
def _split(n_train: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train [10, n_train] indices per digit, test indices (sorted))``: a fixed permutation per digit."""
    _, y = _digits()
    rng = np.random.default_rng(_SPLIT_SALT)
    tr, te = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        tr.append(np.sort(idx[:n_train]))
        te.append(idx[n_train:])
    return np.stack(tr), np.sort(np.concatenate(te))


def make_one_class_data(seed: int, *, n_train: int) -> dict[str, Any]:
    """Images of one one-class problem: digit ``seed mod 10`` is normal.

    Returns ``{"normal": digit, "x_train": [n_train, 64] (normal only), "x_test": [N, 64],
    "y_test": [N] (1 = anomaly), "digit_test": [N]}`` with pixels in ``[0, 1]``; the test pool (the
    held-out images of all digits) is the same for every seed.

    Example:
      >>> d = make_one_class_data(3, n_train=100)
      >>> d["normal"], d["x_train"].shape, d["x_test"].shape, int((d["y_test"] == 0).sum())
      (3, (100, 64), (797, 64), 83)
      >>> bool(np.all((d["digit_test"] == 3) == (d["y_test"] == 0)))
      True
    """
    if not 2 <= n_train <= _MAX_TRAIN:
        raise ValueError(f"`n_train` must lie in [2, {_MAX_TRAIN}], got {n_train}.")
    x, y = _digits()
    tr, te = _split(n_train)
    normal = int(seed) % 10
    return {"normal": normal, "x_train": x[tr[normal]], "x_test": x[te],
            "y_test": (y[te] != normal).astype(np.int32), "digit_test": y[te]}


def pca_features(x_train: np.ndarray, x_test: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The frozen encoder: PCA fitted on ``x_train`` (not whitened), scaled to unit average variance.

    ``f = (x − mean) V_dim / s`` with ``V_dim`` the top ``dim`` right singular vectors of the centred
    ``x_train`` and ``s² = mean_j Var(f_j)`` over the training features, so the training features have
    mean 0 and ``mean_j Var_train(f_j) = 1`` (the components keep their relative variances).

    Example:
      >>> rng = np.random.default_rng(0)
      >>> a = rng.standard_normal((50, 6)) * np.array([3.0, 2.0, 1.0, 0.1, 0.1, 0.1])
      >>> ftr, fte = pca_features(a, a[:4], 3)
      >>> ftr.shape, fte.shape, round(float(ftr.var(0).mean()), 6), bool(np.abs(ftr.mean(0)).max() < 1e-6)
      ((50, 3), (4, 3), 1.0, True)
      >>> bool(np.all(np.diff(ftr.var(0)) < 0))  # not whitened: decreasing variances
      True
    """
    x_train, x_test = np.asarray(x_train, np.float64), np.asarray(x_test, np.float64)
    if not 1 <= dim <= min(x_train.shape):
        raise ValueError(f"`dim` must lie in [1, {min(x_train.shape)}], got {dim}.")
    mu = x_train.mean(0)
    _, _, vt = np.linalg.svd(x_train - mu, full_matrices=False)
    v = vt[:dim].T
    ftr = (x_train - mu) @ v
    s = np.sqrt(ftr.var(0).mean())
    return (ftr / s).astype(np.float32), ((x_test - mu) @ v / s).astype(np.float32)


def eer_hter(scores: np.ndarray, labels: np.ndarray) -> float:
    """Half total error rate at the equal-error threshold (an estimate of the EER).

    The sample is flagged an anomaly when ``score ≥ t``; ``FPR(t)`` is the fraction of normals
    (label 0) flagged and ``FNR(t)`` the fraction of anomalies (label 1) missed. Over ``t`` in the
    distinct scores and ``+∞``, the threshold minimising ``|FPR − FNR|`` (ties: the smallest HTER)
    gives ``HTER = (FPR + FNR) / 2``.

    Example:
      >>> eer_hter(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
      0.5
      >>> eer_hter(np.array([0.1, 0.2, 0.7, 0.9]), np.array([0, 0, 1, 1]))
      0.0
    """
    s, y = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    if s.shape != y.shape or s.ndim != 1 or y.all() or not y.any():
        raise ValueError("`scores` and `labels` must be 1-D of the same length, with both labels present.")
    t = np.concatenate([np.unique(s), [np.inf]])
    flagged = s[None, :] >= t[:, None]
    fpr = flagged[:, ~y].mean(1)
    fnr = 1.0 - flagged[:, y].mean(1)
    hter = (fpr + fnr) / 2
    i = np.lexsort((hter, np.abs(fpr - fnr)))[0]
    return float(hter[i])


def _logits(cfg: Any, p: dict, emb: jax.Array) -> jax.Array:
    """``[n, 2]`` logits of the head's output ``emb [n, dim]`` (ball or Euclidean MLR)."""
    L = lossjax.losses
    if cfg.head == "euclid":
        return ((emb[:, None, :] - p["u"][None]) * p["a"][None]).sum(-1)
    c = float(cfg.curvature)
    return L.hyperbolic_mlr_logits(L.poincare_expmap0(emb, c=c, clip_r=float(cfg.clip_r)),
                                   L.poincare_expmap0(p["u"], c=c), p["a"], c=c)


def _loss(cfg: Any, model: MLP, p: dict, real: jax.Array, neg: jax.Array) -> jax.Array:
    """The training objective on a batch of real features and as many pseudo-negatives."""
    L = lossjax.losses
    b = real.shape[0]
    emb = model.apply({"params": p["net"]}, jnp.concatenate([real, neg]))["out"]
    if cfg.head == "euclid":
        z = _logits(cfg, p, emb)
        y = jnp.concatenate([jnp.zeros(b, jnp.int32), jnp.ones(neg.shape[0], jnp.int32)])
        loss = -jax.nn.log_softmax(z)[jnp.arange(z.shape[0]), y].mean()
        if cfg.confusion != "none":
            d = emb[: b // 2] - emb[b // 2: b]
            loss = loss + jnp.sqrt(jnp.sum(d * d, -1) + 1e-12).sum() / b
        return loss
    c = float(cfg.curvature)
    x = L.poincare_expmap0(emb, c=c, clip_r=float(cfg.clip_r))
    loss = L.hyperbolic_one_class_cross_entropy_loss(x[:b], x[b:], L.poincare_expmap0(p["u"], c=c), p["a"],
                                                    c=c).mean()
    if cfg.confusion != "none":
        loss = loss + L.hyperbolic_pairwise_confusion_loss(x[:b], c=c, distance=cfg.confusion).sum() / b
    return loss


def _make_train_fn(cfg: Any, model: MLP, tx: optax.GradientTransformation, n: int, dim_in: int):
    """Jitted, seed-vmapped ``(params, opt_state, features [S, n, D], key data [S, 2]) -> (params,
    per-epoch mean loss [S, epochs])``: all epochs in one ``lax.scan``; each seed shuffles with its own
    key, draws its pseudo-negatives with another, and carries the previous batch mean."""
    bs, steps, epochs = cfg.batch_size, n // cfg.batch_size, cfg.epochs
    lossjax_pn = lossjax.losses.gaussian_pseudo_negatives

    def one_seed(params, opt_state, feats, key_data):
        key = jax.random.wrap_key_data(key_data)
        k_perm, k_neg = jax.random.fold_in(key, 0), jax.random.fold_in(key, _NEG_SALT)

        def epoch(carry, e):
            perm = jax.random.permutation(jax.random.fold_in(k_perm, e), n)[: steps * bs].reshape(steps, bs)

            def step(carry, inp):
                p, o, prev = carry
                idx, t = inp
                real = feats[idx]
                neg, _, batch_mean = lossjax_pn(jax.random.fold_in(k_neg, t), real, prev,
                                                alpha=float(cfg.pn_alpha), variance=float(cfg.pn_variance))
                loss, g = jax.value_and_grad(lambda q: _loss(cfg, model, q, real, neg))(p)
                upd, o = tx.update(g, o, p)
                return (optax.apply_updates(p, upd), o, batch_mean), loss

            carry, losses = jax.lax.scan(step, carry, (perm, e * steps + jnp.arange(steps)))
            return carry, losses.mean()

        (params, _, _), curve = jax.lax.scan(epoch, (params, opt_state, jnp.zeros(dim_in, jnp.float32)),
                                             jnp.arange(epochs))
        return params, curve

    return jax.jit(jax.vmap(one_seed))


def train_one_class(cfg: Any) -> dict:
    """Train the one-class head of ``cfg`` for every seed at once (seed ``s``: digit ``s mod 10`` is
    normal; see the module docstring); per-seed test ``auroc`` and ``hter``.

    ``cfg`` needs ``head`` (``"euclid"`` | ``"hyper"``), ``confusion`` (``"none"`` | ``"geodesic"`` |
    ``"released"``), ``seeds, oc_n_train, oc_feature_dim, hidden, dim, curvature, clip_r, pn_alpha,
    pn_variance, grad_clip, epochs, batch_size, learning_rate, weight_decay``.
    """
    seeds = [int(s) for s in cfg.seeds]
    ds = [make_one_class_data(s, n_train=cfg.oc_n_train) for s in seeds]
    feats = [pca_features(d["x_train"], d["x_test"], cfg.oc_feature_dim) for d in ds]
    f_train = jnp.asarray(np.stack([f[0] for f in feats]))
    f_test = jnp.asarray(np.stack([f[1] for f in feats]))
    n, D = cfg.oc_n_train, cfg.oc_feature_dim
    model = MLP(tuple(cfg.hidden), cfg.dim)
    rngs = [np.random.default_rng(s + _INIT_SALT) for s in seeds]
    params = {"net": sm.init_stacked(model, D, seeds),
              "u": jnp.asarray(np.stack([0.1 * r.standard_normal((2, cfg.dim)) for r in rngs]), jnp.float32),
              "a": jnp.asarray(np.stack([r.standard_normal((2, cfg.dim)) / np.sqrt(cfg.dim) for r in rngs]),
                               jnp.float32)}
    steps = n // cfg.batch_size
    tx = optax.chain(optax.clip_by_global_norm(float(cfg.grad_clip)),
                     sm.make_optimizer(cfg.learning_rate, cfg.weight_decay, cfg.epochs * steps))
    opt = jax.vmap(tx.init)(params)
    keys = jnp.stack([jax.random.key_data(jax.random.key(s)) for s in seeds])
    params, curve = _make_train_fn(cfg, model, tx, n, D)(params, opt, f_train, keys)
    curve = np.asarray(curve)
    if not np.all(np.isfinite(curve[:, -1])):
        raise FloatingPointError(f"oneclass/{cfg.head}/{cfg.confusion}: non-finite training loss {curve[:, -1]}.")

    @jax.jit
    @jax.vmap
    def score(p, f):
        return jax.nn.softmax(_logits(cfg, p, model.apply({"params": p["net"]}, f)["out"]), -1)[:, 1]

    s = np.asarray(score(params, f_test), np.float64)
    ys = [d["y_test"] for d in ds]
    base = [np.linalg.norm(np.asarray(f[1], np.float64), axis=1) for f in feats]
    return {"head": cfg.head, "confusion": cfg.confusion, "seeds": seeds, "normal_digits": [d["normal"] for d in ds],
            "n_train": n, "n_test": int(ys[0].size), "n_test_normal": [int((y == 0).sum()) for y in ys],
            "num_params": sm.count_params_per_seed(params), "train_loss_curve": curve.tolist(),
            "baseline_auroc": [auroc(b[y == 1], b[y == 0]) for b, y in zip(base, ys)],
            "metrics": {"auroc": [auroc(q[y == 1], q[y == 0]) for q, y in zip(s, ys)],
                        "hter": [eer_hter(q, y) for q, y in zip(s, ys)]}}
