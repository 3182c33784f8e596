"""Tasks of the sequence study: six small synthetic problems, one per family of losses.

Every generator is deterministic in ``(config, seed)``; every trainer fits all seeds at once
(``jax.vmap`` over stacked data and parameters, full-batch Adam in one ``lax.scan``) and returns
per-seed metric lists. See :mod:`experiments.sequence_study` for what each task tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lossjax.losses as L

__all__ = ["auroc", "ndcg_at_k", "bigram_precision", "fit", "preference_task", "eisl_task", "cprd_task", "dcpdd_task",
           "aggregate_task", "csib_task", "dcpdd_validation", "csib_validation", "TASKS", "VALIDATION",
           "VALIDATION_METRIC", "validate"]

_SALT = {"preference": 7919, "eisl": 7927, "cprd": 7933, "dcpdd": 7937, "aggregate": 7949, "csib": 7951}


# ----------------------------------------------------------------------------------------------
# metrics and the shared trainer
# ----------------------------------------------------------------------------------------------


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count ½.

    Example:
      >>> auroc(np.array([0.9, 0.4]), np.array([0.5, 0.1]))
      0.75
    """
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    gt = (pos[:, None] > neg[None, :]).mean()
    eq = (pos[:, None] == neg[None, :]).mean()
    return float(gt + 0.5 * eq)


def ndcg_at_k(scores: np.ndarray, gains: np.ndarray, k: int) -> float:
    """Mean nDCG@k over rows: ``Σ_{r≤k} g_{π(r)} / log2(r + 1)`` over its ideal value (rows whose
    ideal DCG is 0 are skipped). Gains are used as given (linear gains).

    Example:
      >>> round(ndcg_at_k(np.array([[3.0, 2.0, 1.0]]), np.array([[0.0, 1.0, 2.0]]), 2), 5)
      0.23981
    """
    scores, gains = np.asarray(scores, np.float64), np.asarray(gains, np.float64)
    k = min(k, scores.shape[-1])
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    order = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
    dcg = (np.take_along_axis(gains, order, -1) * disc).sum(-1)
    ideal = (-np.sort(-gains, axis=-1)[:, :k] * disc).sum(-1)
    ok = ideal > 0
    return float((dcg[ok] / ideal[ok]).mean())


def bigram_precision(pred: np.ndarray, ref: np.ndarray) -> float:
    """Clipped bigram precision of ``pred`` against ``ref`` (BLEU's modified 2-gram precision of one
    sentence): the fraction of predicted bigrams found in the reference, each reference bigram
    matching at most as often as it occurs there. Position-free, like BLEU.

    Example:
      >>> bigram_precision(np.array([1, 2, 3, 1, 2]), np.array([0, 1, 2, 3, 4]))
      0.5
    """
    from collections import Counter

    p = Counter(zip(pred[:-1].tolist(), pred[1:].tolist()))
    r = Counter(zip(ref[:-1].tolist(), ref[1:].tolist()))
    total = sum(p.values())
    return float(sum(min(c, r[g]) for g, c in p.items()) / total) if total else 0.0


def fit(loss_fn: Callable[[Any, dict], jax.Array], params: Any, data: dict, *, steps: int, lr: float) -> Any:
    """Full-batch Adam for ``steps`` steps on every seed at once: ``params`` and ``data`` carry a
    leading seed axis; ``loss_fn(params, data)`` is one seed's scalar loss. Returns the trained
    (stacked) parameters; raises ``FloatingPointError`` on a non-finite final loss."""
    tx = optax.adam(lr)

    def one(p, d):
        def body(carry, _):
            p, s = carry
            loss, g = jax.value_and_grad(loss_fn)(p, d)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss

        (p, _), losses = jax.lax.scan(body, (p, tx.init(p)), None, length=steps)
        return p, losses[-1]

    p, last = jax.jit(jax.vmap(one))(params, data)
    if not np.all(np.isfinite(np.asarray(last))):
        raise FloatingPointError(f"non-finite final training loss {np.asarray(last).tolist()}")
    return p


def _stack(ds: list[dict]) -> dict:
    return {k: jnp.asarray(np.stack([d[k] for d in ds])) for k in ds[0]}


