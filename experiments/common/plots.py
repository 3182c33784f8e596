"""PNG curves of a run (matplotlib, Agg backend; imported only when plotting)."""

from __future__ import annotations

import os

__all__ = ["plot_run", "plot_study"]


def plot_run(records: list[dict], path: str, title: str = "") -> str:
    """Four panels vs epoch: loss (train/test), accuracy (train/test), ascent-gradient norm and
    perturbation norm, learning rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in records]  # 1-based (metrics.jsonl)
    fig, ax = plt.subplots(1, 4, figsize=(16, 3.6))
    ax[0].plot(ep, [r["train_loss"] for r in records], label="train")
    te = [(r["epoch"], r["test_loss"], r["test_accuracy"]) for r in records if r.get("test_loss") is not None]
    if te:
        ax[0].plot([t[0] for t in te], [t[1] for t in te], label="test")
        ax[1].plot([t[0] for t in te], [100 * t[2] for t in te], label="test")
    ax[1].plot(ep, [100 * r["train_accuracy"] for r in records], label="train")
    ax[2].plot(ep, [r["ascent_norm"] for r in records], label="‖ascent grad‖")
    ax[2].plot(ep, [r["perturbation_norm"] for r in records], label="‖ε‖")
    ax[3].plot(ep, [r["lr"] for r in records])
    for a, t in zip(ax, ("loss", "accuracy (%)", "norms (epoch mean)", "learning rate")):
        a.set_title(t)
        a.set_xlabel("epoch")
        if a.get_legend_handles_labels()[0]:
            a.legend()
    ax[0].set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_study(curves: dict[str, list[list[float]]], path: str, title: str = "",
               ylabel: str = "test accuracy (%)") -> str:
    """Mean ± std over seeds of one curve per method (``{method: [per-seed curve, ...]}``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, runs in curves.items():
        a = np.asarray(runs, dtype=float)
        m, s = a.mean(0), a.std(0)
        x = np.arange(1, a.shape[1] + 1)
        ax.plot(x, m, label=name)
        ax.fill_between(x, m - s, m + s, alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
