"""lossjax: cross-entropy-family losses, sharpness-aware optax transformations and CE kernels."""

__version__ = "0.1.0"
