"""Smoke test of the NMT scaling study (tiny grid cells, one seed) and its pieces against independent oracles:
the translation map restated in plain Python, parameter counts against the initialised leaves, the fit
metrics on losses generated from a known bivariate law."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import nmt_scaling_study as N
from experiments.kit import cli, report
from experiments.tasks import nmt_scaling as T
from lossjax.scaling.laws import nmt_bivariate_loss


def test_smoke_one_cell(tmp_path):
    args = cli.StudyArgs(configs=(os.path.join(N.CONFIG_DIR, "e8_d32.gin"),), custom=True, bindings=N.SMOKE_BINDINGS,
                         workdir=str(tmp_path / "runs"), report_dir=str(tmp_path / "out"), progress=False,
                         provenance=report.provenance(["python", "-m", "experiments.nmt_scaling_study", "--smoke"]))
    study = N.run(args)
    r = study["results"]["e8_d32"]
    assert "fits" not in study and not (tmp_path / "out").exists()  # < 5 cells: no fit, no report
    assert (r["n_enc"], r["n_dec"]) == T.param_counts(N.parse([os.path.join(N.CONFIG_DIR, "e8_d32.gin")]))
    ce, acc = np.asarray(r["metrics"]["test_ce"]), np.asarray(r["metrics"]["test_acc"])
    assert ce.shape == (1,) and np.all((ce > 0) & (ce < 2 * np.log(16))) and np.all((acc >= 0) & (acc <= 1))
    assert N.run(args)["results"]["e8_d32"]["skipped"]  # a finished run is reloaded, not retrained


def test_translate_matches_a_python_restatement():
    vocab, length = 16, 8
    m = T.make_translation_map(vocab, length)
    src = np.asarray(jax.random.randint(jax.random.PRNGKey(3), (50, length), 0, vocab))
    got = np.asarray(T.translate(jnp.asarray(src), m, vocab))
    for s, g in zip(src, got):
        t = []
        for i in range(length):
            j = m["perm"][i]
            table = m["sub_a"] if s[(j + 1) % length] < vocab // 2 else m["sub_b"]
            t.append(table[s[j]])
        if s[0] % 2 == 1:
            t = [t[i ^ 1] for i in range(length)]
        assert list(g) == t
    assert sorted(m["perm"]) == list(range(length))  # a permutation; the map is fixed
    np.testing.assert_array_equal(T.make_translation_map(vocab, length)["sub_a"], m["sub_a"])
    with pytest.raises(ValueError, match="vocab"):
        T.make_translation_map(1, 8)


def test_param_counts_match_the_leaves():
    cfg = N.parse([], ["nmt.enc_width = 5", "nmt.dec_width = 7"])
    p = T.init_params(jax.random.PRNGKey(0), cfg)
    n_enc, n_dec = T.param_counts(cfg)
    assert sum(x.size for x in jax.tree_util.tree_leaves(p["enc"])) == n_enc
    assert sum(x.size for x in jax.tree_util.tree_leaves(p["dec"])) == n_dec
    with pytest.raises(ValueError, match="enc_width"):
        N.parse([], ["nmt.enc_width = 0"])


def test_mape_and_r2_by_hand():
    assert T.mape(np.array([1.1, 1.8]), np.array([1.0, 2.0])) == pytest.approx(10.0)
    assert T.r_squared(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0])) == pytest.approx(1 - 9 / 42)
    assert T.r_squared(np.array([2.0, 3.0]), np.array([2.0, 3.0])) == 1.0


def test_fit_grid_recovers_a_known_law_and_renders_the_report():
    # every grid cell with losses from a known law (one "seed"); references as fit_metrics chooses them
    cfgs = {a: N.parse([os.path.join(N.CONFIG_DIR, f"{a}.gin")]) for a in N.ARMS}
    ne = np.array([T.param_counts(c)[0] for c in cfgs.values()], float)
    nd = np.array([T.param_counts(c)[1] for c in cfgs.values()], float)
    loss = np.asarray(nmt_bivariate_loss(ne, nd, beta=0.8, p_enc=0.2, p_dec=0.5, l_inf=1.0,
                                         n_enc_ref=np.exp(np.log(ne).mean()), n_dec_ref=np.exp(np.log(nd).mean())))
    results = {a: {"n_enc": int(e), "n_dec": int(d), "seeds": [0], "metrics": {"test_ce": [float(v)],
                                                                                "test_acc": [0.5]}}
               for a, e, d, v in zip(N.ARMS, ne, nd, loss)}
    fits = N.fit_grid(results)
    f = fits["per_seed"][0]
    assert f["p_enc"] == pytest.approx(0.2, rel=1e-3) and f["p_dec"] == pytest.approx(0.5, rel=1e-3)
    assert f["l_inf"] == pytest.approx(1.0, rel=1e-3) and f["split_ratio"] == pytest.approx(0.2 / 0.7, rel=1e-3)
    assert f["r2"] > 0.9999 and f["loo_mape_bivariate"] < 0.1
    assert f["loo_mape_total"] > 10 * f["loo_mape_bivariate"]  # the total-size law cannot express p_e != p_d
    md = N.render(results, fits)
    assert "| e128_d128 |" in md and "Interaction:" in md
    assert md.count("**held** here") == 3  # R², LOO MAPE and positive exponents, on exact law values
    with pytest.raises(ValueError, match="5 grid cells"):
        N.fit_grid({a: results[a] for a in N.ARMS[:4]})
