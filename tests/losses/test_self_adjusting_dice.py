"""One Tversky loss: the self-adjusting-Dice module's ``tversky_loss`` is a thin call into
:func:`lossjax.losses.tversky_loss` (segmentation), checked against a float64 NumPy oracle of the
Li et al. (ACL 2020) set-level / per-example form."""

import jax
import numpy as np
import pytest

import lossjax.losses as L
from lossjax.losses import segmentation, self_adjusting_dice


def _ref(x, y, a, b, g, set_level):
    p = np.exp(x - x.max(-1, keepdims=True))
    p = p / p.sum(-1, keepdims=True)
    t = np.eye(x.shape[-1])[y]
    tp, fp, fn = p * t, p * (1 - t), (1 - p) * t
    if set_level:
        tp, fp, fn = tp.sum(0), fp.sum(0), fn.sum(0)
    return np.mean(1 - (tp + g) / (tp + a * fp + b * fn + g), axis=-1)


def test_one_public_tversky_and_the_compatibility_call():
    assert L.tversky_loss is segmentation.tversky_loss
    assert "tversky_loss" not in self_adjusting_dice.__all__
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3)) * 2
    y = rng.integers(0, 3, 5)
    with jax.enable_x64(True):
        for set_level in (True, False):
            got = self_adjusting_dice.tversky_loss(x, y, alpha=0.3, beta=0.7, smooth=0.5, set_level=set_level)
            np.testing.assert_allclose(got, _ref(x, y, 0.3, 0.7, 0.5, set_level), rtol=1e-12)
        # it is the public loss with the mapped arguments
        np.testing.assert_allclose(
            self_adjusting_dice.tversky_loss(x, y, smooth=0.5),
            L.tversky_loss(x, y, alpha=0.3, beta=0.7, smooth_nr=0.5, smooth_dr=0.5, from_logits=True,
                           aggregate="dataset"), rtol=1e-14)
        # binary: one logit, labels [N] (int or float) or [N, 1]
        xb = np.array([[2.0], [-1.0], [0.3]])
        for yb in (np.array([1, 0, 1]), np.array([1.0, 0.0, 1.0]), np.array([[1.0], [0.0], [1.0]])):
            np.testing.assert_allclose(self_adjusting_dice.tversky_loss(xb, yb, alpha=0.5, beta=0.5),
                                       0.1421516588, rtol=1e-9)
    with pytest.raises(ValueError, match="where"):
        self_adjusting_dice.tversky_loss(x, y, where=np.ones((5, 3), bool))
    with pytest.raises(ValueError, match="smooth"):
        self_adjusting_dice.tversky_loss(x, y, smooth=0.0)
