"""The public API as the README writes it: re-exports resolve, the table covers every function."""

import inspect
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lossjax

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
SUBPACKAGES = ("losses", "sharpness", "kernels", "scaling")


@pytest.mark.parametrize("name", SUBPACKAGES + ("",))
def test_all_names_resolve(name):
    mod = getattr(lossjax, name) if name else lossjax
    assert len(mod.__all__) == len(set(mod.__all__)), "duplicate names in __all__"
    for n in mod.__all__:
        assert hasattr(mod, n), f"{mod.__name__}.{n} is in __all__ but missing"


def test_top_level_reexports_are_the_sharpness_objects():
    for n in lossjax.__all__:
        if hasattr(lossjax.sharpness, n):
            assert getattr(lossjax, n) is getattr(lossjax.sharpness, n)
    assert lossjax.linear_cross_entropy is lossjax.kernels.linear_cross_entropy


def _table_names() -> set[str]:
    rows = [line for line in README.splitlines() if line.startswith("| `")]
    return {n for row in rows for n in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)\*?`", row.split("|")[1])}


@pytest.mark.parametrize("name", ("losses", "sharpness"))
def test_readme_table_lists_every_public_function(name):
    mod = getattr(lossjax, name)
    listed = _table_names()
    missing = [
        n for n in mod.__all__
        if inspect.isfunction(getattr(mod, n)) and n not in listed
        and not n.startswith("find_") and n not in ("saf_targets", "mesa_targets")
        or (n.endswith("_loss") and n not in listed)
    ]
    assert not missing, f"README table lacks {missing}"


def test_brief_one_liners():
    """The three lines of the project brief, checked against independent computations."""
    x = jnp.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
    y = jnp.array([0, 1])
    # GCE: (1 - p_y^q)/q
    p = np.exp(np.asarray(x, np.float64))
    p /= p.sum(-1, keepdims=True)
    gce = (1 - p[[0, 1], [0, 1]] ** 0.7) / 0.7
    np.testing.assert_allclose(
        lossjax.losses.generalized_cross_entropy_loss(x, y, q=0.7).mean(), gce.mean(), rtol=1e-6)
    # linear CE equals optax's CE on the full logits
    e = jax.random.normal(jax.random.key(0), (12, 8))
    c = jax.random.normal(jax.random.key(1), (37, 8))
    t = jnp.arange(12) % 37
    np.testing.assert_allclose(
        lossjax.kernels.linear_cross_entropy(e, c, t),
        optax.softmax_cross_entropy_with_integer_labels(e @ c.T, t).mean(), rtol=1e-5)
    # aace_sam in a chain: one update = grad at w - rho * g_ascent (no normalisation), then SGD
    tx = optax.chain(lossjax.aace_sam(rho=0.2), optax.sgd(0.1))
    params = {"w": jnp.array([1.0, -2.0])}
    def grad_fn(q):  # ∇ of w1² + 3 w2²
        return {"w": jnp.array([2.0, 6.0]) * q["w"]}

    ascent = {"w": jnp.array([0.5, 0.25])}
    updates, _ = tx.update(ascent, tx.init(params), params, grad_fn=grad_fn)
    w_pert = np.array([1.0, -2.0]) - 0.2 * np.array([0.5, 0.25])
    np.testing.assert_allclose(updates["w"], -0.1 * np.array([2.0, 6.0]) * w_pert, rtol=1e-6)
