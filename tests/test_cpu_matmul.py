"""The C++ matmul (csrc/cpu/matmul.cpp via minidl.backend.cpu) against numpy.matmul.

Shapes are drawn by hypothesis: sizes 1..70 (primes, sizes that are not multiples of
the 6 x 16 register tile or the 72-row / 256-deep blocks), broadcast batch dims,
non-contiguous operands; plus a few large shapes that cross every block boundary.
"""
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

if os.environ.get("MINIDL_KERNELS") == "numpy":
    pytest.skip("MINIDL_KERNELS=numpy: the C++ kernels are not in use", allow_module_level=True)
from minidl import _C  # noqa: E402  (an unbuilt extension is an error, not a skip)
from minidl.backend import cpu  # noqa: E402

DTYPES = [np.float32, np.float64]
sizes = st.one_of(st.integers(1, 70), st.sampled_from([1, 2, 5, 6, 7, 13, 16, 17, 31, 37, 61, 67]))


def reference(a, b):
    """numpy.matmul in float64: the ground truth."""
    return np.matmul(a.astype(np.float64), b.astype(np.float64))


def assert_matches(out, a, b):
    expected = reference(a, b)
    assert out.shape == expected.shape and out.dtype == a.dtype
    k = a.shape[-1]
    if a.dtype == np.float32:
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5 * np.sqrt(k) * 4)
    else:
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-13 * k)


def C_matmul(a, b):
    """minidl._C.matmul itself: two 2-D or two 3-D operands of one batch, read through their strides."""
    out = np.empty(a.shape[:-1] + b.shape[-1:], a.dtype)
    assert _C.matmul(a, b, out) is None
    return out


def random(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


@settings(max_examples=100, deadline=None)
@given(m=sizes, k=sizes, n=sizes, dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_2d(m, k, n, dtype, seed):
    rng = np.random.default_rng(seed)
    a, b = random(rng, (m, k), dtype), random(rng, (k, n), dtype)
    assert_matches(cpu.matmul(a, b), a, b)
    assert_matches(C_matmul(a, b), a, b)


batch_shapes = st.sampled_from([
    ((), (3,)), ((4,), ()), ((2,), (2,)), ((2, 1), (3,)), ((1, 3), (2, 1)), ((1,), (5,)), ((2, 3), (1, 1)),
])


@settings(max_examples=60, deadline=None)
@given(batches=batch_shapes, m=sizes, k=sizes, n=sizes, dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**32 - 1))
def test_batched_broadcast(batches, m, k, n, dtype, seed):
    rng = np.random.default_rng(seed)
    a, b = random(rng, batches[0] + (m, k), dtype), random(rng, batches[1] + (k, n), dtype)
    assert_matches(cpu.matmul(a, b), a, b)


@settings(max_examples=60, deadline=None)
@given(m=sizes, k=sizes, n=sizes, dtype=st.sampled_from(DTYPES),
       layout=st.sampled_from(["T", "step", "batchT", "reversed", "broadcast"]), seed=st.integers(0, 2**32 - 1))
def test_non_contiguous(m, k, n, dtype, layout, seed):
    """The kernel reads operands through their strides (no copies): transposed, sliced, reversed, broadcast."""
    rng = np.random.default_rng(seed)
    if layout == "T":          # transposed views of both operands
        a, b = random(rng, (k, m), dtype).T, random(rng, (n, k), dtype).T
    elif layout == "reversed":  # negative strides
        a, b = random(rng, (m, k), dtype)[::-1], random(rng, (k, n), dtype)[:, ::-1]
    elif layout == "broadcast":  # a batch axis of stride 0, straight into the binding
        a = np.broadcast_to(random(rng, (m, k), dtype), (3, m, k))
        b = random(rng, (3, k, n), dtype)
        assert_matches(C_matmul(a, b), a, b)
    elif layout == "step":     # strided slices
        a, b = random(rng, (2 * m, 3 * k), dtype)[::2, ::3], random(rng, (k, 2 * n), dtype)[:, 1::2]
    else:                      # batched, batch axis moved last then swapped back
        a = np.moveaxis(random(rng, (m, k, 3), dtype), -1, 0)
        b = random(rng, (3, n, k), dtype).transpose(0, 2, 1)
    assert_matches(cpu.matmul(a, b), a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 257, 300, 129), (2, 150, 513, 77), (3, 5, 1000, 33)])
