"""Central finite differences of a NumPy float64 oracle (the independent gradient reference)."""

import numpy as np


def fd_grad(f, x, eps=1e-6):
    """Gradient of the scalar ``f(x)`` (NumPy, float64) by central differences."""
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return g
