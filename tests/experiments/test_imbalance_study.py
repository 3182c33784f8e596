"""Smoke test of the imbalance study (two arms, tiny) and its data and metrics against independent oracles
(scikit-learn, hand-worked values, a float64 restatement of FGSM)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import imbalance_study as S
from experiments.tasks import imbalance as T


def test_smoke_one_arm_report(tmp_path, smoke_args):
    args = smoke_args(S, "adv_comp_sum")
    res = S.run(args)["results"]
    r = res["adv_comp_sum"]
    m = r["metrics"]
    assert set(m) == set(S.METRICS) and all(len(v) == 1 for v in m.values())
    assert all(0.0 <= v[0] <= 1.0 for v in m.values())
    assert m["top3"][0] >= m["top1"][0]
    assert r["n_train"] == sum(T.longtail_counts(40, 10.0)) and r["n_test"] == 500
    assert len(r["minority_classes"][0]) == 3
    md = (tmp_path / "out" / "imbalance.md").read_text()
    assert "| adv_comp_sum |" in md and "imbalance ratio 10" in md
    assert md.count("not run here") == len(S.CLAIMS)  # every claim compares with `ce`, not run here
    assert (tmp_path / "out" / "imbalance.png").stat().st_size > 0


def test_longtail_data_is_long_tailed_and_test_balanced():
    cfg = S.ImbalanceConfig(imbalance_ratio=50.0)
    d = T.make_longtail_data(cfg, 3)
    counts = np.bincount(d["y_train"], minlength=10)
    np.testing.assert_array_equal(counts, d["n_per_class"])
    assert sorted(counts, reverse=True) == T.longtail_counts(120, 50.0).tolist()
    assert counts.max() == 120 and counts.min() == 2  # 120 / 50 = 2.4
    np.testing.assert_array_equal(np.flatnonzero(d["minority"]), np.sort(np.argsort(counts)[:3]))
    test_counts = np.bincount(d["y_test"], minlength=10)  # stratified 500 of 1,797 (174-183 per class)
    assert test_counts.min() >= 48 and test_counts.max() <= 52
    assert 0.0 <= d["x_train"].min() and d["x_train"].max() <= 1.0 and d["x_train"].shape[1] == 64
    other = T.make_longtail_data(cfg, 4)  # another seed: another rarity order
    assert not np.array_equal(other["n_per_class"], d["n_per_class"])
    np.testing.assert_array_equal(T.make_longtail_data(cfg, 3)["y_train"], d["y_train"])  # deterministic


def test_metrics_match_sklearn():
    from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score, top_k_accuracy_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 400)
    lg = rng.standard_normal((400, 5)) + 1.5 * np.eye(5)[y]
    lg[:, 4] -= 3.0  # class 4 is rarely predicted: its F1 and recall are low
    minority = np.array([False, False, False, True, True])
    m = T.classification_metrics(lg, y, minority)
    pred = lg.argmax(-1)
    assert m["balanced_acc"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["minority_recall"] == pytest.approx(recall_score(y, pred, average=None)[3:].mean())
    assert m["top1"] == pytest.approx((pred == y).mean())
    assert m["top3"] == pytest.approx(top_k_accuracy_score(y, lg, k=3, labels=range(5)))


def test_ece_hand_worked_and_errors():
    # confidences 0.9 (right), 0.6 (wrong), 0.7 (right) in bins 9, 6, 7 of 10: (0.1 + 0.6 + 0.3) / 3
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    assert T.expected_calibration_error(p, np.array([0, 1, 1]), n_bins=10) == pytest.approx(1.0 / 3.0)
    # one bin: |accuracy - mean confidence|
    assert T.expected_calibration_error(p, np.array([0, 1, 1]), n_bins=1) == pytest.approx(abs(2 / 3 - 2.2 / 3))
    assert T.expected_calibration_error(np.eye(3), np.arange(3)) == 0.0
    with pytest.raises(ValueError, match="probs"):
        T.expected_calibration_error(np.ones((2, 2)) / 2, np.array([0]))


def test_fgsm_matches_a_float64_restatement():
    # linear model: ∇_x CE = W (p - onehot(y)), so the FGSM step is sign(W (p - e_y)) (clipped to [0, 1])
    rng = np.random.default_rng(1)
    W, x, y = rng.standard_normal((6, 3)), rng.random((4, 6)), np.array([0, 1, 2, 1])
    z = x @ W
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want = np.clip(x + 0.05 * np.sign((p - np.eye(3)[y]) @ W.T), 0, 1)
    f = jax.jit(lambda a, b: T.fgsm(lambda v: v @ jnp.asarray(W, jnp.float32), a, b, 0.05))
    got = f(jnp.asarray(x, jnp.float32), jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-6)
    assert np.abs(np.asarray(got) - x).max() <= 0.05 + 1e-6


def test_weighted_and_two_view_arms_have_finite_loss_and_gradient():
    model = S.task.sm.MLP((8,), 10)
    p = jax.tree.map(lambda a: a[0], S.task.sm.init_stacked(model, 64, [0]))  # NumPy init: nothing compiles
    x = jax.random.uniform(jax.random.key(1), (12, 64))
    y = jnp.arange(12) % 10
    batch = {"x": x, "y": y, "seed": jnp.zeros(12, jnp.uint32), "cw": jnp.tile(jnp.arange(1.0, 11.0), (12, 1))}
    # class-balanced CE: per-seed weights w (row 0 of batch["cw"]) give mean_i w_{y_i} CE_i
    cb = jax.jit(jax.value_and_grad(T.make_loss_fn(S.ImbalanceConfig(loss="cb_ce"), model)))
    logits = model.apply({"params": p}, x)["out"]
    want = np.mean((np.asarray(y) + 1.0) * np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, y)))
    assert float(cb(p, batch, jnp.int32(0))[0]) == pytest.approx(want, rel=1e-5)
    # the one arm with a per-step random key (two augmented views)
    fn = jax.jit(jax.value_and_grad(T.make_loss_fn(S.ImbalanceConfig(loss="ce_ntxent"), model)))
    v, g = fn(p, batch, jnp.int32(0))
    v2, _ = fn(p, batch, jnp.int32(1))
    assert np.isfinite(float(v)) and all(np.all(np.isfinite(a)) for a in jax.tree.leaves(g))
    assert float(v) != float(v2)  # another step, other views


def test_config_and_counts_errors():
    assert T.longtail_counts(100, 1.0, 4).tolist() == [100] * 4
    with pytest.raises(ValueError, match="ratio"):
        T.longtail_counts(100, 0.5)
    with pytest.raises(ValueError, match="imbalance.loss"):
        S.ImbalanceConfig(loss="mse")
    with pytest.raises(ValueError, match="imbalance.n_minority"):
        S.ImbalanceConfig(n_minority=10)
    with pytest.raises(ValueError, match="imbalance.n_max"):
        T.make_longtail_data(S.ImbalanceConfig(n_max=500), 0)
    assert S.parse([os.path.join(S.CONFIG_DIR, "dce_focal.gin")]).dce_focal_beta == 0.5
