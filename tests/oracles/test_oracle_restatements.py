"""Parity with the authors' released code, restated by us in PyTorch (float64).

Each oracle below re-states, as formulas written for this test, the maths of the loss as the
authors' released code computes it (which tensors are clamped, detached, masked or normalised), and
is evaluated with torch autograd. lossjax must give the same per-example values and the same
gradient with respect to the (student) logits or embeddings. No third-party code is copied or
imported; torch only provides an independent autodiff. Skipped without torch (install the
``oracles`` extra). Papers and repositories are named per test.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lossjax.losses as L

torch = pytest.importorskip("torch")
F = torch.nn.functional

RNG = np.random.default_rng(1234)
B, K = 5, 7
X = RNG.normal(size=(B, K)) * 2.0  # logits in a range where no reference clamp is active
XT = RNG.normal(size=(B, K)) * 2.0  # teacher logits
Y = np.array([0, 3, 6, 2, 3])
EMB = RNG.normal(size=(8, 4))
EMB_Y = np.array([0, 0, 1, 1, 2, 2, 0, 1])


def _jax_value_and_grad(fn, *args, **kw):
    """Per-example values and d(sum of values)/d(first argument), in float64."""
    with jax.enable_x64(True):
        a = [jnp.asarray(v) for v in args]
        val = fn(*a, **kw)
        grad = jax.grad(lambda x0: jnp.sum(fn(x0, *a[1:], **kw)))(a[0])
        return np.asarray(val), np.asarray(grad)


def _torch_value_and_grad(fn, *args):
    x0 = torch.tensor(args[0], dtype=torch.float64, requires_grad=True)
    rest = [torch.tensor(a) if a.dtype.kind in "iu" else torch.tensor(a, dtype=torch.float64) for a in args[1:]]
    val = fn(x0, *rest)
    val.sum().backward()
    return val.detach().numpy(), x0.grad.numpy()


def _check(ours, ref, rtol=1e-9, atol=1e-12):
    np.testing.assert_allclose(ours[0], ref[0], rtol=rtol, atol=atol, err_msg="value")
    np.testing.assert_allclose(ours[1], ref[1], rtol=rtol, atol=atol, err_msg="gradient")


def _onehot(y, k=K):
    return F.one_hot(y, k).to(torch.float64)


# ---------------------------------------------------------------- robust losses (noisy labels)


@pytest.mark.parametrize("q", [0.3, 0.7, 1.0])
def test_gce_matches_released_formula(q):
    # Zhang & Sabuncu, NeurIPS 2018, the (untruncated) L_q loss: (1 - p_y^q) / q.
    def ref(x, y):
        p_y = torch.softmax(x, -1).gather(1, y[:, None])[:, 0]
        return (1.0 - p_y**q) / q

    _check(_jax_value_and_grad(L.generalized_cross_entropy_loss, X, Y, q=q), _torch_value_and_grad(ref, X, Y))


def _rce_reference(x, y):
    # Wang et al., ICCV 2019 (and the Active-Passive-Losses code): -sum_k p_k log(clamp(onehot, 1e-4, 1)),
    # with p clamped to [1e-7, 1] (inactive for these logits).
    p = torch.clamp(torch.softmax(x, -1), 1e-7, 1.0)
    return -(p * torch.log(torch.clamp(_onehot(y), 1e-4, 1.0))).sum(-1)


def test_rce_matches_released_formula():
    got = _jax_value_and_grad(L.reverse_cross_entropy_loss, X, Y, log_zero=math.log(1e-4))
    _check(got, _torch_value_and_grad(_rce_reference, X, Y))


@pytest.mark.parametrize(("alpha", "beta"), [(0.1, 1.0), (6.0, 0.1)])
def test_sce_matches_released_formula(alpha, beta):
    # Wang et al., ICCV 2019: alpha * CE + beta * RCE (CIFAR-10 and CIFAR-100 weights).
    def ref(x, y):
        return alpha * F.cross_entropy(x, y, reduction="none") + beta * _rce_reference(x, y)

    got = _jax_value_and_grad(L.symmetric_cross_entropy_loss, X, Y, alpha=alpha, beta=beta, log_zero=math.log(1e-4))
    _check(got, _torch_value_and_grad(ref, X, Y))


def test_nce_matches_released_formula():
    # Ma et al., ICML 2020, normalised CE (Active-Passive-Losses code): the normaliser -sum_k log p_k is
    # differentiated too, i.e. lossjax's stop_gradient_normalizer=False.
    def ref(x, y):
        logp = torch.log_softmax(x, -1)
        return -(_onehot(y) * logp).sum(-1) / (-logp.sum(-1))

    got = _jax_value_and_grad(L.normalized_cross_entropy_loss, X, Y, stop_gradient_normalizer=False)
    _check(got, _torch_value_and_grad(ref, X, Y))


@pytest.mark.parametrize("order", [1, 2, 6])
def test_taylor_ce_matches_released_formula(order):
    # Feng et al., IJCAI 2020, Taylor CE of order t: sum_{k=1}^{t} (1 - p_y)^k / k.
    def ref(x, y):
        s = 1.0 - torch.softmax(x, -1).gather(1, y[:, None])[:, 0]
        return sum(s**k / k for k in range(1, order + 1))

    _check(_jax_value_and_grad(L.taylor_cross_entropy_loss, X, Y, order=order), _torch_value_and_grad(ref, X, Y))


# ---------------------------------------------------------------- imbalance family


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_softmax_focal_matches_paper_formula(gamma):
    # Lin et al., ICCV 2017, focal loss (multi-class form): -(1 - p_y)^gamma log p_y, p_y differentiated
    # (the paper's loss; the Active-Passive-Losses code detaches p_y in the factor instead).
    def ref(x, y):
        logp_y = torch.log_softmax(x, -1).gather(1, y[:, None])[:, 0]
        return -((1.0 - logp_y.exp()) ** gamma) * logp_y

    _check(_jax_value_and_grad(L.softmax_focal_loss, X, Y, gamma=gamma), _torch_value_and_grad(ref, X, Y))


@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 1.0), (1.0, 4.5), (2.0, 0.5)])
def test_dual_ce_matches_formula(alpha, beta):
    # Li et al., IEEE TVT 2019 (abstract form, see docs/open_questions.md): CE + beta sum_{k!=y} log(alpha + p_k).
    def ref(x, y):
        p = torch.softmax(x, -1)
        reg = ((1.0 - _onehot(y)) * torch.log(alpha + p)).sum(-1)
        return F.cross_entropy(x, y, reduction="none") + beta * reg

    got = _jax_value_and_grad(L.dual_cross_entropy_loss, X, Y, alpha=alpha, beta=beta)
    _check(got, _torch_value_and_grad(ref, X, Y))


# ---------------------------------------------------------------- distillation


@pytest.mark.parametrize(("T", "alpha", "beta"), [(4.0, 1.0, 8.0), (1.0, 1.0, 0.5)])
def test_dkd_matches_released_formula(T, alpha, beta):
    # Zhao et al., CVPR 2022, DKD = alpha TCKD + beta NCKD as the mdistiller code computes it: binary
    # [p_y, 1 - p_y] KL and the non-target KL with the target logit pushed down by 1000, both times T^2;
    # teacher detached.
    zt = torch.tensor(XT, dtype=torch.float64)

    def ref(zs, y):
        gt = _onehot(y)
        ps, pt = torch.softmax(zs / T, -1), torch.softmax(zt / T, -1)
        bs = torch.stack([(ps * gt).sum(-1), (ps * (1 - gt)).sum(-1)], -1)
        bt = torch.stack([(pt * gt).sum(-1), (pt * (1 - gt)).sum(-1)], -1)
        tckd = F.kl_div(torch.log(bs), bt, reduction="none").sum(-1)
        nt_t = torch.softmax(zt / T - 1000.0 * gt, -1)
        nt_ls = torch.log_softmax(zs / T - 1000.0 * gt, -1)
        nckd = F.kl_div(nt_ls, nt_t, reduction="none").sum(-1)
        return (alpha * tckd + beta * nckd) * T**2

    got = _jax_value_and_grad(L.dkd_loss, X, XT, Y, temperature=T, alpha=alpha, beta=beta)
    _check(got, _torch_value_and_grad(ref, X, Y), rtol=1e-8)


@pytest.mark.parametrize(("T", "gamma"), [(1.0, 1.5), (3.0, 3.5)])
def test_nkd_matches_released_formula(T, gamma):
    # Yang et al., ICCV 2023, NKD as the cls_KD code computes it: -t_y log s_y (t_y detached) minus
    # gamma T^2 sum_{i != y} t_hat_i log s_hat_i over the renormalised non-target classes.
    zt = torch.tensor(XT, dtype=torch.float64)

    def ref(zs, y):
        n = zs.shape[0]
        s_y = torch.log_softmax(zs, -1).gather(1, y[:, None])[:, 0]
        t_y = torch.softmax(zt, -1).gather(1, y[:, None])[:, 0].detach()
        keep = torch.ones_like(zs, dtype=torch.bool).scatter(1, y[:, None], False)
        s_non = torch.log_softmax(zs[keep].reshape(n, -1) / T, -1)
        t_non = torch.softmax(zt[keep].reshape(n, -1) / T, -1)
        return -t_y * s_y - gamma * T**2 * (t_non * s_non).sum(-1)

    got = _jax_value_and_grad(L.nkd_loss, X, XT, Y, temperature=T, gamma=gamma)
    _check(got, _torch_value_and_grad(ref, X, Y))


# ---------------------------------------------------------------- metric learning


@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_supcon_matches_released_formula(tau):
    # Khosla et al., NeurIPS 2020, Eq. 2 (L_out) as the SupContrast code computes it for one view:
    # max-shifted logits, self excluded from the denominator, mean log-probability over positives;
    # temperature == base_temperature so the code's tau/base_tau factor is 1.
    def ref(e, y):
        f = F.normalize(e, dim=-1)
        sim = f @ f.T / tau
        logits = sim - sim.max(1, keepdim=True).values.detach()
        not_self = 1.0 - torch.eye(len(y), dtype=torch.float64)
        pos = (y[:, None] == y[None, :]).to(torch.float64) * not_self
        log_prob = logits - torch.log((logits.exp() * not_self).sum(1, keepdim=True))
        return -(pos * log_prob).sum(1) / pos.sum(1)

    _check(_jax_value_and_grad(L.supcon_loss, EMB, EMB_Y, temperature=tau), _torch_value_and_grad(ref, EMB, EMB_Y))


@pytest.mark.parametrize(("lam", "margin", "normalize"), [(10.0, 0.1, None), (1.0, 2.0, "softplus_mean")])
def test_ldr_kl_matches_released_formula(lam, margin, normalize):
    # Zhu, Ying & Yang, ICML 2023, KL-regularised LDR loss (closed form) as the ICML2023_LDR code's
    # LDRLoss_V1 computes it: scores optionally softplus'd and divided by their row mean (the
    # normaliser differentiated), z_k = c [k != y] + f_k - f_y, loss = lam log mean_k exp(z_k / lam).
    def ref(x, y):
        f = x
        if normalize == "softplus_mean":
            f = F.softplus(f)
            f = f / f.mean(-1, keepdim=True)
        oh = _onehot(y)
        z = (margin * (1.0 - oh) + f - (f * oh).sum(-1, keepdim=True)) / lam
        return lam * (torch.logsumexp(z, -1) - math.log(K))

    got = _jax_value_and_grad(L.ldr_kl_loss, X, Y, lambda_=lam, margin=margin, normalize=normalize)
    _check(got, _torch_value_and_grad(ref, X, Y))


@pytest.mark.parametrize(("alpha", "beta", "mu"), [(1.0, 0.1, 0.005), (0.1, 0.1, 0.1)])
def test_uskd_matches_released_formula(alpha, beta, mu):
    # Yang et al., ICCV 2023 (USKD) as the cls_KD code computes it for hard labels:
    # soft target sg(s_y^2 + 1 - batch-mean(s_y^2)) on log s_y; weak-head CE to 0.9 onehot + 0.1/K;
    # Zipf (1/rank) non-target labels from the score w/(1 - w_y + 1e-6) + log s/(1 - log s_y + 1e-6),
    # target removed, renormalised and detached, on the log-softmax over the non-target classes.
    w_logits = torch.tensor(XT, dtype=torch.float64, requires_grad=True)

    def ref(zs, y):
        n = zs.shape[0]
        s = torch.softmax(zs, -1)
        s_y2 = s.gather(1, y[:, None])[:, 0] ** 2
        p_hat = (s_y2 + 1.0 - s_y2.mean()).detach()
        logs = torch.log_softmax(zs, -1)
        logs_y = logs.gather(1, y[:, None])[:, 0]
        loss_t = -p_hat * logs_y
        target = 0.9 * _onehot(y) + 0.1 / K
        loss_weak = -mu * (target * torch.log_softmax(w_logits, -1)).sum(-1)
        w = torch.softmax(w_logits, -1)
        w_y = w.gather(1, y[:, None])
        score = w / (1.0 - w_y + 1e-6) + logs / (1.0 - logs_y[:, None] + 1e-6)
        position = torch.argsort(torch.argsort(score, -1, descending=True), -1)  # 0-based rank
        zipf = 1.0 / (position + 1).to(torch.float64)
        keep = torch.ones_like(zs, dtype=torch.bool).scatter(1, y[:, None], False)
        z_non = zipf[keep].reshape(n, -1)
        z_non = (z_non / z_non.sum(-1, keepdim=True)).detach()
        loss_non = -(z_non * torch.log_softmax(zs[keep].reshape(n, -1), -1)).sum(-1)
        return alpha * loss_t + beta * loss_non + loss_weak

    ref_val, ref_grad = _torch_value_and_grad(ref, X, Y)
    got = _jax_value_and_grad(L.uskd_loss, X, XT, Y, alpha=alpha, beta=beta, mu=mu)
    _check(got, (ref_val, ref_grad))
    # the weak head's gradient (only L_weak reaches it)
    got_w = _jax_value_and_grad(lambda w, zs, y: L.uskd_loss(zs, w, y, alpha=alpha, beta=beta, mu=mu), XT, X, Y)
    np.testing.assert_allclose(got_w[1], w_logits.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("alpha", "beta", "lam"), [(2.0, 50.0, 0.5), (2.0, 40.0, 1.0)])
def test_multi_similarity_matches_released_formula(alpha, beta, lam):
    # Wang et al., CVPR 2019, Multi-Similarity loss as the research-ms-loss code computes it without mining: cosine
    # similarities of L2-normalised embeddings, positives = same label except the anchor itself
    # (the code drops S >= 1 - 1e-5, which here is only the anchor), negatives = other labels.
    def ref(e, y):
        f = F.normalize(e, dim=-1)
        sim = f @ f.T
        same = y[:, None] == y[None, :]
        pos = same & ~torch.eye(len(y), dtype=torch.bool)
        neg = ~same
        pos_term = torch.log1p((torch.exp(-alpha * (sim - lam)) * pos).sum(1)) / alpha
        neg_term = torch.log1p((torch.exp(beta * (sim - lam)) * neg).sum(1)) / beta
        return pos_term + neg_term

    got = _jax_value_and_grad(L.multi_similarity_loss, EMB, EMB_Y, alpha=alpha, beta=beta, lam=lam)
    _check(got, _torch_value_and_grad(ref, EMB, EMB_Y))
