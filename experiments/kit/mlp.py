"""The one ReLU MLP of the studies (flax linen)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["MLP"]


class MLP(nn.Module):
    """Flatten, ``hidden[0] → … → hidden[-1]`` ReLU layers, a linear ``head`` (and an optional
    linear ``aux_head`` on the same penultimate features, e.g. USKD's weak head).

    ``h_0 = flatten(x)``, ``h_i = relu(W_i h_{i−1} + b_i)``, ``out = W_o h_L + b_o``. Layers are
    named ``dense_<i>``, ``head``, ``aux_head``. ``train`` is accepted (and ignored) so the MLP is
    called like the BatchNorm models.

    Attributes:
      hidden: widths of the hidden layers (at least one).
      out: width of the main head (classes, bins or 1).
      aux_out: width of the auxiliary head (0 = none).

    Returns (``__call__``):
      ``{"out": [n, out], "features": [n, hidden[-1]]}`` plus ``"aux"`` when ``aux_out > 0``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> m = MLP(hidden=(8, 8), out=3)
      >>> v = m.init(jax.random.key(0), jnp.zeros((2, 8, 8, 1)))
      >>> m.apply(v, jnp.zeros((2, 8, 8, 1)))["out"].shape
      (2, 3)
    """

    hidden: tuple[int, ...]
    out: int
    aux_out: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        if not self.hidden:
            raise ValueError("`hidden` must name at least one layer width.")
        h = x.reshape(x.shape[0], -1).astype(jnp.float32)
        for i, w in enumerate(self.hidden):
            h = nn.relu(nn.Dense(w, name=f"dense_{i}")(h))
        res = {"out": nn.Dense(self.out, name="head")(h), "features": h}
        if self.aux_out:
            res["aux"] = nn.Dense(self.aux_out, name="aux_head")(h)
        return res
