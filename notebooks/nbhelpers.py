"""Shared helpers of the lossjax notebooks: settings, real CPU data, and two tiny models.

* :func:`settings` — smoke flag (``LOSSJAX_SMOKE=1``) and output folders
  (``LOSSJAX_FIGURES_DIR``, ``LOSSJAX_RESULTS_DIR``; defaults ``notebooks/figures`` and
  ``notebooks/results`` in full mode, a scratch folder under the system temp directory in
  smoke mode, so a smoke run never overwrites the committed figures and results).
* Data that ships with the software: scikit-learn's ``load_digits`` (1,797 real 8x8 digits,
  bundled in the wheel) and the source text of a few Python standard-library modules.
* :func:`train_digits_mlp` — a 64→w→10 ReLU MLP on digits (seeds vmapped).
* :func:`train_char_lm` — a character language model (embedding → context MLP → tied-free
  classifier) trained with ``lossjax.kernels.linear_cross_entropy`` when available.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import sysconfig
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "settings",
    "is_smoke",
    "SMOKE_SCRATCH",
    "save_json",
    "load_digits_split",
    "train_digits_mlp",
    "digits_mlp_params",
    "load_stdlib_text",
    "train_char_lm",
    "char_lm_params",
    "LINEAR_CE_SOURCE",
    "GCE_SOURCE",
]

# ------------------------------------------------------------------------------ the CE head
# The char LM's output layer uses lossjax's memory-light linear cross-entropy (the logits
# [N, V] are never materialised by the kernel implementations). FALLBACK: if the kernel module
# is not present in this checkout, use optax's softmax CE on explicit logits (same maths).
try:
    from lossjax.kernels.linear_ce import linear_cross_entropy as _linear_ce

    LINEAR_CE_SOURCE = "lossjax.kernels.linear_cross_entropy"

    def linear_ce(h: jax.Array, w: jax.Array, y: jax.Array) -> jax.Array:
        return _linear_ce(h, w, y, reduction="mean")

except ImportError:  # pragma: no cover - depends on the checkout
    LINEAR_CE_SOURCE = "fallback: optax.softmax_cross_entropy_with_integer_labels"

    def linear_ce(h: jax.Array, w: jax.Array, y: jax.Array) -> jax.Array:
        logits = h @ w.T
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


# ------------------------------------------------------------------------------ the robust loss
# Generalized cross-entropy (Zhang & Sabuncu 2018), L_q = (1 − p_y^q)/q. FALLBACK: if
# lossjax.losses.comp_sum is missing, an inline version of the same formula is used.
try:
    from lossjax.losses.comp_sum import generalized_cross_entropy_loss as _gce

    GCE_SOURCE = "lossjax.losses.generalized_cross_entropy_loss"

    def gce_loss(logits: jax.Array, labels: jax.Array, q: float = 0.7) -> jax.Array:
        return _gce(logits, labels, q=q)

except ImportError:  # pragma: no cover - depends on the checkout
    GCE_SOURCE = "fallback: inline (1 - p_y^q)/q"

    def gce_loss(logits: jax.Array, labels: jax.Array, q: float = 0.7) -> jax.Array:
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]
        return -jnp.expm1(q * logp) / q


SMOKE_SCRATCH = Path(tempfile.gettempdir()) / "lossjax_notebooks_smoke"


def is_smoke() -> bool:
    """True when ``LOSSJAX_SMOKE`` is set to anything but ``""``, ``0``, ``false``, ``False``."""
    return os.environ.get("LOSSJAX_SMOKE", "0") not in ("", "0", "false", "False")


def settings() -> dict:
    """Smoke flag and output folders from the environment (creates the folders).

    Full mode writes to ``notebooks/figures`` and ``notebooks/results`` (the committed files);
    smoke mode defaults to ``SMOKE_SCRATCH/{figures,results}``. ``LOSSJAX_FIGURES_DIR`` and
    ``LOSSJAX_RESULTS_DIR`` override either.
    """
    smoke = is_smoke()
    base = SMOKE_SCRATCH if smoke else Path(__file__).resolve().parent
    figs = Path(os.environ.get("LOSSJAX_FIGURES_DIR", base / "figures"))
    res = Path(os.environ.get("LOSSJAX_RESULTS_DIR", base / "results"))
    figs.mkdir(parents=True, exist_ok=True)
    res.mkdir(parents=True, exist_ok=True)
    return {"smoke": smoke, "figures": figs, "results": res}


def save_json(path: Path, obj: dict) -> None:
    """Writes ``obj`` as indented JSON (NumPy scalars converted)."""

    def conv(o):
        if isinstance(o, (np.floating, np.integer)):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(type(o))

    Path(path).write_text(json.dumps(obj, indent=2, default=conv) + "\n")


# ------------------------------------------------------------------------------ digits MLP


def load_digits_split(n_test: int = 500, seed: int = 0):
    """sklearn digits as flat ``[n, 64]`` float32 pixels in [0, 1]: the experiments' split.

    The same stratified 1,297 / 500 split as the studies and the trainer
    (``experiments.common.data.load_digits_dataset``), so the notebook's numbers are comparable
    with the committed study reports. Returns ``((x_train, y_train), (x_test, y_test))``.
    """
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from experiments.common.data import load_digits_dataset

    ds = load_digits_dataset(n_test=n_test, split_seed=seed)
    flat = lambda x: (x.reshape(len(x), -1) / 255.0).astype(np.float32)  # noqa: E731
    return (flat(ds.x_train), ds.y_train.astype(np.int32)), (flat(ds.x_test), ds.y_test.astype(np.int32))


def digits_mlp_params(width: int) -> int:
    """Parameter count of the 64→w→10 MLP (weights and biases)."""
    return 64 * width + width + width * 10 + 10


def _mlp_init(key, max_width, width):
    """Weights of a ``max_width`` MLP whose units beyond ``width`` are masked out."""
    k1, k2 = jax.random.split(key)
    mask = (jnp.arange(max_width) < width).astype(jnp.float32)
    return {
        "w1": jax.random.normal(k1, (64, max_width)) * jnp.sqrt(2.0 / 64) * mask,
        "b1": jnp.zeros(max_width),
        "w2": jax.random.normal(k2, (max_width, 10)) / jnp.sqrt(width) * mask[:, None],
        "b2": jnp.zeros(10),
    }, mask


def _mlp_apply(p, mask, x):
    return (jax.nn.relu(x @ p["w1"] + p["b1"]) * mask) @ p["w2"] + p["b2"]


def train_digits_mlp(widths, *, losses=("ce", "gce"), seeds=(0, 1, 2), steps: int = 1500,
                     batch: int = 128, lr: float = 3e-3, data=None) -> dict:
    """Trains the 64→w→10 MLP for every (width, seed) in one vmapped, jitted call.

    All widths share one compilation: each model is a ``max(widths)`` MLP whose extra hidden
    units are masked (their activations are zeroed, so they receive zero gradients and stay
    zero — the model is exactly a width-``w`` MLP). Each entry of ``losses`` is ``"ce"``
    (softmax cross-entropy) or ``"gce"`` (generalized CE, q = 0.7); the training losses are
    vmapped too, so the whole sweep is one compilation. Adam with cosine decay, batch 128.

    Returns ``{loss: {"test_ce", "test_gce", "test_error"}}`` with arrays
    ``[len(widths), len(seeds)]``.
    """
    (xtr, ytr), (xte, yte) = data if data is not None else load_digits_split()
    xtr, ytr, xte, yte = map(jnp.asarray, (xtr, ytr, xte, yte))
    widths = [int(w) for w in widths]
    max_w = max(widths)
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps))

    def objective(p, mask, xb, yb, use_gce):
        logits = _mlp_apply(p, mask, xb)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
        return jnp.where(use_gce, gce_loss(logits, yb, 0.7).mean(), ce)

    def run(width, seed, use_gce):
        kinit, kdata = jax.random.split(jax.random.PRNGKey(seed))
        p, mask = _mlp_init(kinit, max_w, width)
        state = opt.init(p)

        def step(carry, k):
            p, state = carry
            idx = jax.random.randint(k, (batch,), 0, xtr.shape[0])
            g = jax.grad(objective)(p, mask, xtr[idx], ytr[idx], use_gce)
            upd, state = opt.update(g, state, p)
            return (optax.apply_updates(p, upd), state), None

        (p, _), _ = jax.lax.scan(step, (p, state), jax.random.split(kdata, steps))
        logits = _mlp_apply(p, mask, xte)
        return {
            "test_ce": optax.softmax_cross_entropy_with_integer_labels(logits, yte).mean(),
            "test_gce": gce_loss(logits, yte, 0.7).mean(),
            "test_error": jnp.mean(jnp.argmax(logits, -1) != yte),
        }

    for name in losses:
        if name not in ("ce", "gce"):
            raise ValueError(f"losses: unknown loss {name!r}")
    li, ww, ss = np.meshgrid(np.arange(len(losses)), np.asarray(widths), np.asarray(seeds),
                             indexing="ij")
    is_gce = np.array([name == "gce" for name in losses])[li.ravel()]
    out = jax.jit(jax.vmap(run))(jnp.asarray(ww.ravel()), jnp.asarray(ss.ravel()),
                                 jnp.asarray(is_gce))
    out = {k: np.asarray(v).reshape(ww.shape) for k, v in out.items()}
    return {name: {k: v[i] for k, v in out.items()} for i, name in enumerate(losses)}


# ------------------------------------------------------------------------------ char LM

_STDLIB_FILES = ("argparse.py", "difflib.py", "textwrap.py", "inspect.py", "typing.py")
VOCAB = 96  # printable ASCII 32..126 -> 0..94, "\n" -> 95; anything else -> " "


def load_stdlib_text(files=_STDLIB_FILES, max_chars: int | None = None) -> np.ndarray:
    """Token ids of the source of a few standard-library modules (real text, always present)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    text = "\n".join((root / f).read_text(encoding="utf-8") for f in files)
    codes = np.frombuffer(text.encode("ascii", errors="replace"), dtype=np.uint8).astype(np.int32)
    ids = np.where(codes == 10, 95, codes - 32)
    ids = np.where((ids < 0) | (ids > 95), 0, ids).astype(np.int32)
    return ids[:max_chars] if max_chars else ids


