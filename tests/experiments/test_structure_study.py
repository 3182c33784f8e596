"""Smoke test of the structure study (the hyperbolic arm, the watershed-superpixel arm and the Hyp-OC one-class arm,
tiny) and its helpers against independent oracles (scikit-learn, brute-force loops)."""

import dataclasses
import os

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import structure_study as G
from experiments.kit import cli
from experiments.tasks import one_class as O
from experiments.tasks import structure as T


def test_smoke_two_arms_report(tmp_path, smoke_args):
    args = smoke_args(G, "hier_hyper_d2", "seg_sp_watershed")
    res = G.run(args)["results"]
    h = {k: np.asarray(v) for k, v in res["hier_hyper_d2"]["metrics"].items()}
    assert set(h) == set(G.HIER_METRICS)
    assert np.all((h["test_acc"] >= 0) & (h["test_acc"] <= h["coarse_acc"]) & (h["coarse_acc"] <= 1))
    s = {k: np.asarray(v) for k, v in res["seg_sp_watershed"]["metrics"].items()}
    assert set(s) == set(G.SEG_METRICS) | {"iou"}
    assert np.all((s["dice"] >= 0) & (s["dice"] <= 1)) and np.all(s["sp_var_out"] <= s["sp_var_raw"] + 1e-9)
    md = (tmp_path / "out" / "structure.md").read_text()
    assert "Hierarchical leaf classification" in md and "not run here" in md  # claims need both arms


def test_macro_f1_matches_sklearn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 6, 80), rng.integers(0, 7, 80) % 6
    p[:5] = 0  # class 5 may be absent from one side: both count it as 0
    want = f1_score(y, p, labels=np.arange(7), average="macro", zero_division=0)
    assert T.macro_f1(p, y, 7) == pytest.approx(want)


def test_within_segment_variance_matches_loop():
    rng = np.random.default_rng(1)
    p, seg = rng.random((2, 5, 4)), rng.integers(0, 3, (2, 5, 4))
    tot = 0.0
    for i in range(2):
        for s in range(3):
            v = p[i][seg[i] == s]
            tot += ((v - v.mean()) ** 2).sum() if v.size else 0.0
    assert T.within_segment_variance(p, seg, 3) == pytest.approx(tot / p.size)


def test_superpixels_cover_ids_and_follow_a_step_edge():
    x = np.zeros((1, 12, 12), np.float32)
    x[:, :, 5:] = 1.0
    ws, n = T.superpixels(x, kind="watershed", cell=3)
    grid, m = T.superpixels(x, kind="grid", cell=3)
    assert n == m == 16 and ws.shape == grid.shape == (1, 12, 12)
    assert set(np.unique(ws)) == set(range(16)) and set(np.unique(grid)) == set(range(16))
    side = np.broadcast_to(np.arange(12) >= 5, (12, 12))
    for s in range(16):  # every watershed region lies on one side of the edge (the grid's straddle it)
        assert len(np.unique(side[ws[0] == s])) == 1
    assert any(len(np.unique(side[grid[0] == s])) == 2 for s in range(16))
    with pytest.raises(ValueError, match="kind"):
        T.superpixels(x, kind="slic", cell=3)


