"""float64 PyTorch oracles for the linear-head family (materialised logits, autograd gradients).

Independent of the JAX code: the maths is restated from the papers (CE / entropy / z-loss; KL, reverse KL,
generalized JSD; sequence log-probabilities, DPO, ORPO, KTO) on full [N, V] logits in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def t64(x, grad=False):
    return torch.tensor(np.asarray(x, np.float64), dtype=torch.float64, requires_grad=grad)


def head_ref(e, c, b, t, *, w=None, cw=None, temperature=1.0, softcap=None, z_loss=0.0, shift=0,
             ignore_index=-100, coef_ent=0.3, coef_lp=0.1):
    """Outputs of the CE head and the gradients of ``loss + coef_ent sum(H) + coef_lp sum(logprob)``."""
    e_, c_, b_ = t64(e, True), t64(c, True), t64(b, True)
    t = np.asarray(t)
    if shift:
        t = np.concatenate([t[..., shift:], np.full(t.shape[:-1] + (shift,), ignore_index)], -1)
    a = e_ @ c_.T + b_
    z = (softcap * torch.tanh(a / softcap) if softcap else a) / temperature
    if shift:
        z, t = z[..., :-shift, :], t[..., :-shift]
        w = None if w is None else np.asarray(w)[..., :-shift]
    lse = torch.logsumexp(z, -1)
    logp = z - lse[..., None]
    ent = -(logp.exp() * logp).sum(-1)
    valid = torch.tensor(t != ignore_index)
    ts = torch.tensor(np.where(t != ignore_index, t, 0)).long()
    nll = torch.where(valid, -logp.gather(-1, ts[..., None])[..., 0], torch.zeros(()))
    omega = valid.double()
    if w is not None:
        omega = omega * t64(w)
    if cw is not None:
        omega = omega * t64(cw)[ts]
    ce = (omega * nll).sum() / omega.sum()
    zl = z_loss * torch.where(valid, lse**2, torch.zeros(())).sum() / valid.sum()
    loss = ce + zl
    obj = loss + coef_ent * ent.sum() - coef_lp * nll.sum()
    de, dc, db = torch.autograd.grad(obj, (e_, c_, b_))
    amax = z.argmax(-1).numpy()
    correct = (amax == t) & (t != ignore_index)
    return dict(loss=loss.item(), z_loss=zl.item(), nll=nll.detach().numpy(), lse=lse.detach().numpy(),
                entropy=ent.detach().numpy(), argmax=amax, correct=correct,
                accuracy=correct.sum() / max(int((t != ignore_index).sum()), 1),
                de=de.numpy(), dc=dc.numpy(), db=db.numpy())


def kd_ref(es, cs, bs, et, ct, bt, mask, divergence, temperature, beta=0.5):
    """Mean over masked-in rows of the divergence, and its gradients w.r.t. (es, cs, bs)."""
    es_, cs_, bs_ = t64(es, True), t64(cs, True), t64(bs, True)
    u = (es_ @ cs_.T + bs_) / temperature
    wt = (t64(et) @ t64(ct).T + t64(bt)) / temperature
    lq, lp = torch.log_softmax(u, -1), torch.log_softmax(wt, -1)
    q, p = lq.exp(), lp.exp()
    if divergence in ("kd", "forward_kl"):
        rows = (p * (lp - lq)).sum(-1)
    elif divergence == "reverse_kl":
        rows = (q * (lq - lp)).sum(-1)
    else:
        m = beta * p + (1 - beta) * q
        rows = beta * (p * (lp - m.log())).sum(-1) + (1 - beta) * (q * (lq - m.log())).sum(-1)
    if divergence == "kd":
        rows = rows * temperature**2
    mk = torch.tensor(np.asarray(mask)).double()
    loss = (rows * mk).sum() / mk.sum()
    g = torch.autograd.grad(loss, (es_, cs_, bs_))
    return loss.item(), [x.numpy() for x in g]


def seq_logps(e_, c_, tokens, mask):
    """[...] float64 sequence log-probabilities (torch tensors in, differentiable)."""
    logp = torch.log_softmax(e_ @ c_.T, -1)
    tok = torch.tensor(np.where(mask, tokens, 0)).long()
    lp = logp.gather(-1, tok[..., None])[..., 0]
    return torch.where(torch.tensor(np.asarray(mask)), lp, torch.zeros(())).sum(-1)


def kto_rows(pol, ref, desirable, z0, beta, lam_d, lam_u):
    """KTO per example, Ethayarajh et al. (ICML 2024) Eq. 8 as written: ``lambda_y - v(x, y)`` with
    ``v = lambda_D sigmoid(beta (r - z0))`` (desirable) or ``lambda_U sigmoid(beta (z0 - r))``."""
    r = pol - ref
    des = torch.tensor(np.asarray(desirable))
    v = torch.where(des, lam_d * torch.sigmoid(beta * (r - z0)), lam_u * torch.sigmoid(beta * (z0 - r)))
    return torch.where(des, torch.full_like(v, lam_d), torch.full_like(v, lam_u)) - v


def log_sigmoid(x):
    return -torch.nn.functional.softplus(-x)


def log1mexp(x):
    return torch.log(-torch.expm1(x))


LOG2 = math.log(2.0)