def _rng(cfg, seed: int) -> np.random.Generator:
    return np.random.default_rng(seed * 1_000_003 + _SALT[cfg.task])


# ----------------------------------------------------------------------------------------------
# preference optimisation: DPO, SPO, KTO on a contextual bandit with a known reward
# ----------------------------------------------------------------------------------------------

_PREF_D, _PREF_K, _PREF_DEG = 8, 16, 3


def _pref_data(cfg, seed: int) -> dict:
    rng = _rng(cfg, seed)
    d, k = _PREF_D, _PREF_K
    u = rng.standard_normal((k, d)) / np.sqrt(d) * 3.0  # true reward r(x, a) = x·u_a
    w0 = 0.5 * rng.standard_normal((k, d))  # frozen reference policy logits x·w0_a
    x = rng.standard_normal((cfg.n_train + cfg.n_test, d))
    logits0 = x @ w0.T
    p0 = np.exp(logits0 - logits0.max(1, keepdims=True))
    p0 /= p0.sum(1, keepdims=True)
    xt = x[: cfg.n_train]
    a = np.array([rng.choice(k, p=q) for q in p0[: cfg.n_train]])
    b = np.array([rng.choice(k, p=q) for q in p0[: cfg.n_train]])
    r = x @ u.T
    gap = r[np.arange(cfg.n_train), a] - r[np.arange(cfg.n_train), b]
    a_wins = rng.random(cfg.n_train) < 1.0 / (1.0 + np.exp(-gap))  # Bradley-Terry labels
    w, lo = np.where(a_wins, a, b), np.where(a_wins, b, a)
    # SPO's self-supervised "preference degree": a label the data generator knows (here the
    # tercile of the true reward gap), learned by an auxiliary head on the policy's margin
    q = np.quantile(np.abs(gap), [1 / 3, 2 / 3])
    deg = np.digitize(np.abs(gap), q).astype(np.int32)
    return {"x": xt.astype(np.float32), "w": w.astype(np.int32), "l": lo.astype(np.int32), "deg": deg,
            "w0": w0.astype(np.float32), "x_test": x[cfg.n_train:].astype(np.float32),
            "r_test": r[cfg.n_train:].astype(np.float32)}


def preference_task(cfg) -> dict:
    """Train the policy with ``cfg.method`` in {dpo, spo, kto}; test win rate against the
    reference policy under the true reward, expected reward and KL(π ‖ π_ref)."""
    ds = [_pref_data(cfg, s) for s in cfg.seeds]
    data = _stack(ds)
    beta = cfg.beta

    def logp(theta, x):
        return jax.nn.log_softmax(x @ theta.T, -1)

    def loss_fn(p, d):
        lp, lr = logp(p["theta"], d["x"]), jax.lax.stop_gradient(logp(d["w0"], d["x"]))
        pick = lambda m, a: jnp.take_along_axis(m, a[:, None], 1)[:, 0]  # noqa: E731
        pc, pr, rc, rr = pick(lp, d["w"]), pick(lp, d["l"]), pick(lr, d["w"]), pick(lr, d["l"])
        if cfg.method == "dpo":
            return L.dpo_loss(pc, pr, rc, rr, beta=beta).mean()
        if cfg.method == "spo":
            margin = beta * ((pc - rc) - (pr - rr))
            deg_logits = margin[:, None] * p["deg_w"] + p["deg_b"]
            return L.spo_loss(pc, pr, rc, rr, deg_logits, d["deg"], beta=beta, ssl_weight=cfg.ssl_weight).mean()
        # KTO: every pair gives one desirable and one undesirable example; the KL reference point
        # from mismatched pairs (each context with the next context's completion)
        pol = jnp.concatenate([pc, pr])
        ref = jnp.concatenate([rc, rr])
        des = jnp.concatenate([jnp.ones_like(pc, bool), jnp.zeros_like(pr, bool)])
        nxt = jnp.roll(jnp.concatenate([d["w"], d["l"]]), 1)
        lp2, lr2 = jnp.concatenate([lp, lp]), jnp.concatenate([lr, lr])
        return L.kto_loss(pol, ref, des, kl_policy_logps=pick(lp2, nxt), kl_ref_logps=pick(lr2, nxt),
                          beta=beta).mean()

    params = {"theta": data["w0"], "deg_w": jnp.zeros((len(ds), _PREF_DEG)), "deg_b": jnp.zeros((len(ds), _PREF_DEG))}
    params = fit(loss_fn, params, data, steps=cfg.steps, lr=cfg.learning_rate)
    lp = jax.vmap(logp)(params["theta"], data["x_test"])
    lr = jax.vmap(logp)(data["w0"], data["x_test"])
    p, p0, r = np.exp(np.asarray(lp, np.float64)), np.exp(np.asarray(lr, np.float64)), np.asarray(data["r_test"])
    beats = (r[..., :, None] > r[..., None, :]) + 0.5 * (r[..., :, None] == r[..., None, :])
    win = np.einsum("sna,snb,snab->sn", p, p0, beats).mean(-1)
    kl = (p * (np.asarray(lp, np.float64) - np.asarray(lr, np.float64))).sum(-1).mean(-1)
    return {"metrics": {"win_rate": win.tolist(), "reward": (p * r).sum(-1).mean(-1).tolist(),
                        "ref_reward": (p0 * r).sum(-1).mean(-1).tolist(), "kl_to_ref": kl.tolist()}}