def char_lm_params(width: int, *, context: int = 16, embed: int = 16) -> int:
    """Parameter count of the char LM: embedding, context MLP (+bias), classifier."""
    return VOCAB * embed + context * embed * width + width + VOCAB * width


def _lm_init(key, max_width, width, context, embed):
    k1, k2, k3 = jax.random.split(key, 3)
    mask = (jnp.arange(max_width) < width).astype(jnp.float32)
    return {
        "emb": jax.random.normal(k1, (VOCAB, embed)) * 0.5,
        "w": jax.random.normal(k2, (context * embed, max_width)) / jnp.sqrt(context * embed) * mask,
        "b": jnp.zeros(max_width),
        "cls": jax.random.normal(k3, (VOCAB, max_width)) / jnp.sqrt(width) * mask,
    }, mask


def _lm_hidden(p, mask, xb):
    e = p["emb"][xb].reshape(xb.shape[0], -1)
    return jax.nn.gelu(e @ p["w"] + p["b"]) * mask


@functools.cache
def _lm_runner(max_width, context, embed, batch, eval_every):
    """One jitted, vmapped training function per configuration (widths/LRs/seeds are inputs)."""
    adam = optax.scale_by_adam()

    def objective(p, mask, xb, yb):
        return linear_ce(_lm_hidden(p, mask, xb), p["cls"], yb)

    def run(width, lr_chunks, seed, train, vx, vy):
        kinit, kdata = jax.random.split(jax.random.PRNGKey(seed))
        p, mask = _lm_init(kinit, max_width, width, context, embed)
        state = adam.init(p)

        def step(carry, inp):
            p, state = carry
            lr, k = inp
            start = jax.random.randint(k, (batch,), 0, train.shape[0] - context - 1)
            win = start[:, None] + jnp.arange(context + 1)
            xb, yb = train[win[:, :-1]], train[win[:, -1]]
            g = jax.grad(objective)(p, mask, xb, yb)
            upd, state = adam.update(g, state, p)
            p = jax.tree.map(lambda a, u: a - lr * u, p, upd)
            return (p, state), None

        def chunk(carry, inp):
            lr_c, k = inp
            carry, _ = jax.lax.scan(step, carry, (lr_c, jax.random.split(k, eval_every)))
            return carry, objective(carry[0], mask, vx, vy)

        keys = jax.random.split(kdata, lr_chunks.shape[0])
        _, vl = jax.lax.scan(chunk, (p, state), (lr_chunks, keys))
        return vl

    return jax.jit(jax.vmap(run, in_axes=(0, 0, 0, None, None, None)))