def test_blend_matches_numpy():
    rng = np.random.default_rng(2)
    z, seg = rng.standard_normal((2, 4, 4)).astype(np.float32), rng.integers(0, 5, (2, 4, 4))
    got = np.asarray(T._blend(jnp.asarray(z), jnp.asarray(seg), 5, 0.25))
    mean = np.stack([[z[b][seg[b] == s].mean() if (seg[b] == s).any() else 0.0 for s in range(5)] for b in range(2)])
    want = 0.75 * z + 0.25 * np.take_along_axis(mean, seg.reshape(2, -1), 1).reshape(z.shape)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_tree_data_is_deterministic_and_hierarchical():
    kw = dict(branching=3, depth=2, input_dim=64, noise=0.0, decay=0.5, n_train_per_leaf=2, n_test_per_leaf=1)
    a, b = T.make_tree_data(3, **kw), T.make_tree_data(3, **kw)
    np.testing.assert_array_equal(a["x_train"], b["x_train"])
    assert a["paths"].tolist() == [[i // 3, i] for i in range(9)]
    assert np.bincount(a["y_train"]).tolist() == [2] * 9
    c = np.stack([a["x_test"][a["y_test"] == k][0] for k in range(9)])  # noise 0: the leaf centres
    d = np.linalg.norm(c[:, None] - c[None], axis=-1)
    sib = (a["paths"][:, None, 0] == a["paths"][None, :, 0]) & ~np.eye(9, dtype=bool)
    assert d[sib].max() < d[~sib & ~np.eye(9, dtype=bool)].min()  # siblings share the large level-1 vector
    with pytest.raises(ValueError, match="branching"):
        T.make_tree_data(0, **{**kw, "branching": 1})


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="head"):
        G.StructureConfig(head="poincare")
    with pytest.raises(ValueError, match="superpixels"):
        G.StructureConfig(task="seg", superpixels="slic")
    with pytest.raises(ValueError, match="batch_size"):
        G.StructureConfig(task="seg", n_train=8, batch_size=16)
    with pytest.raises(ValueError, match="released"):
        G.StructureConfig(task="oneclass", head="euclid", confusion="released")
    with pytest.raises(ValueError, match="even"):
        G.StructureConfig(task="oneclass", head="hyper", batch_size=21)
    with pytest.raises(ValueError, match="confusion"):
        G.StructureConfig(task="oneclass", confusion="arctan")


def test_smoke_oneclass_arm(tmp_path):
    args = cli.StudyArgs(configs=(os.path.join(G.CONFIG_DIR, "oc_hyp.gin"),), custom=True,
                         bindings=(*G.SMOKE_BINDINGS, "structure.seeds = (3,)"), workdir=str(tmp_path / "runs"),
                         report_dir=None, progress=False)
    r = G.run(args)["results"]["oc_hyp"]
    assert set(r["metrics"]) == set(G.OC_METRICS) and r["normal_digits"] == [3]
    assert 0 <= r["metrics"]["auroc"][0] <= 1 and 0 <= r["metrics"]["hter"][0] <= 1
    assert 0.5 < r["baseline_auroc"][0] <= 1 and np.isfinite(r["train_loss_curve"]).all()
    md = G.render(G.run(dataclasses.replace(args, progress=False))["results"])  # reloaded (finished run)
    assert "One-class anomaly detection" in md and "| oc_hyp |" in md


def test_auroc_and_hter_match_sklearn():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 120)
    s = np.round(rng.standard_normal(120) + 0.8 * y, 1)  # rounded: ties between the classes
    assert O.auroc(s[y == 1], s[y == 0]) == pytest.approx(roc_auc_score(y, s))
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)  # thresholds: +inf then every distinct score
    fnr = 1 - tpr
    i = np.lexsort(((fpr + fnr) / 2, np.abs(fpr - fnr)))[0]
    assert O.eer_hter(s, y) == pytest.approx((fpr[i] + fnr[i]) / 2)
    assert O.eer_hter(np.where(y == 1, 2.0, -2.0), y) == 0.0 and O.eer_hter(np.where(y == 1, -2.0, 2.0), y) == 1.0


def test_one_class_data_and_features():
    a, b = O.make_one_class_data(0, n_train=50), O.make_one_class_data(7, n_train=50)
    np.testing.assert_array_equal(a["x_test"], b["x_test"])  # one test pool, labels depend on the normal digit
    assert np.all((a["digit_test"] == 0) == (a["y_test"] == 0)) and np.all((b["digit_test"] == 7) == (b["y_test"] == 0))
    tr = {r.tobytes() for r in a["x_train"]}
    assert not any(r.tobytes() in tr for r in a["x_test"][a["y_test"] == 0])  # held-out normals are new images
    ftr, fte = O.pca_features(a["x_train"], a["x_test"], 8)
    from sklearn.decomposition import PCA

    pca = PCA(8).fit(a["x_train"])
    ref = pca.transform(a["x_test"]) / np.sqrt(pca.explained_variance_.mean() * 49 / 50)
    np.testing.assert_allclose(np.abs(fte), np.abs(ref), rtol=1e-3, atol=1e-4)  # PCA up to component signs
    assert ftr.var(0).mean() == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match="n_train"):
        O.make_one_class_data(0, n_train=170)
