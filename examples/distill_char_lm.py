"""Distil a character language model into a smaller one with the fused-linear KD loss.

Data: the source text of a few Python standard-library modules, 96 character classes (the char-LM data of
``notebooks/nbhelpers.py``). Model: the previous ``CONTEXT`` characters -> 16-d embeddings -> concatenation
-> a GELU layer of ``width`` units (the hidden state) -> the classifier [96, width]. A teacher
(``--teacher_width``, default 256) is trained with ``lossjax.kernels.linear_cross_entropy``; then two students
(``--student_width``, default 32) are trained from the same initialisation for the same steps:

* ``ce``: cross-entropy on the next character only;
* ``kd``: ``(1 - alpha) CE + alpha * linear_kd_loss(h_s, C_s, h_t, C_t, divergence='kd', temperature=T)``
  (Hinton et al., arXiv 1503.02531), computed from the two hidden states and classifiers without forming
  either model's logits.

Run::

    python examples/distill_char_lm.py                   # about a minute on 2 CPU cores
    python examples/distill_char_lm.py --steps 20 --teacher_steps 20   # smoke run

It prints one JSON line: the validation cross-entropy (nats/char) of the teacher and of both students,
and the students' KD term (against the teacher, T) before and after training.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from lossjax.kernels import ChunkedConfig, linear_cross_entropy, linear_kd_loss  # noqa: E402
from notebooks.nbhelpers import VOCAB, load_stdlib_text  # noqa: E402

CONTEXT, EMBED = 8, 16
CFG = ChunkedConfig(block_v=32)  # 96 classes in tiles of 32: the streamed path, as for a large vocabulary


def init(key, width):
    k1, k2, k3 = jax.random.split(key, 3)
    return {"emb": jax.random.normal(k1, (VOCAB, EMBED)) * 0.5,
            "w": jax.random.normal(k2, (CONTEXT * EMBED, width)) / np.sqrt(CONTEXT * EMBED),
            "b": jnp.zeros(width),
            "cls": jax.random.normal(k3, (VOCAB, width)) / np.sqrt(width)}


def hidden(p, x):
    """[B, CONTEXT] character ids -> [B, width] hidden states."""
    return jax.nn.gelu(p["emb"][x].reshape(x.shape[0], -1) @ p["w"] + p["b"])


def windows(ids, starts):
    win = starts[:, None] + np.arange(CONTEXT + 1)
    return ids[win[:, :-1]], ids[win[:, -1]]


def train(p, ids, steps, lr, batch, seed, loss_fn):
    opt = optax.adam(lr)

    @jax.jit
    def step(p, s, x, y):
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s, loss

    s = opt.init(p)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x, y = windows(ids, rng.integers(0, len(ids) - CONTEXT - 1, batch))
        p, s, _ = step(p, s, x, y)
    return p


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--teacher_steps", type=int, default=1500)
    ap.add_argument("--teacher_width", type=int, default=256)
    ap.add_argument("--student_width", type=int, default=32)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--max_chars", type=int, default=200_000)
    a = ap.parse_args(argv)

    ids = load_stdlib_text(max_chars=a.max_chars)
    cut = int(0.9 * len(ids))
    tr, va = ids[:cut], ids[cut:]
    xv, yv = windows(va, np.random.default_rng(123).integers(0, len(va) - CONTEXT - 1, 2048))

    def ce(p, x, y):
        return linear_cross_entropy(hidden(p, x), p["cls"], y, config=CFG)
    teacher = train(init(jax.random.key(0), a.teacher_width), tr, a.teacher_steps, a.lr, a.batch, 0, ce)

    def kd_term(p, x):
        return linear_kd_loss(hidden(p, x), p["cls"], hidden(teacher, x), teacher["cls"], divergence="kd",
                              temperature=a.temperature, config=CFG)

    def ce_kd(p, x, y):
        return (1 - a.alpha) * ce(p, x, y) + a.alpha * kd_term(p, x)

    s0 = init(jax.random.key(1), a.student_width)
    students = {"ce": train(s0, tr, a.steps, a.lr, a.batch, 1, ce),
                "kd": train(s0, tr, a.steps, a.lr, a.batch, 1, ce_kd)}
    ev = jax.jit(lambda p: (ce(p, xv, yv), kd_term(p, xv)))
    res = {"teacher_val_ce": float(ev(teacher)[0]), "kd_term_init": float(ev(s0)[1]),
           "temperature": a.temperature, "alpha": a.alpha, "steps": a.steps}
    for name, p in students.items():
        v_ce, v_kd = ev(p)
        res[f"student_{name}_val_ce"], res[f"student_{name}_kd_term"] = float(v_ce), float(v_kd)
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
