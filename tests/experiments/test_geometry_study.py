"""Smoke test of the geometry study (one collapse arm, one metric-learning arm, tiny) and its helpers against
independent oracles (brute-force retrieval, scikit-learn)."""


import numpy as np
import pytest

from experiments import geometry_study as G


def test_smoke_two_arms_report(tmp_path, smoke_args):
    args = smoke_args(G, "nc_ce", "ml_metrix")
    res = G.run(args)["results"]
    nc = {k: np.asarray(v) for k, v in res["nc_ce"]["metrics"].items()}
    assert set(nc) == set(G.NC_METRICS)
    assert np.all(np.isfinite(nc["nc1"])) and np.all(nc["nc1"] >= 0)
    assert np.all((nc["nc4"] >= 0) & (nc["nc4"] <= 1))
    ml = {k: np.asarray(v) for k, v in res["ml_metrix"]["metrics"].items()}
    assert np.all((ml["recall_1"] > 0.1) & (ml["recall_1"] <= ml["recall_4"]))
    assert np.all((ml["utilization"] >= 0) & (ml["utilization"] <= 2))  # distances of unit vectors
    md = (tmp_path / "out" / "geometry_study.md").read_text()
    assert "Neural collapse on the training features" in md and "Did the claim hold here?" in md


def test_recall_at_k_matches_brute_force_and_sklearn_knn():
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(0)
    e = rng.standard_normal((60, 5))
    y = rng.integers(0, 4, 60)
    en = e / np.linalg.norm(e, axis=1, keepdims=True)
    nn = NearestNeighbors(n_neighbors=4).fit(en)  # Euclidean on unit vectors = cosine order
    idx = nn.kneighbors(en, return_distance=False)
    for k in (1, 3):
        others = [[j for j in row if j != i][:k] for i, row in enumerate(idx)]
        want = np.mean([np.any(y[o] == y[i]) for i, o in enumerate(others)])
        assert G.recall_at_k(e, y, k) == pytest.approx(want)


def test_split_is_stratified_and_disjoint():
    d = G.make_data(G.GeometryConfig(), 1)
    assert d["x_train"].shape == (1257, 64) and d["x_test"].shape == (540, 64)
    counts = np.bincount(d["y_test"], minlength=10)
    assert counts.min() >= 52 and counts.max() <= 56
    m = G.make_data(G.GeometryConfig(task="metric", loss="ms"), 0)  # class-disjoint: 0-4 seen, 5-9 unseen
    assert set(np.unique(m["y_train"])) == set(range(5)) and set(np.unique(m["y_test"])) == set(range(5, 10))
    assert len(m["y_train"]) + len(m["y_test"]) == 1797
    with pytest.raises(ValueError, match="geometry.loss"):
        G.GeometryConfig(task="collapse", loss="ms")
