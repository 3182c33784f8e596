"""The Pallas Mosaic-TPU kernels (linear cross-entropy and two-pass softmax) without a TPU.

* Values and gradients in Pallas's TPU interpret mode (``pltpu.InterpretParams``) against the float64
  oracle: every option (bias, softcap, label smoothing, z-loss through the lse cotangent, ignore_index,
  filter), edge blocks (N not a multiple of 8 or of the row tile, V not a multiple of the vocabulary tile),
  bf16, an all-ignored batch, NaN propagation.
* Lowering for the ``tpu`` platform on this CPU host (the Pallas -> Mosaic lowering, including its (8, 128)
  block-shape rule, runs at lowering time; Mosaic's compilation to TPU code needs a TPU).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _kernels_oracle import make_data, ref_linear_ce, rel

from lossjax.kernels.linear_ce_common import LinearCEConfig
from lossjax.kernels.linear_ce_tpu import TpuConfig, _Tiles, tpu_nll_lse, tpu_rows, tpu_tiles
from lossjax.kernels.softmax_tpu import two_pass_log_softmax_tpu, two_pass_softmax_tpu

IGNORE = -100


def _loss_fn(cfg: LinearCEConfig, tconf: TpuConfig, z_loss: float):
    """jit(value_and_grad) of sum_i cot_i (nll_i + z_loss lse_i^2 [valid]) w.r.t. (E, C, b); also returns lse."""

    def f(e, c, b, t, cot):
        nll, lse = tpu_rows(e, c, b, t, cfg, tconf, on_tpu=False)
        per_row = nll + jnp.where(t != IGNORE, z_loss * lse * lse, 0.0)
        return jnp.sum(cot * per_row), (per_row, lse)

    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))


FULL = dict(softcap=5.0, smooth=0.1, z_loss=1e-2)


@pytest.fixture(scope="module")
def full_options():
    """All options at once, with edge blocks along both axes: N=37 with bn=16, V=300 with bv=128."""
    cfg = LinearCEConfig(softcap=FULL["softcap"], label_smoothing=FULL["smooth"], ignore_index=IGNORE)
    return _loss_fn(cfg, TpuConfig(block_n=16, block_v=128, interpret=True), FULL["z_loss"])


def _check(fn, e, c, t, b, *, tol, **opts):
    cot = np.random.default_rng(3).standard_normal(len(t)).astype(np.float32)
    (_, (per_row, lse)), (de, dc, db) = fn(e, c, b, t, cot)
    loss64, lse64, de64, dc64, db64 = ref_linear_ce(
        e, c, t, bias=b, softcap=opts.get("softcap"), smooth=opts.get("smooth", 0.0),
        z_loss=opts.get("z_loss", 0.0), reduction="none", cot=cot)
    assert rel(per_row, loss64) <= tol
    assert rel(lse, lse64) <= tol
    assert rel(de, de64) <= tol
    assert rel(dc, dc64) <= tol
    if b is not None:
        assert rel(db, db64) <= tol
    assert np.all(np.asarray(de)[t == IGNORE] == 0.0)
    return per_row, de, dc, db


def test_all_options_edge_blocks_f32(full_options):
    e, c, t, b = make_data(37, 32, 300, seed=1)
    assert (t == IGNORE).any() and (t != IGNORE).any()
    _check(full_options, e, c, t, b, tol=1e-5, **FULL)


def test_all_ignored_batch_gives_zero_loss_and_grads(full_options):
    e, c, _, b = make_data(37, 32, 300, seed=2)
    t = np.full(37, IGNORE, np.int32)
    (val, (per_row, lse)), grads = full_options(e, c, b, t, np.ones(37, np.float32))
    assert float(val) == 0.0 and np.all(np.asarray(per_row) == 0.0)
    assert np.all(np.isfinite(lse))
    for g in grads:
        assert np.all(np.asarray(g) == 0.0)


def test_nan_row_gives_nan_for_that_row_only(full_options):
    e, c, t, b = make_data(37, 32, 300, seed=3)
    e[5, 7] = np.nan
    (_, (per_row, lse)), _ = full_options(e, c, b, t, np.ones(37, np.float32))
    assert np.isnan(lse[5]) and np.isfinite(np.delete(np.asarray(lse), 5)).all()
    assert np.isfinite(np.delete(np.asarray(per_row), 5)).all()


def test_default_tiles_full_dimension_blocks():
    # N=37 (not a multiple of 8) and V=300 (not a multiple of 128) become single full-dimension blocks
    tiles = tpu_tiles(37, 300, 48, 4, TpuConfig(), on_tpu=False)
    assert (tiles.bn, tiles.bv, tiles.interpret) == (37, 300, True)
    fn = _loss_fn(LinearCEConfig(ignore_index=IGNORE), TpuConfig(), 0.0)
    e, c, t, _ = make_data(37, 48, 300, seed=4)
    _check(fn, e, c, t, None, tol=1e-5)


def test_bf16_against_f32_reference_on_rounded_inputs():
    e, c, t, b = make_data(24, 32, 256, seed=5)
    e16, c16, b16 = (jnp.asarray(x, jnp.bfloat16) for x in (e, c, b))
    cfg = LinearCEConfig(softcap=5.0, ignore_index=IGNORE)
    fn = _loss_fn(cfg, TpuConfig(block_n=8, block_v=128), 0.0)
    cot = np.ones(24, np.float32)
    (_, (per_row, lse)), (de, dc, db) = fn(e16, c16, b16, t, cot)
    assert (de.dtype, dc.dtype, db.dtype, lse.dtype) == (jnp.bfloat16, jnp.bfloat16, jnp.bfloat16, jnp.float32)
    r = [np.asarray(x, np.float32) for x in (e16, c16, b16)]
    loss64, lse64, de64, dc64, db64 = ref_linear_ce(*r[:2], t, bias=r[2], softcap=5.0, reduction="none", cot=cot)
    assert rel(per_row, loss64) <= 1e-3 and rel(lse, lse64) <= 1e-5
    for got, want in ((de, de64), (dc, dc64), (db, db64)):
        assert rel(got, want) <= 2e-2


def test_filter_above_max_gradient_zeroes_grads_not_values():
    # |softmax - onehot| <= 1 < 2 everywhere: every tile is filtered; the forward is unaffected
    e, c, t, _ = make_data(16, 16, 256, seed=6)
    fn = _loss_fn(LinearCEConfig(ignore_index=IGNORE, filter_eps=2.0), TpuConfig(block_n=8, block_v=128), 0.0)
    (_, (per_row, _)), (de, dc, _) = fn(e, c, None, t, np.ones(16, np.float32))
    loss64 = ref_linear_ce(e, c, t, reduction="none")[0]
    assert rel(per_row, loss64) <= 1e-5
    assert np.all(np.asarray(de) == 0.0) and np.all(np.asarray(dc) == 0.0)


def test_config_errors_name_the_argument():
    with pytest.raises(ValueError, match="block_n"):
        TpuConfig(block_n=12)
    with pytest.raises(ValueError, match="block_v"):
        TpuConfig(block_v=100)
    with pytest.raises(ValueError, match="vmem_limit_bytes"):
        TpuConfig(vmem_limit_bytes=0)
    with pytest.raises(ValueError, match="block_cols"):
        two_pass_softmax_tpu(jnp.zeros((2, 3)), block_cols=100)


def test_tiles_shrink_to_the_vmem_budget():
    # bf16, D=4096: 512 x 512 tiles need ~33 MiB; a 16 MiB budget halves them until they fit
    big = tpu_tiles(8192, 131072, 4096, 2, TpuConfig(vmem_limit_bytes=64 << 20), on_tpu=True)
    small = tpu_tiles(8192, 131072, 4096, 2, TpuConfig(vmem_limit_bytes=16 << 20), on_tpu=True)
    assert (big.bn, big.bv) == (512, 512)
    assert small.bn * small.bv < big.bn * big.bv and small.bn % 8 == 0 and small.bv % 128 == 0


# ------------------------------------------------------------------------------------------------------
# two-pass softmax
# ------------------------------------------------------------------------------------------------------
def _edge_rows(length: int) -> np.ndarray:
    rng = np.random.default_rng(length)
    r = rng.standard_normal(length)
    idx = np.arange(length)
    rows = [r * 5, r + 1e3, r + 2e4, r - 1e5, np.where(idx == length // 2, 1e30, 0.0),
            np.where(rng.random(length) < 0.5, 3e38, -3e38), np.where(idx % 2 == 0, -np.inf, r),
            np.full(length, -np.inf), np.where(idx == 0, 2.0, -np.inf), np.where(idx == length // 3, np.inf, r),
            r * 1e-30]
    return np.stack(rows).astype(np.float32)  # 11 rows: not a multiple of 8


@pytest.mark.parametrize("state", ["online", "extexp"])
def test_softmax_edge_rows(state):
    x = _edge_rows(300)  # 3 column blocks of 128, the last partial; 2 row blocks of 8, the last partial
    want = jax.nn.softmax(x, axis=-1)  # NaN pattern
    x64 = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        want64 = np.exp(x64 - x64.max(1, keepdims=True))
        want64 = want64 / want64.sum(1, keepdims=True)
    y = np.asarray(two_pass_softmax_tpu(x, algorithm=state, block_rows=8, block_cols=128))
    assert np.array_equal(np.isnan(y), np.isnan(np.asarray(want)))
    fin = ~np.isnan(want64)
    assert np.max(np.abs(y[fin] - want64[fin])) <= 5e-7
    ly = np.asarray(two_pass_log_softmax_tpu(x, algorithm=state, block_rows=8, block_cols=128))
    lw = np.asarray(jax.nn.log_softmax(x, axis=-1))
    assert np.array_equal(np.isnan(ly), np.isnan(lw))
    ok = np.isfinite(lw) & (np.abs(lw) < 1e3)
    assert np.max(np.abs(ly[ok] - lw[ok])) <= 1e-5
    # log(0): -inf (online); the extexp state clamps n to +-2^125, so -inf there means below -1e37
    neg = np.isneginf(lw)
    assert np.all(ly[neg] == -np.inf) if state == "online" else np.all(ly[neg] <= -1e37)


def test_softmax_length_one_bf16_axis0_and_grad():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 1)), jnp.bfloat16)
    y = two_pass_softmax_tpu(x, axis=-1)
    assert y.dtype == jnp.bfloat16 and np.all(np.asarray(y, np.float32) == 1.0)
    xf = np.random.default_rng(1).standard_normal((200, 3)).astype(np.float32)  # softmax over axis 0
    w = np.random.default_rng(2).standard_normal((200, 3)).astype(np.float32)
    g = jax.grad(lambda x: jnp.sum(w * two_pass_softmax_tpu(x, axis=0, block_cols=128)))(xf)
    g_ref = jax.grad(lambda x: jnp.sum(w * jax.nn.softmax(x, axis=0)))(xf)
    assert rel(g, g_ref) <= 1e-5


# ------------------------------------------------------------------------------------------------------
# lowering for the tpu platform (no TPU needed)
# ------------------------------------------------------------------------------------------------------
def _lower_tpu(fn, *args) -> str:
    return jax.jit(fn).trace(*args).lower(lowering_platforms=("tpu",)).as_text()


def test_linear_ce_kernels_lower_for_tpu():
    # Gemma-2-like D=2304, N and V not multiples of the tiles; every option on; bf16
    s = jax.ShapeDtypeStruct
    cfg = LinearCEConfig(softcap=30.0, label_smoothing=0.1, filter_eps=2.0 ** -12, ignore_index=IGNORE)

    def f(e, c, b, t):
        def loss(e, c, b):
            nll, lse = tpu_rows(e, c, b, t, cfg, TpuConfig(interpret=False), on_tpu=True)
            return jnp.sum(nll) + 1e-4 * jnp.sum(lse * lse)

        return jax.value_and_grad(loss, argnums=(0, 1, 2))(e, c, b)

    bf = jnp.bfloat16
    text = _lower_tpu(f, s((1000, 2304), bf), s((5000, 2304), bf), s((5000,), bf), s((1000,), jnp.int32))
    for name in ("lossjax_cce_tpu_fwd", "lossjax_cce_tpu_de", "lossjax_cce_tpu_dc"):
        assert name in text
    assert text.count("tpu_custom_call") == 3


def test_linear_head_statistics_kernel_lowers_for_tpu():
    # linear_ce_head(impl='tpu'): the forward kernel with the entropy accumulator and running argmax
    # ([bn, 1] int32 output and scratch) obeys the (8, 128) rule; its backward is XLA (no kernel)
    from lossjax.kernels import linear_ce_head

    s = jax.ShapeDtypeStruct

    def f(e, c, t):
        def g(e, c):
            o = linear_ce_head(e, c, t, impl="tpu", softcap=30.0, temperature=1.5, config=TpuConfig(interpret=False))
            return o.loss.astype(jnp.float32) + jnp.sum(o.entropy) + o.accuracy
        return jax.value_and_grad(g, argnums=(0, 1))(e, c)

    bf = jnp.bfloat16
    text = _lower_tpu(f, s((1000, 2304), bf), s((5000, 2304), bf), s((1000,), jnp.int32))
    assert "lossjax_cce_tpu_head_fwd" in text and text.count("tpu_custom_call") == 1


def test_softmax_kernels_lower_for_tpu():
    x = jax.ShapeDtypeStruct((100, 4099), jnp.float32)
    for fn in (two_pass_softmax_tpu, two_pass_log_softmax_tpu):
        for state in ("online", "extexp"):
            text = _lower_tpu(lambda x, fn=fn, state=state: fn(x, algorithm=state, interpret=False), x)
            assert "lossjax_softmax_tpu_pass1" in text and "lossjax_softmax_tpu_pass2" in text


def test_lowering_enforces_the_8_128_block_rule():
    # the check above has teeth: a row tile of 12 (neither a multiple of 8 nor N) is rejected by Mosaic
    s = jax.ShapeDtypeStruct
    tiles = _Tiles(bn=12, bv=128, vmem_limit=1 << 24, interpret=False)
    with pytest.raises(ValueError, match="divisible by 8 and 128"):
        _lower_tpu(lambda e, c, t: tpu_nll_lse(e, c, None, t, LinearCEConfig(), tiles),
                   s((37, 64), jnp.float32), s((300, 64), jnp.float32), s((37,), jnp.int32))


# ------------------------------------------------------------------------------------------------------
# the TPU benchmark script runs end to end (smoke shapes on CPU, kernels in interpret mode)
# ------------------------------------------------------------------------------------------------------
def test_tpu_benchmark_script_smoke_run(tmp_path):
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, LOSSJAX_SMOKE="1", PYTHONPATH=root, JAX_PLATFORMS="cpu")
    p = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "kernels_tpu.py"), "--out", str(tmp_path),
                        "--tag", "smoke", "--iters", "1"], capture_output=True, text=True, timeout=300, env=env,
                       cwd=root)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((tmp_path / "kernels_tpu_smoke.json").read_text())
    full = [r for r in res["check"] if r["case"] == "all_options_f32"][0]
    assert max(full[k] for k in ("loss_rel", "lse_rel", "dE_rel", "dC_rel", "db_rel")) <= 1e-5, full
    ignored = [r for r in res["check"] if r["case"] == "all_ignored"][0]
    assert ignored["loss"] == 0.0 and ignored["max_abs_grad"] == 0.0
    assert {(r["impl"], r["mode"]) for r in res["ce"] if "ms" in r} == {
        (i, m) for i in ("xla", "chunked", "tpu") for m in ("fwd", "fwd+bwd")}
    tpu_grad = [r for r in res["ce"] if r["impl"] == "tpu" and r["mode"] == "fwd+bwd"][0]
    assert tpu_grad["dE_rel_vs_xla"] < 2e-2 and tpu_grad["dC_rel_vs_xla"] < 2e-2  # bf16 inputs
    assert all(r["max_abs_err"] < 1e-2 for r in res["softmax"])
    assert "## ce" in (tmp_path / "kernels_tpu_smoke.md").read_text()


# ------------------------------------------------------------------------------------------------------
# dispatch: impl='tpu' through the public API, and what 'auto' picks on a TPU backend
# ------------------------------------------------------------------------------------------------------
def test_public_api_impl_tpu_matches_naive():
    from lossjax.kernels import linear_cross_entropy

    e, c, t, b = make_data(18, 16, 200, seed=7)
    e3, t3 = e.reshape(2, 9, 16), t.reshape(2, 9)
    opts = dict(bias=b, shift=1, label_smoothing=0.1, z_loss=1e-3, softcap=5.0, return_lse=True)

    def run(impl, **kw):
        def f(e, c):
            loss, lse = linear_cross_entropy(e, c, t3, impl=impl, **opts, **kw)
            return loss, lse

        return jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(e3, c)

    (loss, lse), grads = run("tpu")
    (loss_n, lse_n), grads_n = run("naive")
    assert lse.shape == (2, 8)
    assert rel(loss, loss_n) <= 1e-5 and rel(lse, lse_n) <= 1e-5
    assert rel(grads[0], grads_n[0]) <= 1e-5 and rel(grads[1], grads_n[1]) <= 1e-5


def test_auto_picks_the_tpu_kernels_on_a_tpu_backend(monkeypatch):
    from lossjax.kernels import ChunkedConfig, linear_cross_entropy, two_pass_softmax

    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    s = jax.ShapeDtypeStruct
    e, c, t = s((64, 256), jnp.bfloat16), s((1000, 256), jnp.bfloat16), s((64,), jnp.int32)

    def text(**kw):
        return _lower_tpu(lambda e, c, t: jax.grad(
            lambda e: linear_cross_entropy(e, c, t, **kw).astype(jnp.float32))(e), e, c, t)

    assert "lossjax_cce_tpu_fwd" in text()  # impl='auto'
    assert "lossjax_cce_tpu_dc" in text(impl="pallas")  # 'pallas' without a config means 'tpu' there
    assert "lossjax_cce_tpu" not in text(config=ChunkedConfig(block_v=256))  # explicit chunked knobs
    # the VMEM budget forces tiles below 256 x 256 (D = 8192, bf16, 16 MiB): 'auto' keeps the chunked path
    big_e, big_c = s((512, 8192), jnp.bfloat16), s((1024, 8192), jnp.bfloat16)
    tiles = tpu_tiles(512, 1024, 8192, 2, TpuConfig(), on_tpu=True)
    assert tiles.bn < 256
    assert "lossjax_cce_tpu" not in _lower_tpu(
        lambda e, c, t: linear_cross_entropy(e, c, t), big_e, big_c, s((512,), jnp.int32))
    x = s((16, 300), jnp.float32)
    assert "lossjax_softmax_tpu_pass1" in _lower_tpu(lambda x: two_pass_softmax(x), x)