# ----------------------------------------------------------------------------------------------
# EISL: a token-mapping task whose training targets are often shifted by one position
# ----------------------------------------------------------------------------------------------

_SEQ_V, _SEQ_T = 10, 10


def _eisl_data(cfg, seed: int) -> dict:
    rng = _rng(cfg, seed)
    perm = rng.permutation(_SEQ_V)  # the true map y_t = perm[x_t]
    n = cfg.n_train + cfg.n_test
    x = rng.integers(0, _SEQ_V, (n, _SEQ_T))
    y = perm[x]
    yt = y[: cfg.n_train].copy()
    shift = rng.random(cfg.n_train) < cfg.noise  # noisy alignment: target delayed by one token
    yt[shift, 1:] = y[: cfg.n_train][shift, :-1]
    yt[shift, 0] = rng.integers(0, _SEQ_V, int(shift.sum()))
    return {"x": x[: cfg.n_train].astype(np.int32), "y": yt.astype(np.int32),
            "x_test": x[cfg.n_train:].astype(np.int32), "y_test": y[cfg.n_train:].astype(np.int32)}


def _window_logits(e: jax.Array, x: jax.Array) -> jax.Array:
    """Per-position logits from the tokens at t−1, t, t+1 (zero-padded ends): ``[n, T, V]``."""
    oh = jax.nn.one_hot(x, _SEQ_V)
    pad = jnp.zeros_like(oh[:, :1])
    prev = jnp.concatenate([pad, oh[:, :-1]], 1)
    nxt = jnp.concatenate([oh[:, 1:], pad], 1)
    return prev @ e[0] + oh @ e[1] + nxt @ e[2]


def eisl_task(cfg) -> dict:
    """Train with CE, EISL (bigram) or their mix ``(1−w)·CE + w·EISL``; clean test token accuracy."""
    ds = [_eisl_data(cfg, s) for s in cfg.seeds]
    data = _stack(ds)
    w = {"ce": 0.0, "eisl": 1.0, "eisl_mix": cfg.eisl_weight}[cfg.method]

    def loss_fn(e, d):
        logits = _window_logits(e, d["x"])
        out = 0.0
        if w < 1.0:
            out = (1.0 - w) * optax.softmax_cross_entropy_with_integer_labels(logits, d["y"]).mean()
        if w > 0.0:
            out = out + w * L.eisl_loss(logits, d["y"], ngrams=(2,)).mean()
        return out

    key = jax.random.split(jax.random.key(0), len(ds))
    e0 = jax.vmap(lambda k: 0.01 * jax.random.normal(k, (3, _SEQ_V, _SEQ_V)))(key)
    e = fit(loss_fn, e0, data, steps=cfg.steps, lr=cfg.learning_rate)
    pred = np.asarray(jax.vmap(_window_logits)(e, data["x_test"])).argmax(-1)
    y = np.asarray(data["y_test"])
    acc = (pred == y).mean((-1, -2))
    bp = [float(np.mean([bigram_precision(a, b) for a, b in zip(pred[i], y[i])])) for i in range(len(ds))]
    return {"metrics": {"test_token_acc": acc.tolist(), "bigram_precision": bp}}


