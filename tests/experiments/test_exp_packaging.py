"""The install split: a light base (jax, jaxlib, optax, chex, numpy); Flax, orbax and the
TensorBoard writer only with the extras the experiments need."""

import os
import re
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _names(reqs):
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in reqs}


def test_base_and_extras():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        proj = tomllib.load(f)["project"]
    assert _names(proj["dependencies"]) == {"jax", "jaxlib", "optax", "chex", "numpy"}
    extras = proj["optional-dependencies"]
    assert "flax" in _names(extras["flax"])
    exp = _names(extras["experiments"])
    assert {"lossjax", "orbax-checkpoint", "tensorboardx", "gin-config"} <= exp
    assert "lossjax[flax]" in extras["experiments"]
    assert "tensorboard" in _names(extras["test"])  # the event reader of the TensorBoard test
    assert "experiments" in extras["all"][0] and "test" in extras["all"][0]
