"""The CPU matmul, step by step (csrc/cpu/matmul_steps.cpp): every step equals numpy on shapes that are
not multiples of its blocks and tiles (the edges are where such kernels go wrong)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minidl import _C

STEPS = range(len(_C.MATMUL_STEPS))


def test_the_steps_are_numbered_in_reading_order():
    assert [name.split()[0] for name in _C.MATMUL_STEPS] == [f"v{k}" for k in STEPS]
    assert _C.MATMUL_STEPS[-1] == "v4 minidl"


@settings(max_examples=25)
@given(m=st.integers(1, 40), n=st.integers(1, 70), k=st.integers(1, 300), seed=st.integers(0, 2 ** 16))
def test_every_step_is_numpys_matmul(m, n, k, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    for version in STEPS:
        np.testing.assert_allclose(_C.matmul_step(version, a, b), expected, rtol=1e-4, atol=1e-4 * np.sqrt(k),
                                   err_msg=_C.MATMUL_STEPS[version])


def test_blocks_larger_than_one_cache_block():
    """K and N past v2's 256 x 256 blocks, M past several of v3's 6-row panels."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((37, 600), dtype=np.float32), rng.standard_normal((600, 530), dtype=np.float32)
    for version in STEPS:
        np.testing.assert_allclose(_C.matmul_step(version, a, b), a @ b, rtol=1e-3, atol=1e-3)


def test_bad_arguments_are_named():
    a = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="version is 0 .. 4, got 7"):
        _C.matmul_step(7, a, a.T)
    with pytest.raises(ValueError, match=r"needs \(M, K\) @ \(K, N\)"):
        _C.matmul_step(0, a, a)