# ----------------------------------------------------------------------------------------------
# CPRD: ranking distillation from a cross-encoder-like teacher to a dual-encoder student
# ----------------------------------------------------------------------------------------------

_CP_D, _CP_N, _CP_H = 16, 32, 6


def _cprd_data(cfg, seed: int) -> dict:
    rng = _rng(cfg, seed)
    a = rng.standard_normal((_CP_D, _CP_D)) / np.sqrt(_CP_D)
    b = rng.standard_normal((_CP_D, _CP_D)) / np.sqrt(_CP_D)
    n = cfg.n_train + cfg.n_test
    q = rng.standard_normal((n, _CP_D))
    c = rng.standard_normal((n, _CP_N, _CP_D))
    # the teacher ("cross-encoder") score: bilinear plus an interaction a dual encoder cannot express
    t = np.einsum("nd,de,nke->nk", q, a, c) + 0.5 * np.einsum("nd,de,nke->nk", q, b, c) ** 2 / np.sqrt(_CP_D)
    pos = t.argmax(-1)
    return {"q": q[: cfg.n_train].astype(np.float32), "c": c[: cfg.n_train].astype(np.float32),
            "t": t[: cfg.n_train].astype(np.float32), "pos": pos[: cfg.n_train].astype(np.int32),
            "q_test": q[cfg.n_train:].astype(np.float32), "c_test": c[cfg.n_train:].astype(np.float32),
            "t_test": t[cfg.n_train:].astype(np.float32)}


def _student(p: dict, q: jax.Array, c: jax.Array) -> jax.Array:
    return jnp.einsum("nh,nkh->nk", q @ p["wq"], c @ p["wc"])


def cprd_task(cfg) -> dict:
    """Student = InfoNCE on the teacher's top candidate + ``λ``·(nothing | CPRD | listwise KD);
    test nDCG@10 (graded by the teacher's rank) and recall@10 of the teacher's top 10."""
    ds = [_cprd_data(cfg, s) for s in cfg.seeds]
    data = _stack(ds)
    tau = cfg.temperature

    def loss_fn(p, d):
        s = _student(p, d["q"], d["c"])
        loss = optax.softmax_cross_entropy_with_integer_labels(s / tau, d["pos"]).mean()
        if cfg.method == "cprd":
            not_pos = jnp.arange(_CP_N)[None, :] != d["pos"][:, None]
            loss = loss + cfg.distill_weight * L.cprd_loss(s, d["t"], num_hard=cfg.num_hard, temperature=tau,
                                                           where=not_pos).mean()
        elif cfg.method == "listwise_kd":
            kt = cfg.kd_temperature
            pt = jax.nn.softmax(d["t"] / kt, -1)
            kd = jnp.sum(pt * (jnp.log(pt + 1e-30) - jax.nn.log_softmax(s / kt, -1)), -1)
            loss = loss + cfg.distill_weight * kd.mean()
        return loss

    key = jax.random.split(jax.random.key(1), len(ds))
    init = jax.vmap(lambda k: {n: 0.3 * jax.random.normal(kk, (_CP_D, _CP_H))
                               for n, kk in zip(("wq", "wc"), jax.random.split(k))})(key)
    p = fit(loss_fn, init, data, steps=cfg.steps, lr=cfg.learning_rate)
    s = np.asarray(jax.vmap(_student)(p, data["q_test"], data["c_test"]))
    t = np.asarray(data["t_test"])
    rank = np.argsort(np.argsort(-t, -1), -1)  # 0 = teacher's best
    gains = np.select([rank == 0, rank < 4, rank < 10], [3.0, 2.0, 1.0], 0.0)
    top_s = np.argsort(-s, -1)[..., :10]
    rec = np.take_along_axis(rank < 10, top_s, -1).mean((-1, -2))
    nd = [ndcg_at_k(s[i], gains[i], 10) for i in range(len(ds))]
    return {"metrics": {"ndcg_at_10": nd, "recall_at_10": rec.tolist()}}