def train_char_lm(ids: np.ndarray, widths, lrs, *, seeds=(0,), context: int = 16,
                  embed: int = 16, batch: int = 128, eval_every: int = 10, n_eval: int = 2048,
                  val_fraction: float = 0.1) -> dict:
    """Trains the char LM for every (width, schedule, seed) in one vmapped, jitted call.

    The model: 16-char context → 16-d embeddings → concatenation → GELU layer of ``width``
    units → classifier ``[96, width]``, trained with the linear cross-entropy head
    (:data:`LINEAR_CE_SOURCE`) and Adam, whose step is multiplied by the per-step learning rate
    ``lrs[s, t]`` (so any schedule is an input). Widths share one compilation by masking a
    ``max(widths)`` model (masked units stay exactly zero).

    Returns ``{"steps": [E], "val_loss": [W, S, R, E]}``: validation cross-entropy (nats/char)
    on ``n_eval`` fixed held-out windows after every ``eval_every`` steps.
    """
    lrs = np.atleast_2d(np.asarray(lrs, np.float32))
    n_sched, steps = lrs.shape
    if steps % eval_every:
        raise ValueError("the schedule length must be a multiple of eval_every")
    ids = jnp.asarray(ids)
    n_val = int(len(ids) * val_fraction)
    train, val = ids[:-n_val], ids[-n_val:]
    vstart = np.random.default_rng(123).integers(0, n_val - context - 1, n_eval)
    vwin = jnp.asarray(vstart[:, None] + np.arange(context + 1))
    vx, vy = val[vwin[:, :-1]], val[vwin[:, -1]]
    widths = [int(w) for w in widths]
    run = _lm_runner(max(widths), context, embed, batch, eval_every)
    wi, si, ri = np.meshgrid(np.arange(len(widths)), np.arange(n_sched), np.arange(len(seeds)),
                             indexing="ij")
    wv = jnp.asarray(np.asarray(widths)[wi.ravel()])
    lv = jnp.asarray(lrs[si.ravel()].reshape(wi.size, -1, eval_every))
    sv = jnp.asarray(np.asarray(seeds)[ri.ravel()])
    vl = np.asarray(run(wv, lv, sv, train, vx, vy)).reshape(*wi.shape, -1)
    return {"steps": np.arange(eval_every, steps + 1, eval_every), "val_loss": vl}
