"""docs/design/kernels.md §5 check 10: the GPU kernels lower for CUDA (Pallas-Triton) on a CPU-only host
via an abstract H100.

Only the Triton IR lowering runs here (PTX compilation needs a GPU). Skipped when the installed jax lacks
the abstract-device API.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from lossjax.kernels import PallasConfig, linear_cross_entropy, two_pass_log_softmax, two_pass_softmax


def _abstract_h100_mesh():
    sh = jax.sharding
    if not all(hasattr(sh, n) for n in ("AbstractDevice", "AbstractMesh", "use_abstract_mesh", "AxisType")):
        pytest.skip(f"jax {jax.__version__} has no AbstractDevice / use_abstract_mesh")
    try:
        adev = sh.AbstractDevice(device_kind="NVIDIA H100 80GB HBM3", num_cores=132, platform="cuda")
        return sh.AbstractMesh((1,), ("x",), (sh.AxisType.Explicit,), abstract_device=adev)
    except TypeError as err:
        pytest.skip(f"abstract CUDA device unsupported by jax {jax.__version__}: {err}")


def _lower(fn, *args):
    with jax.sharding.use_abstract_mesh(_abstract_h100_mesh()):
        return jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()


@pytest.mark.parametrize("fwd_loop,bwd_impl", [("nested", "pallas"), ("flat", "xla")])
def test_linear_ce_kernels_lower_to_triton(fwd_loop, bwd_impl):
    # Gemma-2-like D=2304 (not a power of two: loads are power-of-two pl.ds slices), V and N not divisible
    e = jax.ShapeDtypeStruct((1000, 2304), jnp.bfloat16)
    c = jax.ShapeDtypeStruct((5000, 2304), jnp.bfloat16)
    t = jax.ShapeDtypeStruct((1000,), jnp.int32)

    def f(e, c, t):
        return jax.value_and_grad(lambda e, c: linear_cross_entropy(
            e, c, t, impl="pallas", softcap=30.0, label_smoothing=0.1, filter_eps="auto",
            config=PallasConfig(interpret=False, fwd_loop=fwd_loop, bwd_impl=bwd_impl),
            bias=jnp.zeros((5000,), jnp.bfloat16),
        ).astype(jnp.float32), argnums=(0, 1))(e, c)

    text = _lower(f, e, c, t)
    assert "lossjax_cce_fwd" in text
    assert ("lossjax_cce_grad_logits" in text) == (bwd_impl == "pallas")
    assert "triton" in text.lower()


def test_softmax_kernels_lower_to_triton():
    x = jax.ShapeDtypeStruct((100, 4099), jnp.float32)
    for fn in (two_pass_softmax, two_pass_log_softmax):
        for state in ("online", "extexp"):
            text = _lower(lambda x, fn=fn, state=state: fn(x, impl="pallas", algorithm=state, interpret=False), x)
            assert "lossjax_softmax_pass1" in text and "lossjax_softmax_pass2" in text


def test_non_power_of_two_blocks_rejected_before_lowering():
    e = jnp.zeros((64, 64))
    c = jnp.zeros((256, 64))
    t = jnp.zeros((64,), jnp.int32)
    with pytest.raises(ValueError, match="block_n must be a power of two"):
        linear_cross_entropy(e, c, t, impl="pallas", config=PallasConfig(interpret=False, block_n=48))
    with pytest.raises(ValueError, match="block_v must be a power of two"):
        linear_cross_entropy(e, c, t, impl="pallas", config=PallasConfig(interpret=False, block_v=96))
    with pytest.raises(ValueError, match="block_cols must be a power of two"):
        two_pass_softmax(e, impl="pallas", interpret=False, block_cols=100)