# ----------------------------------------------------------------------------------------------
# DC-PDD: membership detection with a bigram model trained on half of the strings
# ----------------------------------------------------------------------------------------------

_DC_V, _DC_LEN = 40, 30


def _dcpdd_strings(rng, chains, n: int) -> np.ndarray:
    out = np.empty((n, _DC_LEN), np.int64)
    which = rng.integers(0, len(chains), n)  # each text has a "topic" chain
    for i in range(n):
        p = chains[which[i]]
        v = rng.integers(0, _DC_V)
        for t in range(_DC_LEN):
            out[i, t] = v
            v = rng.choice(_DC_V, p=p[v])
    return out


def _dcpdd_seed(cfg, seed: int, validation: bool = False) -> dict:
    """One seed's bigram model and candidates: ``{"lp", "ids", "member", "ref_counts"}`` (token
    log-probabilities ``[n, T]``, token ids, membership, reference-corpus unigram counts), and with
    ``validation`` the same for a validation set ``"val_lp", "val_ids", "val_member"``.

    The validation members are the first ``n_test // 2`` strings of the corpus the model was
    counted on (exchangeable with the member candidates: same generator, same counting); its
    non-members are fresh strings drawn after every test quantity, so the test candidates, the
    model and the reference corpus are those of a run without validation. No test candidate is a
    validation string."""
    rng = _rng(cfg, seed)
    # topics differ in how often they use rare tokens (a global Zipf frequency): rare-token texts
    # have low likelihood whether or not they were trained on, the confound DC-PDD calibrates away
    zipf = 1.0 / np.arange(1, _DC_V + 1) ** 1.1
    chains = []
    for tilt in (0.0, 0.5, 1.0):
        base = zipf ** (1.0 - tilt)
        m = rng.dirichlet(np.ones(_DC_V) * 0.5, _DC_V) * base[None, :]
        chains.append(m / m.sum(1, keepdims=True))
    pre = _dcpdd_strings(rng, chains, cfg.n_train)  # the "pretraining" corpus, members included
    cand = _dcpdd_strings(rng, chains, cfg.n_test)  # half members, half never seen
    member = np.arange(cfg.n_test) < cfg.n_test // 2
    ref = _dcpdd_strings(rng, chains, cfg.n_train)  # a public reference corpus
    counts = np.full((_DC_V, _DC_V), cfg.smoothing)
    for s in np.concatenate([pre, cand[member]]):
        np.add.at(counts, (s[:-1], s[1:]), 1.0)
    logp_tab = np.log(counts / counts.sum(1, keepdims=True))

    def token_lp(x):
        return np.concatenate([np.full((len(x), 1), np.log(1.0 / _DC_V)), logp_tab[x[:, :-1], x[:, 1:]]], 1)

    out = {"lp": token_lp(cand), "ids": cand, "member": member, "ref_counts": np.bincount(ref.ravel(), minlength=_DC_V)}
    if validation:
        n_in = min(cfg.n_test // 2, cfg.n_train)
        val = np.concatenate([pre[:n_in], _dcpdd_strings(rng, chains, cfg.n_test - n_in)])
        out.update(val_lp=token_lp(val), val_ids=val, val_member=np.arange(cfg.n_test) < n_in)
    return out


def _dcpdd_score(method: str, lp: np.ndarray, ids: np.ndarray, ref_counts: np.ndarray, *, upper_bound: float,
                 ref_smoothing: float) -> np.ndarray:
    """Mean token log-probability (``"ppl"``) or :func:`lossjax.losses.dc_pdd_score` with cap ``a`` =
    ``upper_bound`` and reference frequencies Laplace-smoothed by ``ref_smoothing``."""
    if method == "ppl":
        return lp.mean(-1)
    ref_lf = L.reference_log_frequencies(ref_counts, smoothing=ref_smoothing)
    return np.asarray(L.dc_pdd_score(jnp.asarray(lp, jnp.float32), jnp.asarray(ids, jnp.int32), ref_lf,
                                     upper_bound=upper_bound))


def dcpdd_task(cfg) -> dict:
    """AUROC of members vs non-members under the mean token log-probability ("ppl") or DC-PDD
    (cap ``cfg.upper_bound``, reference smoothing ``cfg.ref_smoothing``)."""
    aucs = []
    for seed in cfg.seeds:
        d = _dcpdd_seed(cfg, seed)
        score = _dcpdd_score(cfg.method, d["lp"], d["ids"], d["ref_counts"], upper_bound=cfg.upper_bound,
                             ref_smoothing=cfg.ref_smoothing)
        aucs.append(auroc(score[d["member"]], score[~d["member"]]))
    return {"metrics": {"auroc": aucs}}


def dcpdd_validation(cfg, grid: Sequence[Mapping[str, float]]) -> np.ndarray:
    """Validation AUROC ``[len(grid), len(cfg.seeds)]`` of ``cfg.method`` at every point of ``grid``
    (dicts overriding ``upper_bound`` / ``ref_smoothing``), on each seed's validation candidates
    (see :func:`_dcpdd_seed`; the test candidates are never scored)."""
    out = np.empty((len(grid), len(cfg.seeds)))
    for j, seed in enumerate(cfg.seeds):
        d = _dcpdd_seed(cfg, seed, validation=True)
        m = d["val_member"]
        for i, g in enumerate(grid):
            kw = {"upper_bound": cfg.upper_bound, "ref_smoothing": cfg.ref_smoothing, **g}
            score = _dcpdd_score(cfg.method, d["val_lp"], d["val_ids"], d["ref_counts"], **kw)
            out[i, j] = auroc(score[m], score[~m])
    return out


# ----------------------------------------------------------------------------------------------
# aggregate responses: linear regression from bag means
# ----------------------------------------------------------------------------------------------

_AG_D, _AG_RHOS = 20, (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)


@jax.jit
def _agg_quadratic(x, ids, yb):
    """Hessian and gradient at θ = 0 of ``Σ_b aggregate_response_loss`` for a linear model, at
    ρ = 0 and ρ = 1. The loss is quadratic in θ and linear in ρ, so these give every ρ exactly."""
    nb = yb.shape[0]
    out = []
    for rho in (0.0, 1.0):
        f = lambda th, rho=rho: L.aggregate_response_loss(x @ th, ids, yb, rho=rho, num_bags=nb).sum()  # noqa: E731
        z = jnp.zeros(x.shape[1], x.dtype)
        out.append((jax.hessian(f)(z), jax.grad(f)(z)))
    return out


def _agg_fit(quad, rho: float) -> np.ndarray:
    """The minimiser ``−H(ρ)⁻¹ g(ρ)`` (one exact Newton step from 0)."""
    (h0, g0), (h1, g1) = quad
    h = (1.0 - rho) * np.asarray(h0) + rho * np.asarray(h1)
    return -np.linalg.solve(h + 1e-9 * np.eye(h.shape[0]), (1.0 - rho) * np.asarray(g0) + rho * np.asarray(g1))


def aggregate_task(cfg) -> dict:
    """Bag-level (ρ = 0), instance-level (ρ = 1) or interpolating estimator (ρ picked on held-out
    bags from a grid); test instance-level MSE and parameter error."""
    mse, err, rhos = [], [], []
    with jax.enable_x64(True):
        for seed in cfg.seeds:
            rng = _rng(cfg, seed)
            theta = rng.standard_normal(_AG_D)
            k = cfg.bag_size
            n_bags, n_val = cfg.n_train // k, max(cfg.n_train // (2 * k), 2)

            def bags(nb, rng=rng, theta=theta, k=k):
                x = rng.standard_normal((nb * k, _AG_D))
                y = x @ theta + cfg.noise * rng.standard_normal(nb * k)
                ids = np.repeat(np.arange(nb), k)
                return jnp.asarray(x), jnp.asarray(ids), jnp.asarray(y.reshape(nb, k).mean(1))

            xtr, itr, ytr = bags(n_bags)
            xva, iva, yva = bags(n_val)
            xte = rng.standard_normal((cfg.n_test, _AG_D))
            yte = xte @ theta + cfg.noise * rng.standard_normal(cfg.n_test)
            if cfg.method == "bag":
                grid = (0.0,)
            elif cfg.method == "instance":
                grid = (1.0,)
            else:
                grid = _AG_RHOS
            quad = _agg_quadratic(xtr, itr, ytr)
            fits = [_agg_fit(quad, r) for r in grid]
            # validation: the bag-level loss on held-out bags (its expectation is the instance risk's
            # ordering up to a constant for mean-zero noise)
            val = [float(L.aggregate_response_loss(xva @ jnp.asarray(th), iva, yva, rho=0.0, num_bags=n_val).mean())
                   for th in fits]
            best = int(np.argmin(val))
            th = np.asarray(fits[best])
            mse.append(float(((xte @ th - yte) ** 2).mean()))
            err.append(float(((th - theta) ** 2).sum()))
            rhos.append(float(grid[best]))
    return {"metrics": {"test_mse": mse, "param_error": err, "rho": rhos}}


# ----------------------------------------------------------------------------------------------
# CS-IB vs MSE: heteroscedastic 1-D regression with a bottleneck MLP
# ----------------------------------------------------------------------------------------------


def _csib_data(cfg, seed: int) -> dict:
    rng = _rng(cfg, seed)

    def draw(n):
        x = rng.uniform(-3.0, 3.0, n)
        y = np.sin(x) + (0.1 + 0.3 * np.abs(x)) * rng.standard_normal(n)
        return x[:, None].astype(np.float32), y[:, None].astype(np.float32)

    x, y = draw(cfg.n_train)
    xt, yt = draw(cfg.n_test)
    return {"x": x, "y": y, "x_test": xt, "y_test": yt}


def _mlp(p, x):
    t = jnp.tanh(x @ p["w1"] + p["b1"])
    t = jnp.tanh(t @ p["w2"] + p["b2"])  # the bottleneck representation
    return t, t @ p["w3"] + p["b3"]


_CSIB_EVAL_SIGMA = 0.5  # kernel width of the reported divergences, whatever width CS-IB trains with


def _csib_init(n: int):
    def init(k):
        k1, k2, k3 = jax.random.split(k, 3)
        return {"w1": jax.random.normal(k1, (1, 32)), "b1": jnp.zeros(32),
                "w2": jax.random.normal(k2, (32, 8)) / np.sqrt(32), "b2": jnp.zeros(8),
                "w3": jax.random.normal(k3, (8, 1)) / np.sqrt(8), "b3": jnp.zeros(1)}

    return jax.vmap(init)(jax.random.split(jax.random.key(2), n))


def _csib_fit(method: str, data: dict, params, *, steps: int, lr: float):
    """Fit stacked models; each one's hyper-parameters ride in ``data`` (``beta``, ``sigma``: all
    three CS-IB kernel widths; ``wd``: the L2 weight penalty ``½·wd·‖W‖²`` on the weight matrices)."""

    def loss_fn(p, d):
        t, yh = _mlp(p, d["x"])
        if method == "mse":
            loss = jnp.mean((yh - d["y"]) ** 2)
        else:
            loss = L.cs_ib_loss(d["x"], t, d["y"], yh, beta=d["beta"], sigma_x=d["sigma"], sigma_t=d["sigma"],
                                sigma_y=d["sigma"])
        return loss + 0.5 * d["wd"] * sum(jnp.sum(p[k] ** 2) for k in ("w1", "w2", "w3"))

    return fit(loss_fn, params, data, steps=steps, lr=lr)


def _hyper(n: int, beta: float, sigma: float, wd: float) -> dict:
    return {"beta": jnp.full((n,), beta, jnp.float32), "sigma": jnp.full((n,), sigma, jnp.float32),
            "wd": jnp.full((n,), wd, jnp.float32)}


def csib_task(cfg) -> dict:
    """Train with MSE or CS-IB (``β`` = ``cfg.beta``, all widths ``cfg.sigma``; L2 penalty
    ``cfg.weight_decay``) on the whole training set; test RMSE, the marginal CS divergence between
    test targets and predictions, and the CS-IB prediction term (both at width 0.5)."""
    ds = [_csib_data(cfg, s) for s in cfg.seeds]
    data = _stack(ds)
    n = len(ds)
    train = {"x": data["x"], "y": data["y"], **_hyper(n, cfg.beta, cfg.sigma, cfg.weight_decay)}
    p = _csib_fit(cfg.method, train, _csib_init(n), steps=cfg.steps, lr=cfg.learning_rate)
    yh = jax.vmap(lambda q, x: _mlp(q, x)[1])(p, data["x_test"])
    rmse = np.sqrt(np.asarray(((yh - data["y_test"]) ** 2).mean((-1, -2))))
    sig = _CSIB_EVAL_SIGMA
    csd = jax.vmap(lambda a, b: L.cs_divergence(a, b, sigma=sig))(data["y_test"], yh)
    cond = jax.vmap(lambda x, y, h: L.conditional_cs_divergence(x, y, h, sigma_x=sig, sigma_y=sig))(
        data["x_test"], data["y_test"], yh)
    return {"metrics": {"rmse": rmse.tolist(), "cs_div": np.asarray(csd).tolist(),
                        "cond_cs_div": np.asarray(cond).tolist()}}


def csib_validation(cfg, grid: Sequence[Mapping[str, float]]) -> np.ndarray:
    """Validation RMSE ``[len(grid), len(cfg.seeds)]`` of ``cfg.method`` at every point of ``grid``
    (dicts overriding ``beta``, ``sigma``, ``weight_decay``, ``steps``): each seed's training set
    is split into its first ``n_train − n_train // 4`` points (fitted) and its last ``n_train // 4``
    (validation); the test points are never used. All grid points with the same ``steps`` train at
    once (one ``vmap``), each from the seed's initialisation of :func:`csib_task`."""
    ds = [_csib_data(cfg, s) for s in cfg.seeds]
    n_val = max(cfg.n_train // 4, 1)
    n_fit = cfg.n_train - n_val
    if n_fit < 2:
        raise ValueError(f"csib validation needs `seq.n_train` >= 3, got {cfg.n_train}.")
    n_s = len(ds)
    x = np.stack([d["x"] for d in ds])
    y = np.stack([d["y"] for d in ds])
    init = _csib_init(n_s)
    out = np.empty((len(grid), n_s))
    base = {"beta": cfg.beta, "sigma": cfg.sigma, "weight_decay": cfg.weight_decay, "steps": cfg.steps}
    pts = [{**base, **g} for g in grid]
    for steps in sorted({int(g["steps"]) for g in pts}):
        idx = [i for i, g in enumerate(pts) if int(g["steps"]) == steps]
        k = len(idx)
        hyp = {h: jnp.asarray(np.repeat([pts[i][src] for i in idx], n_s), jnp.float32)
               for h, src in (("beta", "beta"), ("sigma", "sigma"), ("wd", "weight_decay"))}
        data = {"x": jnp.asarray(np.tile(x[:, :n_fit], (k, 1, 1))), "y": jnp.asarray(np.tile(y[:, :n_fit], (k, 1, 1))),
                **hyp}
        params = jax.tree.map(lambda a, k=k: jnp.tile(a, (k,) + (1,) * (a.ndim - 1)), init)
        p = _csib_fit(cfg.method, data, params, steps=steps, lr=cfg.learning_rate)
        yh = np.asarray(jax.vmap(lambda q, v: _mlp(q, v)[1])(p, jnp.asarray(np.tile(x[:, n_fit:], (k, 1, 1)))))
        rmse = np.sqrt(((yh - np.tile(y[:, n_fit:], (k, 1, 1))) ** 2).mean((-1, -2))).reshape(k, n_s)
        out[idx] = rmse
    return out


TASKS = {"preference": preference_task, "eisl": eisl_task, "cprd": cprd_task, "dcpdd": dcpdd_task,
         "aggregate": aggregate_task, "csib": csib_task}
VALIDATION = {"dcpdd": dcpdd_validation, "csib": csib_validation}  # the tasks ``--tune`` searches
VALIDATION_METRIC = {"dcpdd": "auroc", "csib": "rmse"}


def validate(cfg, points: Sequence[Mapping[str, float]]) -> dict:
    """The study's validation function (:func:`experiments.kit.tune.run_searches`):
    ``{metric: array [point, seed]}`` of :data:`VALIDATION` for ``cfg.task``."""
    return {VALIDATION_METRIC[cfg.task]: VALIDATION[cfg.task](cfg, points)}