def test_large_crosses_blocks(shape, dtype):
    batch, m, k, n = shape
    rng = np.random.default_rng(0)
    a, b = random(rng, (batch, m, k), dtype), random(rng, (batch, k, n), dtype)
    assert_matches(cpu.matmul(a, b), a, b)
    assert_matches(C_matmul(a, b), a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_transposed_operands_cross_blocks(dtype):
    """x @ W^T and G^T @ x, a Linear layer's three products, with views the kernel packs in place."""
    rng = np.random.default_rng(1)
    x, w, g = random(rng, (517, 300), dtype), random(rng, (131, 300), dtype), random(rng, (517, 131), dtype)
    for a, b in [(x, w.T), (g, w), (g.T, x), (x.T.T, w.T)]:
        assert_matches(C_matmul(a, b), a, b)


@pytest.mark.parametrize("shape_a, shape_b", [((0, 3), (3, 4)), ((3, 0), (0, 4)), ((0, 2, 3), (0, 3, 4))])
def test_empty(shape_a, shape_b):
    a, b = np.ones(shape_a, np.float32), np.ones(shape_b, np.float32)
    np.testing.assert_array_equal(cpu.matmul(a, b), np.matmul(a, b))


def test_other_dtypes_fall_back_to_numpy():
    a, b = np.arange(6).reshape(2, 3), np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(cpu.matmul(a, b), a @ b)
    a32, b64 = np.ones((2, 3), np.float32), np.ones((3, 4), np.float64)
    assert cpu.matmul(a32, b64).dtype == np.float64


def test_shape_errors():
    """Shapes are checked by the border, minidl.backend.cpu (minidl._C checks dtypes and ranks only)."""
    with pytest.raises(ValueError, match=r"matmul: \(3, 4\) @ \(5, 2\): inner dims 4 and 5 differ"):
        cpu.matmul(np.ones((3, 4)), np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"inner dims 4 and 5 differ"):
        cpu.matmul(np.ones((2, 3, 4)), np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"batch dims \(2,\) and \(3,\) do not broadcast"):
        cpu.matmul(np.ones((2, 3, 4)), np.ones((3, 4, 5)))
    with pytest.raises(ValueError, match=r"matmul: b \(4,\) must be 2-D \(rows, cols\) or 3-D"):
        _C.matmul(np.ones((3, 4)), np.ones(4), np.ones((3, 1)))


def test_dtype_errors():
    with pytest.raises(TypeError, match=r"dtypes float32 and float64 differ"):
        _C.matmul(np.ones((3, 4), np.float32), np.ones((4, 2), np.float64), np.ones((3, 2), np.float32))
    with pytest.raises(TypeError, match=r"dtype int64 is not supported"):
        _C.matmul(np.ones((3, 4), np.int64), np.ones((4, 2), np.int64), np.ones((3, 2), np.int64))
    with pytest.raises(TypeError, match=r"matmul takes 3 arguments \(a, b, out\), got 2"):
        _C.matmul(np.ones((3, 4)), np.ones((4, 2)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_threads_give_the_same_result(dtype):
    rng = np.random.default_rng(1)
    a, b = random(rng, (3, 200, 300), dtype), random(rng, (300, 170), dtype)
    before = cpu.get_num_threads()
    try:
        cpu.set_num_threads(1)
        assert cpu.get_num_threads() == 1
        one = cpu.matmul(a, b)
        cpu.set_num_threads(2)
        two = cpu.matmul(a, b)
    finally:
        cpu.set_num_threads(before)
    # Each C element is summed in the same order whatever the thread count.
    np.testing.assert_array_equal(one, two)
    assert_matches(one, a, b)
    with pytest.raises(ValueError, match="n must be >= 1"):
        cpu.set_num_threads(0)


def test_module_flags():
    assert isinstance(_C.has_openmp, bool)
    assert cpu.KERNELS["matmul"] is cpu.matmul


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_does_not_hang():
    """OpenMP's pool does not survive fork; a forked child (a data-loader worker) runs on one thread."""
    import signal
    import time

    a = np.ones((300, 300), np.float32)
    before = cpu.get_num_threads()
    cpu.set_num_threads(2)
    try:
        cpu.matmul(a, a)  # the parent starts its thread pool
        pid = os.fork()
        if pid == 0:  # the child: exit status 0 if the matmul finishes and is right
            os._exit(0 if cpu.get_num_threads() == 1 and cpu.matmul(a, a)[0, 0] == 300 else 1)
        deadline = time.monotonic() + 30
        while (status := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if status[0] == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("matmul in a forked child hung")
        assert os.waitstatus_to_exitcode(status[1]) == 0
    finally:
        cpu.set_num_threads(before)
