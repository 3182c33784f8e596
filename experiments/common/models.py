"""Flax (linen) image classifiers used by the SAM / AACE / SAF papers' CIFAR recipes.

* :class:`WideResNet` — Zagoruyko & Komodakis 2016, pre-activation blocks; WRN-28-10
  (36.5 M parameters) and WRN-16-8 (11.0 M) on CIFAR.
* :class:`PyramidNet` — Han, Kim & Kim, CVPR 2017: channels grow additively by α/N per block,
  zero-padded identity shortcuts (average-pooled when striding); PyramidNet-272, α = 200 with
  bottleneck blocks (26.2 M parameters here; the paper quotes 26.0 M) is the AACE paper's second model.
* :class:`ResNet` — He et al. 2016: CIFAR ResNet-18 (3×3 stem, no max-pool; 11.2 M) and
  ResNet-20 (3 stages of 16/32/64 channels; 0.27 M).
* :class:`SmallCNN` — a 4-conv BatchNorm network for the embedded digits data.

All models take NHWC float inputs, have BatchNorm (``batch_stats`` collection) and are called
as ``model.apply(variables, x, train=bool)``; global average pooling makes them input-size
agnostic (8×8 digits, 28×28 Fashion-MNIST, 32×32 CIFAR). Convolutions use He-normal
(fan-out) initialisation as the reference PyTorch code does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from experiments.common.typecheck import check_field_types

__all__ = ["WideResNet", "PyramidNet", "ResNet", "SmallCNN", "ModelConfig", "build_model", "MODELS",
           "count_params"]

MODELS = ("wrn", "wrn28_10", "wrn16_8", "pyramidnet", "pyramidnet272", "resnet18", "resnet20", "cnn")

_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _bn(train: bool, momentum: float, dtype: Any, name: str | None = None) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-5, dtype=dtype, name=name)


def _conv(features: int, kernel: int, stride: int, dtype: Any, name: str | None = None) -> nn.Conv:
    return nn.Conv(features, (kernel, kernel), (stride, stride), padding=[(kernel // 2, kernel // 2)] * 2,
                   use_bias=False, kernel_init=_conv_init, dtype=dtype, name=name)


# ---------------------------------------------------------------------------------------------
# WideResNet
# ---------------------------------------------------------------------------------------------


class _WRNBlock(nn.Module):
    features: int
    stride: int
    dropout: float
    bn_momentum: float
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        o = nn.relu(_bn(train, self.bn_momentum, self.dtype)(x))
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.features:
            shortcut = _conv(self.features, 1, self.stride, self.dtype)(o)
        y = _conv(self.features, 3, self.stride, self.dtype)(o)
        y = nn.relu(_bn(train, self.bn_momentum, self.dtype)(y))
        if self.dropout > 0:
            y = nn.Dropout(self.dropout, deterministic=not train)(y)
        y = _conv(self.features, 3, 1, self.dtype)(y)
        return y + shortcut


class WideResNet(nn.Module):
    """WRN-d-k: ``(d − 4)/6`` pre-activation blocks per stage, widths 16k/32k/64k.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> m = WideResNet(depth=10, widen=1, num_classes=3)
        >>> v = m.init(jax.random.key(0), jnp.zeros((2, 8, 8, 1)), train=False)
        >>> m.apply(v, jnp.zeros((2, 8, 8, 1)), train=False).shape
        (2, 3)
    """

    depth: int = 28
    widen: int = 10
    num_classes: int = 10
    dropout: float = 0.0
    bn_momentum: float = 0.9
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if (self.depth - 4) % 6:
            raise ValueError(f"WideResNet `depth` must be 6n + 4, got {self.depth}.")
        n = (self.depth - 4) // 6
        x = _conv(16, 3, 1, self.dtype)(x.astype(self.dtype))
        for stage, width in enumerate((16 * self.widen, 32 * self.widen, 64 * self.widen)):
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                x = _WRNBlock(width, stride, self.dropout, self.bn_momentum, self.dtype)(x, train)
        x = nn.relu(_bn(train, self.bn_momentum, self.dtype)(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# PyramidNet
# ---------------------------------------------------------------------------------------------


class _PyramidBlock(nn.Module):
    width: int  # inner channels (bottleneck) or output channels (basic)
    stride: int
    bottleneck: bool
    bn_momentum: float
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        bn = lambda: _bn(train, self.bn_momentum, self.dtype)  # noqa: E731
        y = bn()(x)
        if self.bottleneck:
            out = self.width * 4
            y = nn.relu(bn()(_conv(self.width, 1, 1, self.dtype)(y)))
            y = nn.relu(bn()(_conv(self.width, 3, self.stride, self.dtype)(y)))
            y = bn()(_conv(out, 1, 1, self.dtype)(y))
        else:
            out = self.width
            y = nn.relu(bn()(_conv(self.width, 3, self.stride, self.dtype)(y)))
            y = bn()(_conv(self.width, 3, 1, self.dtype)(y))
        s = x
        if self.stride != 1:
            s = nn.avg_pool(s, (2, 2), (2, 2), padding="SAME")
        pad = out - s.shape[-1]
        if pad > 0:  # zero-padded identity shortcut
            s = jnp.pad(s, ((0, 0), (0, 0), (0, 0), (0, pad)))
        return y + s


class PyramidNet(nn.Module):
    """PyramidNet with additive widening: block ``k`` has ``16 + α·k/N`` channels (×4 out for
    bottleneck blocks); ``depth = 9n + 2`` (bottleneck) or ``6n + 2`` (basic).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> m = PyramidNet(depth=11, alpha=12, bottleneck=True, num_classes=3)
        >>> v = m.init(jax.random.key(0), jnp.zeros((2, 8, 8, 3)), train=False)
        >>> m.apply(v, jnp.zeros((2, 8, 8, 3)), train=False).shape
        (2, 3)
    """

    depth: int = 272
    alpha: int = 200
    bottleneck: bool = True
    num_classes: int = 10
    bn_momentum: float = 0.9
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        per = 9 if self.bottleneck else 6
        if (self.depth - 2) % per:
            raise ValueError(f"PyramidNet `depth` must be {per}n + 2 (bottleneck={self.bottleneck}), got {self.depth}.")
        n = (self.depth - 2) // per
        add = self.alpha / (3 * n)
        x = _bn(train, self.bn_momentum, self.dtype)(_conv(16, 3, 1, self.dtype)(x.astype(self.dtype)))
        dim = 16.0
        for stage in range(3):
            for i in range(n):
                dim += add
                stride = 2 if (stage > 0 and i == 0) else 1
                x = _PyramidBlock(int(round(dim)), stride, self.bottleneck, self.bn_momentum, self.dtype)(x, train)
        x = nn.relu(_bn(train, self.bn_momentum, self.dtype)(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# ResNet (CIFAR variants)
# ---------------------------------------------------------------------------------------------


class _BasicBlock(nn.Module):
    features: int
    stride: int
    bn_momentum: float
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = nn.relu(_bn(train, self.bn_momentum, self.dtype)(_conv(self.features, 3, self.stride, self.dtype)(x)))
        y = _bn(train, self.bn_momentum, self.dtype)(_conv(self.features, 3, 1, self.dtype)(y))
        s = x
        if self.stride != 1 or x.shape[-1] != self.features:
            s = _bn(train, self.bn_momentum, self.dtype)(_conv(self.features, 1, self.stride, self.dtype)(x))
        return nn.relu(y + s)


class ResNet(nn.Module):
    """CIFAR ResNet with basic blocks: ``stages`` blocks per stage, widths ``width·2^i``.

    ResNet-18: ``stages=(2, 2, 2, 2), width=64``; ResNet-20: ``stages=(3, 3, 3), width=16``.
    """

    stages: tuple[int, ...] = (2, 2, 2, 2)
    width: int = 64
    num_classes: int = 10
    bn_momentum: float = 0.9
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = _conv(self.width, 3, 1, self.dtype)(x.astype(self.dtype))
        x = nn.relu(_bn(train, self.bn_momentum, self.dtype)(x))
        for s, nblocks in enumerate(self.stages):
            for i in range(nblocks):
                stride = 2 if (s > 0 and i == 0) else 1
                x = _BasicBlock(self.width * 2 ** s, stride, self.bn_momentum, self.dtype)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


class SmallCNN(nn.Module):
    """conv-BN-ReLU ×2, 2×2 max-pool, conv-BN-ReLU ×2, global average pool, dense."""

    width: int = 32
    num_classes: int = 10
    bn_momentum: float = 0.9
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.astype(self.dtype)
        for i, f in enumerate((self.width, self.width, 2 * self.width, 2 * self.width)):
            x = nn.relu(_bn(train, self.bn_momentum, self.dtype)(_conv(f, 3, 1, self.dtype)(x)))
            if i == 1:
                x = nn.max_pool(x, (2, 2), (2, 2))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which network (gin selector ``model``).

    Attributes:
      name: one of :data:`MODELS`. ``wrn28_10``, ``wrn16_8``, ``pyramidnet272`` (bottleneck,
        α = 200), ``resnet18``, ``resnet20`` fix the architecture; ``wrn``/``pyramidnet``/``cnn``
        read ``depth`` and ``width``.
      depth: depth for ``wrn`` (6n+4) and ``pyramidnet`` (9n+2 bottleneck / 6n+2 basic).
      width: widen factor k (``wrn``), α (``pyramidnet``), base channels (``resnet*``, ``cnn``);
        0 = the architecture's default.
      bottleneck: PyramidNet block type.
      dropout: WRN dropout (0 in the SAM/AACE recipes).
      bn_momentum: Flax BatchNorm momentum (0.9 = PyTorch's 0.1).
      dtype: compute dtype, ``'float32'`` or ``'bfloat16'`` (parameters stay float32).
    """

    name: str = "cnn"
    depth: int = 0
    width: int = 0
    bottleneck: bool = True
    dropout: float = 0.0
    bn_momentum: float = 0.9
    dtype: str = "float32"

    def __post_init__(self) -> None:
        check_field_types(self, "model")
        if self.name not in MODELS:
            raise ValueError(f"`model.name` must be one of {MODELS}, got {self.name!r}.")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"`model.dtype` must be 'float32' or 'bfloat16', got {self.dtype!r}.")
        if self.depth < 0 or self.width < 0:
            raise ValueError("`model.depth` and `model.width` must be >= 0.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`model.dropout` must lie in [0, 1), got {self.dropout}.")


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """Instantiate the network described by ``cfg`` with ``num_classes`` outputs."""
    dt = jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32
    common = dict(num_classes=num_classes, bn_momentum=cfg.bn_momentum, dtype=dt)
    name = cfg.name
    if name == "wrn28_10":
        return WideResNet(28, 10, dropout=cfg.dropout, **common)
    if name == "wrn16_8":
        return WideResNet(16, 8, dropout=cfg.dropout, **common)
    if name == "wrn":
        return WideResNet(cfg.depth or 28, cfg.width or 10, dropout=cfg.dropout, **common)
    if name == "pyramidnet272":
        return PyramidNet(272, 200, True, **common)
    if name == "pyramidnet":
        return PyramidNet(cfg.depth or 272, cfg.width or 200, cfg.bottleneck, **common)
    if name == "resnet18":
        return ResNet((2, 2, 2, 2), cfg.width or 64, **common)
    if name == "resnet20":
        return ResNet((3, 3, 3), cfg.width or 16, **common)
    return SmallCNN(cfg.width or 32, **common)


def count_params(params: Any) -> int:
    """Number of scalar parameters in a pytree."""
    return int(sum(x.size for x in jax.tree.leaves(params)))
