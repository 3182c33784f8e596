"""NumPy augmentation and batching, deterministic given ``(seed, epoch, step)``.

The recipes of the SAM/AACE papers: reflect-pad random crop, horizontal flip and Cutout
(DeVries & Taylor 2017; ``size`` 16, applied with probability 0.5 as in the AACE code).
Batches are a pure function of ``(seed, epoch, step)``: the epoch permutation comes from
``default_rng([seed, epoch])`` and each batch's augmentation from
``default_rng([seed, epoch, step, 1])``, so a run can resume at any step and reproduce the
uninterrupted run exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

__all__ = ["AugmentConfig", "augment_batch", "epoch_permutation", "Batch", "train_batch", "eval_batches",
           "steps_per_epoch"]


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation switches.

    Attributes:
      crop_pad: reflect-pad this many pixels and crop back to the input size (0 = off).
      flip: random horizontal flip with probability 0.5.
      cutout: side of the zeroed square (0 = off); the square's centre is uniform over the
        image and it is clipped at the borders.
      cutout_p: probability of applying cutout to an image.
      pad_mode: ``np.pad`` mode of the crop padding: ``'reflect'`` (default here) or
        ``'constant'`` (zeros, torchvision's ``RandomCrop(padding=4)`` default used by the
        PyTorch SAM/AACE code).
    """

    crop_pad: int = 0
    flip: bool = False
    cutout: int = 0
    cutout_p: float = 0.5
    pad_mode: str = "reflect"

    def __post_init__(self) -> None:
        if self.crop_pad < 0:
            raise ValueError(f"`crop_pad` must be >= 0, got {self.crop_pad}.")
        if self.cutout < 0:
            raise ValueError(f"`cutout` must be >= 0, got {self.cutout}.")
        if not 0.0 <= self.cutout_p <= 1.0:
            raise ValueError(f"`cutout_p` must lie in [0, 1], got {self.cutout_p}.")
        if self.pad_mode not in ("reflect", "constant", "edge", "symmetric"):
            raise ValueError(f"`pad_mode` must be 'reflect', 'constant', 'edge' or 'symmetric', got {self.pad_mode!r}.")


def augment_batch(x: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator, *,
                  rows: slice | None = None, total: int | None = None) -> np.ndarray:
    """Augment a uint8 batch ``[B, H, W, C]``; returns a new array (input untouched).

    ``x`` may be rows ``rows`` of a batch of ``total`` images (one process's share): the
    random draws are made for all ``total`` images and only this share's are used, so the
    pieces of every process concatenate to the augmentation of the whole batch.
    """
    b, h, w, _ = x.shape
    total = b if total is None else total
    sl = slice(0, total) if rows is None else rows
    if sl.stop - sl.start != b:
        raise ValueError(f"`rows` {sl} does not match the {b} images of `x`.")
    out = x
    if cfg.crop_pad:
        p = cfg.crop_pad
        padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode=cfg.pad_mode)
        dy = rng.integers(0, 2 * p + 1, size=total)[sl]
        dx = rng.integers(0, 2 * p + 1, size=total)[sl]
        rr = dy[:, None] + np.arange(h)[None, :]  # [B, H]
        cc = dx[:, None] + np.arange(w)[None, :]  # [B, W]
        out = padded[np.arange(b)[:, None, None], rr[:, :, None], cc[:, None, :]]
    if cfg.flip:
        flip = (rng.random(total) < 0.5)[sl]
        out = np.where(flip[:, None, None, None], out[:, :, ::-1], out)
    if cfg.cutout:
        s = cfg.cutout
        apply = (rng.random(total) < cfg.cutout_p)[sl]
        cy = rng.integers(0, h, size=total)[sl]
        cx = rng.integers(0, w, size=total)[sl]
        y0, x0 = np.clip(cy - s // 2, 0, h), np.clip(cx - s // 2, 0, w)
        y1, x1 = np.clip(cy - s // 2 + s, 0, h), np.clip(cx - s // 2 + s, 0, w)
        yy, xx = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
        mask = ((yy >= y0[:, None, None]) & (yy < y1[:, None, None]) & (xx >= x0[:, None, None])
                & (xx < x1[:, None, None]) & apply[:, None, None])
        out = np.where(mask[..., None], np.zeros((), out.dtype), out)
    return np.ascontiguousarray(out)


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffling order of epoch ``epoch`` (a function of ``(seed, epoch)`` only)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class Batch(NamedTuple):
    """One batch: ``x`` uint8 ``[B, H, W, C]``, ``y`` int32 ``[B]``, ``idx`` int32 sample indices
    (SAF's buffer key; −1 marks padding), ``mask`` float32 ``[B]`` (1 = real example)."""

    x: np.ndarray
    y: np.ndarray
    idx: np.ndarray
    mask: np.ndarray


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Training steps per epoch (the last incomplete batch is dropped: one compiled shape)."""
    return n // batch_size


def train_batch(
    x: np.ndarray, y: np.ndarray, *, batch_size: int, seed: int, epoch: int, step: int,
    augment: AugmentConfig, perm: np.ndarray | None = None, rows: slice | None = None,
) -> Batch:
    """Training batch ``step`` of epoch ``epoch`` (deterministic).

    ``rows``: build only these rows of the global batch (a process's share, see
    ``experiments.common.distributed.local_rows``); the result equals the same rows of the
    whole batch."""
    if perm is None:
        perm = epoch_permutation(len(x), seed, epoch)
    idx = perm[step * batch_size:(step + 1) * batch_size]
    rng = np.random.default_rng([seed, epoch, step, 1])
    if rows is not None:
        idx = idx[rows]
    xb = augment_batch(x[idx], augment, rng, rows=rows, total=batch_size)
    return Batch(xb, y[idx].astype(np.int32), idx.astype(np.int32), np.ones(len(idx), np.float32))


def eval_batches(x: np.ndarray, y: np.ndarray, batch_size: int, rows: slice | None = None) -> Iterator[Batch]:
    """Sequential batches covering every example; the last one is padded (mask 0, idx −1).

    ``rows``: yield only these rows of each batch (a process's share)."""
    for b in _eval_batches(x, y, batch_size):
        yield b if rows is None else Batch(b.x[rows], b.y[rows], b.idx[rows], b.mask[rows])


def _eval_batches(x: np.ndarray, y: np.ndarray, batch_size: int) -> Iterator[Batch]:
    n = len(x)
    for start in range(0, n, batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        k = len(xb)
        mask = np.zeros(batch_size, np.float32)
        mask[:k] = 1.0
        idx = np.full(batch_size, -1, np.int32)
        idx[:k] = np.arange(start, start + k, dtype=np.int32)
        if k < batch_size:
            xb = np.concatenate([xb, np.zeros((batch_size - k, *xb.shape[1:]), xb.dtype)])
            yb = np.concatenate([yb, np.zeros(batch_size - k, yb.dtype)])
        yield Batch(xb, yb.astype(np.int32), idx, mask)
