"""The C++ kernels of csrc/cpu (other than matmul) against numpy_ref, the ground truth.

Shapes, hyper-parameters and layouts are drawn by hypothesis: odd sizes (1, primes,
sizes around the 16K-element chunks and the 512K parallel threshold), non-contiguous inputs
(which the cpu.py wrappers copy or hand to numpy_ref), float32 and float64.
"""
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

if os.environ.get("MINIDL_KERNELS") == "numpy":
    pytest.skip("MINIDL_KERNELS=numpy: the C++ kernels are not in use", allow_module_level=True)
from minidl import _C  # noqa: E402,F401  (an unbuilt extension is an error, not a skip)
from minidl.backend.kernel_types import conv_geometry  # noqa: E402
from minidl.backend import cpu, numpy_ref  # noqa: E402

DTYPES = [np.float32, np.float64]
dtypes = st.sampled_from(DTYPES)
seeds = st.integers(0, 2**32 - 1)
sizes = st.one_of(st.integers(1, 40), st.sampled_from([1, 7, 16383, 16385, 65537, 524289, 600001]))


def tol(dtype):
    return dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)


def maybe_strided(rng, x, strided):
    """x itself, or an equal array whose memory is not contiguous (every other element of a bigger one)."""
    if not strided:
        return x
    big = np.empty((2 * x.size,), dtype=x.dtype)
    big[::2] = x.reshape(-1)
    return big[::2].reshape(x.shape) if x.ndim == 1 else big[::2].reshape(x.shape)


# ---------------------------------------------------------------- optimizer updates

@settings(max_examples=60)
@given(n=sizes, dtype=dtypes, seed=seeds, momentum=st.sampled_from([0.0, 0.9]), wd=st.sampled_from([0.0, 1e-2]),
       nesterov=st.booleans(), dampening=st.sampled_from([0.0, 0.1]), steps=st.integers(1, 3),
       strided_grad=st.booleans())
def test_sgd_step_matches_reference(n, dtype, seed, momentum, wd, nesterov, dampening, steps, strided_grad):
    if nesterov and (momentum == 0 or dampening != 0):
        nesterov = False
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(n).astype(dtype)
    p_ref, p_cpp, buf_ref, buf_cpp = p0.copy(), p0.copy(), None, None
    for _ in range(steps):
        g = rng.standard_normal(n).astype(dtype)
        g_in = maybe_strided(rng, g, strided_grad)
        g_copy = g_in.copy()
        buf_ref = numpy_ref.sgd_step(p_ref, g, buf_ref, np.float64(0.1), momentum, wd, nesterov, dampening)
        prev = buf_cpp
        buf_cpp = cpu.sgd_step(p_cpp, g_in, buf_cpp, np.float64(0.1), momentum, wd, nesterov, dampening)
        np.testing.assert_array_equal(g_in, g_copy)  # grad is left alone
        if momentum == 0:
            assert buf_cpp is None
        else:
            assert buf_cpp.dtype == dtype and buf_cpp.shape == p0.shape
            if prev is not None:
                assert buf_cpp is prev  # updated in place, not replaced
            np.testing.assert_allclose(buf_cpp, buf_ref, **tol(dtype))
        assert p_cpp.dtype == dtype
        np.testing.assert_allclose(p_cpp, p_ref, **tol(dtype))


@settings(max_examples=60)
@given(n=sizes, dtype=dtypes, seed=seeds, wd=st.sampled_from([0.0, 1e-2]), decoupled=st.booleans(),
       steps=st.integers(1, 3), strided_grad=st.booleans(), shape2d=st.booleans())
def test_adam_step_matches_reference(n, dtype, seed, wd, decoupled, steps, strided_grad, shape2d):
    rng = np.random.default_rng(seed)
    shape = (n, 1) if shape2d else (n,)
    p0 = rng.standard_normal(shape).astype(dtype)
    ref = [p0.copy(), np.zeros(shape, dtype), np.zeros(shape, dtype)]
    cpp = [p0.copy(), np.zeros(shape, dtype), np.zeros(shape, dtype)]
    for step in range(1, steps + 1):
        g = rng.standard_normal(shape).astype(dtype)
        g_in = maybe_strided(rng, g, strided_grad)
        numpy_ref.adam_step(ref[0], g, ref[1], ref[2], step, 1e-2, np.float64(0.9), 0.999, 1e-8, wd, decoupled)
        cpu.adam_step(cpp[0], g_in, cpp[1], cpp[2], step, 1e-2, np.float64(0.9), 0.999, 1e-8, wd, decoupled)
        for a, b in zip(cpp, ref):
            assert a.dtype == dtype
            np.testing.assert_allclose(a, b, rtol=1e-4 if dtype == np.float32 else 1e-11,
                                       atol=1e-6 if dtype == np.float32 else 1e-13)


def test_optimizer_steps_fall_back_for_non_contiguous_params():
    rng = np.random.default_rng(0)
    p = rng.standard_normal((6, 4))
    pt, pt_ref = p.T, p.copy().T  # in-place updates must reach the caller's (strided) array
    g = rng.standard_normal((4, 6))
    buf = cpu.sgd_step(pt, g, None, 0.1, 0.9, 0.0, False)
    buf_ref = numpy_ref.sgd_step(pt_ref, g, None, 0.1, 0.9, 0.0, False)
    np.testing.assert_allclose(pt, pt_ref)
    np.testing.assert_allclose(buf, buf_ref)
    m, v = np.zeros((4, 6)), np.zeros((4, 6))
    mr, vr = np.zeros((4, 6)), np.zeros((4, 6))
    cpu.adam_step(pt, g, m, v, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, False)
    numpy_ref.adam_step(pt_ref, g, mr, vr, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, False)
    np.testing.assert_allclose(pt, pt_ref)
    with pytest.raises(ValueError, match="steps count from 1"):
        cpu.adam_step(p, p, p.copy(), p.copy(), 0, 1e-3, 0.9, 0.999, 1e-8, 0.0, False)


def test_optimizer_bindings_name_the_op_in_errors():
    """Shapes are checked by the border (cpu.py); dtypes and layouts by minidl._C's dispatch."""
    p = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="sgd_step: grad"):
        cpu.sgd_step(p, np.zeros(5, np.float32), None, 0.1, 0.0, 0.0, False, 0.0)
    with pytest.raises(TypeError, match="adam_step: exp_avg has dtype float64"):
        _C.adam_step(p, p, np.zeros(4), np.zeros(4), 4, 1, 0.1, 0.9, 0.99, 1e-8, 0.0, False)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.sgd_step(np.zeros(8, np.float32)[::2], p, None, 4, 0.1, 0.0, 0.0, 0.0, False, False)


# ---------------------------------------------------------------- embedding

@settings(max_examples=60)
@given(V=st.integers(1, 50), D=st.sampled_from([1, 3, 16, 33]), ids_shape=st.sampled_from([(0,), (1,), (7,), (5, 3),
       (2, 3, 4), (4000,)]), dtype=dtypes, seed=seeds, strided=st.booleans(), int32=st.booleans(),
       threads=st.sampled_from([1, 2, 3]))
def test_embedding_forward_and_backward_match_reference(V, D, ids_shape, dtype, seed, strided, int32, threads):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((V, D)).astype(dtype)
    ids = rng.integers(0, V, size=ids_shape).astype(np.int32 if int32 else np.int64)
    g = rng.standard_normal(ids_shape + (D,)).astype(dtype)
    if strided:
        w = np.asfortranarray(w)
        g = np.asfortranarray(g)
        ids = np.asfortranarray(ids)
    old = cpu.get_num_threads()
    cpu.set_num_threads(threads)
    try:
        out = cpu.embedding(w, ids)
        dw = cpu.embedding_backward(g, ids, V)
    finally:
        cpu.set_num_threads(old)
    np.testing.assert_array_equal(out, numpy_ref.embedding(w, ids))
    assert out.dtype == dtype and dw.dtype == dtype and dw.shape == (V, D)
    np.testing.assert_allclose(dw, numpy_ref.embedding_backward(g, ids, V), **tol(dtype))


def test_embedding_backward_is_deterministic_across_thread_counts():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 30, size=50000)  # many repeats per row
    g = rng.standard_normal((50000, 24)).astype(np.float32)
    old = cpu.get_num_threads()
    results = []
    try:
        for t in (1, 2, 3, 4):
            cpu.set_num_threads(t)
            results.append(cpu.embedding_backward(g, ids, 30))
    finally:
        cpu.set_num_threads(old)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])  # bit-identical: the same summation order


def test_embedding_negative_ids_and_errors():
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_array_equal(cpu.embedding(w, np.array([-1, 0])), w[[-1, 0]])
    with pytest.raises(IndexError, match="embedding: id 4 is out of range"):
        cpu.embedding(w, np.array([0, 4]))
    with pytest.raises(IndexError, match="embedding_backward"):
        cpu.embedding_backward(np.ones((1, 3), np.float32), np.array([9]), 4)


# ---------------------------------------------------------------- convolution and pooling

def as_layout(x, layout):
    """The same values as x, C-contiguous, transposed in memory, or strided (every other element)."""
    if layout == "contiguous":
        return x
    if layout == "fortran":
        return np.asfortranarray(x)
    big = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), dtype=x.dtype)
    big[..., ::2] = x
    return big[..., ::2]


layouts = st.sampled_from(["contiguous", "fortran", "strided"])
convs = st.fixed_dictionaries(dict(
    N=st.integers(1, 3), H=st.integers(1, 9), W=st.integers(1, 9), kh=st.integers(1, 3), kw=st.integers(1, 3),
    sh=st.integers(1, 3), sw=st.integers(1, 3), ph=st.integers(0, 2), pw=st.integers(0, 2),
    dh=st.integers(1, 2), dw=st.integers(1, 2),
    channels=st.sampled_from([(1, 1, 1), (3, 5, 1), (4, 6, 2), (6, 3, 3), (5, 5, 5), (4, 4, 4), (7, 2, 1)])))


def conv_tol(dtype, k):
    return dict(rtol=1e-4, atol=2e-5 * k) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12 * k)


@settings(max_examples=120)
@given(c=convs, dtype=dtypes, seed=seeds, layout=layouts)
def test_conv2d_three_passes_match_reference(c, dtype, seed, layout):
    C, O, G = c["channels"]
    kernel, stride, padding, dilation = (c["kh"], c["kw"]), (c["sh"], c["sw"]), (c["ph"], c["pw"]), (c["dh"], c["dw"])
    H = max(c["H"], c["dh"] * (c["kh"] - 1) + 1 - 2 * c["ph"])  # the window must fit the padded image
    W = max(c["W"], c["dw"] * (c["kw"] - 1) + 1 - 2 * c["pw"])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((c["N"], C, H, W)).astype(dtype)
    w = rng.standard_normal((O, C // G) + kernel).astype(dtype)
    args = (stride, padding, dilation, G)
    out = cpu.conv2d(as_layout(x, layout), as_layout(w, layout), *args)
    ref = numpy_ref.conv2d(x, w, *args)
    k = C // G * kernel[0] * kernel[1]
    assert out.shape == ref.shape and out.dtype == dtype
    np.testing.assert_allclose(out, ref, **conv_tol(dtype, k))
    g = as_layout(rng.standard_normal(ref.shape).astype(dtype), layout)
    dx = cpu.conv2d_backward_data(g, w, x.shape, *args)
    assert dx.shape == x.shape and dx.dtype == dtype
    np.testing.assert_allclose(dx, numpy_ref.conv2d_backward_data(np.ascontiguousarray(g), w, x.shape, *args),
                               **conv_tol(dtype, O * kernel[0] * kernel[1]))
    dw = cpu.conv2d_backward_weight(g, as_layout(x, layout), w.shape, *args)
    assert dw.shape == w.shape and dw.dtype == dtype
    np.testing.assert_allclose(dw, numpy_ref.conv2d_backward_weight(np.ascontiguousarray(g), x, w.shape, *args),
                               **conv_tol(dtype, c["N"] * ref.shape[2] * ref.shape[3]))


@settings(max_examples=100)
@given(c=convs, dtype=dtypes, seed=seeds, layout=layouts, ties=st.booleans())
def test_pooling_matches_reference(c, dtype, seed, layout, ties):
    kernel, stride, dilation = (c["kh"], c["kw"]), (c["sh"], c["sw"]), (c["dh"], c["dw"])
    padding = (min(c["ph"], c["kh"] // 2), min(c["pw"], c["kw"] // 2))
    H = max(c["H"], c["dh"] * (c["kh"] - 1) + 1)
    W = max(c["W"], c["dw"] * (c["kw"] - 1) + 1)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((c["N"], c["channels"][0], H, W)).astype(dtype)
    if ties:
        x = np.round(x)  # many equal values: the first maximum must win, as in numpy's argmax
    xl = as_layout(x, layout)
    out, winner = cpu.max_pool2d(xl, kernel, stride, padding, dilation)
    ref, ref_winner = numpy_ref.max_pool2d(x, kernel, stride, padding, dilation)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(winner, ref_winner)
    assert winner.dtype == ref_winner.dtype and out.dtype == dtype
    g = as_layout(rng.standard_normal(ref.shape).astype(dtype), layout)
    gc = np.ascontiguousarray(g)
    for win in (winner, ref_winner):  # either implementation's winner works with either backward
        np.testing.assert_allclose(cpu.max_pool2d_backward(g, win, x.shape, kernel, stride, padding, dilation),
                                   numpy_ref.max_pool2d_backward(gc, win, x.shape, kernel, stride, padding, dilation),
                                   **tol(dtype))
    a = cpu.avg_pool2d(xl, kernel, stride, padding)
    np.testing.assert_allclose(a, numpy_ref.avg_pool2d(x, kernel, stride, padding), **tol(dtype))
    assert a.dtype == dtype
    ga = as_layout(rng.standard_normal(a.shape).astype(dtype), layout)  # no dilation: its own shape
    np.testing.assert_allclose(cpu.avg_pool2d_backward(ga, x.shape, kernel, stride, padding),
                               numpy_ref.avg_pool2d_backward(np.ascontiguousarray(ga), x.shape, kernel, stride,
                                                             padding), **tol(dtype))


@pytest.mark.parametrize("shape", [
    ((4, 16, 20, 20), (24, 16, 3, 3), (1, 1), (1, 1), (1, 1), 1),   # crosses the parallel thresholds
    ((2, 32, 15, 17), (32, 1, 3, 3), (2, 2), (1, 1), (1, 1), 32),   # depthwise, strided
    ((2, 12, 11, 9), (12, 4, 3, 3), (1, 2), (2, 1), (2, 1), 3),     # grouped, dilated
    ((5, 3, 32, 33), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1),      # one small GEMM per image: images to threads
    # conv.cpp cuts the output into tiles whose columns take ~512 KiB (TilePlan):
    ((3, 64, 40, 40), (8, 64, 3, 3), (1, 1), (1, 1), (1, 1), 1),    # 8 row tiles per image
    ((9, 64, 40, 38), (5, 64, 3, 3), (1, 1), (1, 1), (1, 1), 1),    # ... and enough images to share
    ((2, 64, 41, 39), (6, 64, 3, 3), (2, 2), (1, 2), (2, 1), 1),    # row tiles, strided and dilated
    ((2, 128, 24, 24), (8, 64, 3, 3), (1, 1), (1, 1), (1, 1), 2),   # row tiles, grouped
    ((5, 256, 24, 24), (8, 256, 1, 1), (1, 1), (0, 0), (1, 1), 1),  # 1x1: row tiles read x in place
    ((9, 8, 5, 5), (4, 8, 3, 3), (1, 1), (1, 1), (1, 1), 1),        # several small images per tile
    ((13, 8, 4, 4), (5, 8, 1, 1), (1, 1), (0, 0), (1, 1), 1),       # ... 1x1
    # depthwise, stride 1: the flat-plane loops (rows under 32 wide) and the row loops
    ((3, 24, 14, 14), (24, 1, 5, 5), (1, 1), (2, 2), (1, 1), 24),   # EfficientNet's 5x5 at 14x14
    ((2, 16, 7, 7), (16, 1, 3, 3), (1, 1), (1, 1), (1, 1), 16),
    ((3, 6, 11, 13), (6, 1, 5, 5), (1, 1), (1, 0), (1, 1), 6),      # less padding than K // 2
    ((2, 8, 9, 40), (8, 1, 3, 3), (1, 1), (1, 1), (1, 1), 8),       # rows of 40: in place
])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_conv2d_larger_shapes(shape, threads):
    before = cpu.get_num_threads()
    cpu.set_num_threads(threads)
    try:
        check_conv_larger_shape(shape)
    finally:
        cpu.set_num_threads(before)


def check_conv_larger_shape(shape):
    x_shape, w_shape, *args = shape
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)
    out = cpu.conv2d(x, w, *args)
    np.testing.assert_allclose(out, numpy_ref.conv2d(x, w, *args), rtol=1e-4, atol=1e-3)
    g = rng.standard_normal(out.shape).astype(np.float32)
    np.testing.assert_allclose(cpu.conv2d_backward_data(g, w, x.shape, *args),
                               numpy_ref.conv2d_backward_data(g, w, x.shape, *args), rtol=1e-4, atol=1e-3)
    dw = cpu.conv2d_backward_weight(g, x, w.shape, *args)
    np.testing.assert_allclose(dw, numpy_ref.conv2d_backward_weight(g, x, w.shape, *args), rtol=1e-4, atol=2e-3)
    # The threads' partial sums are added in a fixed order: the same bits every time.
    np.testing.assert_array_equal(cpu.conv2d_backward_weight(g, x, w.shape, *args), dw)


def test_max_pool_nan_and_fully_padded_windows_follow_numpy():
    x = np.array([[[[1.0, np.nan, 3.0], [np.nan, 5.0, 6.0]]]])
    for args in [((2, 2), (1, 1), (0, 0)), ((2, 2), (2, 2), (1, 1))]:
        out, win = cpu.max_pool2d(x, *args)
        ref, ref_win = numpy_ref.max_pool2d(x, *args)
        np.testing.assert_array_equal(out, ref)
        np.testing.assert_array_equal(win, ref_win)


def test_conv_bindings_name_the_op_in_errors():
    """Shapes are checked by the border (cpu.py); dtypes by minidl._C's dispatch."""
    x = np.zeros((1, 4, 5, 5), np.float32)
    geometry = conv_geometry(x.shape, (2, 4, 3, 3), (1, 1), (0, 0), (1, 1), 1)
    with pytest.raises(TypeError, match="conv2d: dtypes float32 and float64 differ"):
        _C.conv2d(x, np.zeros((2, 4, 3, 3)), np.zeros((1, 2, 3, 3), np.float32), geometry)
    with pytest.raises(ValueError, match="conv2d: the kernel does not fit"):
        cpu.conv2d(x, np.zeros((2, 4, 7, 7), np.float32), (1, 1), (0, 0), (1, 1), 1)
    with pytest.raises(ValueError, match="conv2d_backward_data: grad"):
        cpu.conv2d_backward_data(np.zeros((1, 2, 2, 2), np.float32), np.zeros((2, 4, 3, 3), np.float32),
                                 [1, 4, 5, 5], (1, 1), (0, 0), (1, 1), 1)


# ---------------------------------------------------------------- batch norm

@settings(max_examples=60)
@given(shape=st.one_of(
           st.sampled_from([(2, 1), (5, 3), (3, 4, 7), (2, 3, 5, 5), (4, 2, 1, 9), (16, 8, 33), (1, 3, 2, 2, 2)]),
           # (N, C): the row-by-row path, one channel block per thread from 32K values on
           st.tuples(st.sampled_from([2, 3, 7, 64, 1031]), st.sampled_from([1, 3, 17, 200, 1000]))),
       dtype=dtypes, seed=seeds, layout=layouts, offset=st.sampled_from([0.0, 100.0]))
def test_batch_norm_matches_reference(shape, dtype, seed, layout, offset):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2 + offset).astype(dtype)  # offset: a large mean, a small variance
    C = shape[1]
    w, b = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    out = cpu.batch_norm(as_layout(x, layout), w, b, 1e-5)
    # The reference runs in float64 on the same values: in float32, numpy's own mean and
    # variance of 1000 values near 100 are off by ~1e-4, more than the C++ kernel (which
    # sums in double).
    f64 = [a.astype(np.float64) for a in (x, w, b)]
    ref = numpy_ref.batch_norm(*f64, 1e-5)
    t = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    for a, r in zip(out, ref):
        assert a.shape == r.shape and a.dtype == dtype
        np.testing.assert_allclose(a, r, **t)
    g = rng.standard_normal(shape).astype(dtype)
    mean, invstd = ref[1].astype(dtype), ref[3].astype(dtype)  # the statistics both sides get
    back = cpu.batch_norm_backward(as_layout(g, layout), as_layout(x, layout), w, mean, invstd)
    ref_back = numpy_ref.batch_norm_backward(g.astype(np.float64), f64[0], f64[1], mean.astype(np.float64),
                                             invstd.astype(np.float64))
    M = x.size // C
    for a, r in zip(back, ref_back):
        assert a.shape == r.shape and a.dtype == dtype
        np.testing.assert_allclose(a, r, rtol=t["rtol"] * 10, atol=t["atol"] * M)


# ---------------------------------------------------------------- batch norm in eval mode (channel_affine)

@settings(max_examples=80)
@given(shape=st.one_of(
           st.sampled_from([(2, 1), (5, 3), (3, 4, 7), (2, 3, 5, 5), (4, 2, 1, 9), (16, 8, 33), (1, 3, 2, 2, 2),
                            (1, 1, 1, 1), (3, 5, 1, 1)]),
           # big enough for threads (32K values); runs of 7x7 and 14x14 (EfficientNet's last stages)
           st.sampled_from([(8, 96, 7, 7), (4, 40, 14, 14), (2, 17, 33, 31)]),
           st.tuples(st.sampled_from([2, 3, 7, 64, 1031]), st.sampled_from([1, 3, 17, 200, 1000]))),
       dtype=dtypes, seed=seeds, layout=layouts, activation=st.sampled_from([None, "relu", "relu6"]))
def test_channel_affine_matches_reference(shape, dtype, seed, layout, activation):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    C = shape[1]
    scale, shift = (rng.standard_normal(C) * 2).astype(dtype), (rng.standard_normal(C) + 3).astype(dtype)
    if x.size > 2:
        x.reshape(-1)[:2] = np.nan                                 # NaN stays NaN through every activation
    y = cpu.channel_affine(as_layout(x, layout), scale, shift, activation)
    ref = numpy_ref.channel_affine(x, scale, shift, activation)
    assert y.shape == ref.shape and y.dtype == dtype
    np.testing.assert_allclose(y, ref, **tol(dtype))
    g = rng.standard_normal(shape).astype(dtype)
    x[np.isnan(x)] = 0                                             # (NaN would make the sums NaN on both sides)
    y = numpy_ref.channel_affine(x, scale, shift, activation)
    back = cpu.channel_affine_backward(as_layout(g, layout), x, as_layout(y, layout), scale, activation)
    f64 = [a.astype(np.float64) for a in (g, x, y, scale)]
    ref_back = numpy_ref.channel_affine_backward(*f64, activation)
    M = x.size // C
    for a, r in zip(back, ref_back):
        assert a.shape == r.shape and a.dtype == dtype
        np.testing.assert_allclose(a, r, rtol=tol(dtype)["rtol"] * 10, atol=tol(dtype)["atol"] * M * 10)


def test_channel_affine_backward_is_deterministic_across_thread_counts():
    rng = np.random.default_rng(0)
    x, g = (rng.standard_normal((16, 24, 14, 14)).astype(np.float32) for _ in range(2))
    scale, shift = rng.standard_normal(24).astype(np.float32), rng.standard_normal(24).astype(np.float32)
    y = cpu.channel_affine(x, scale, shift, "relu6")
    threads = cpu.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            cpu.set_num_threads(n)
            results.append(cpu.channel_affine_backward(g, x, y, scale, "relu6"))
    finally:
        cpu.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_channel_affine_rejects_bad_input_with_the_op_name():
    x = np.ones((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"channel_affine: scale \(4,\) should be \(3,\)"):
        cpu.channel_affine(x, np.ones(4, np.float32), np.ones(3, np.float32))
    with pytest.raises(ValueError, match="channel_affine: activation code 7"):  # the kernel checks its code
        _C.channel_affine(x, np.ones(3, np.float32), np.ones(3, np.float32), 7, np.empty_like(x), 2, 3, 4)
    with pytest.raises(ValueError, match="channel_affine: activation must be one of"):
        cpu.channel_affine(x, np.ones(3, np.float32), np.ones(3, np.float32), "gelu")
    with pytest.raises(ValueError, match=r"channel_affine_backward: y \(2, 3\) does not match x \(2, 3, 4\)"):
        cpu.channel_affine_backward(x, x, x[..., 0], np.ones(3, np.float32))


# ---------------------------------------------------------------- softmax

@settings(max_examples=60)
@given(shape=st.sampled_from([(1,), (7,), (3, 1), (4, 33), (2, 3, 10), (300, 70)]), dtype=dtypes, seed=seeds,
       layout=layouts, scale=st.sampled_from([1.0, 100.0]), axis_last=st.booleans())
def test_softmax_and_log_softmax_match_reference(shape, dtype, seed, layout, scale, axis_last):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    axis = -1 if axis_last else len(shape) - 1
    xl = as_layout(x, layout)
    for name in ("softmax", "log_softmax"):
        out, ref = getattr(cpu, name)(xl, axis), getattr(numpy_ref, name)(x, axis)
        assert out.shape == ref.shape and out.dtype == dtype
        np.testing.assert_allclose(out, ref, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                   atol=1e-6 if dtype == np.float32 else 1e-13)


def test_softmax_other_axes_and_infinities_follow_numpy():
    x = np.array([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf], [np.inf, 0.0, 1.0], [np.nan, 0.0, 1.0],
                  [-1000.0, 0.0, 1.0], [700.0, 0.0, -700.0]])
    with np.errstate(all="ignore"):
        for dtype in DTYPES:
            xd = x.astype(dtype)
            for name in ("softmax", "log_softmax"):
                # the same NaNs and infinities in the same places (assert_allclose checks that), values within ulps
                np.testing.assert_allclose(getattr(cpu, name)(xd, -1), getattr(numpy_ref, name)(xd, -1),
                                           **tol(dtype))
            y = np.random.default_rng(0).standard_normal((3, 4, 5))
            np.testing.assert_allclose(getattr(cpu, name)(y, 1), getattr(numpy_ref, name)(y, 1))


@settings(max_examples=40)
@given(x=st.one_of(st.floats(-1e4, 1e4), st.sampled_from([0.0, -87.0, -87.4, 88.0, 88.8, -708.0, 709.5])),
       dtype=dtypes)
def test_softmax_exp_is_accurate_over_the_whole_range(x, dtype):
    """softmax([x, 0]) = (e^x / (e^x + 1), 1 / (e^x + 1)): the vectorised exp of softmax.cpp at any x."""
    v = np.array([x, 0.0], dtype=dtype)
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(cpu.softmax(v, -1), numpy_ref.softmax(v, -1), rtol=4 * np.finfo(dtype).eps,
                                   atol=np.finfo(dtype).tiny)
        np.testing.assert_allclose(cpu.log_softmax(v, -1), numpy_ref.log_softmax(v, -1),
                                   rtol=4 * np.finfo(dtype).eps, atol=4 * np.finfo(dtype).eps)


# ---------------------------------------------------------------- cross-entropy

@settings(max_examples=60)
@given(N=st.sampled_from([1, 2, 7, 64, 1031, 4099]), C=st.sampled_from([1, 2, 3, 10, 37, 1000]), dtype=dtypes,
       seed=seeds, layout=layouts, scale=st.sampled_from([1.0, 30.0]))
def test_cross_entropy_matches_reference(N, C, dtype, seed, layout, scale):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((N, C)) * scale).astype(dtype)
    target = rng.integers(0, C, N)
    loss, dlogits = cpu.cross_entropy(as_layout(x, layout), target)
    ref_loss, ref_dlogits = numpy_ref.cross_entropy(x, target)
    # loss = lse - x[target] cancels digits when it is small: its error is a few ulps of the logits
    ulps_of_logits = 8 * np.finfo(dtype).eps * (1 + np.abs(x).max())
    assert loss.shape == (N,) and loss.dtype == dtype
    np.testing.assert_allclose(loss, ref_loss, rtol=tol(dtype)["rtol"], atol=ulps_of_logits)
    assert dlogits.shape == (N, C) and dlogits.dtype == dtype
    # numpy's e^(x - lse) carries lse's rounding error (ulps of the logits) into the softmax, and
    # softmax - 1 at the target cancels digits too
    np.testing.assert_allclose(dlogits, ref_dlogits, rtol=tol(dtype)["rtol"], atol=ulps_of_logits)


def test_cross_entropy_checks_targets_and_follows_numpy_on_infinities():
    x = np.array([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf], [np.inf, 0.0, 1.0], [np.nan, 0.0, 1.0]])
    t = np.array([0, 1, 2, 1])
    with np.errstate(all="ignore"):
        for a, r in zip(cpu.cross_entropy(x, t), numpy_ref.cross_entropy(x, t)):
            np.testing.assert_allclose(a, r, **tol(np.float64))
    with pytest.raises(IndexError, match=r"cross_entropy: target 3 is not a class index in \[0, 2\]"):
        cpu.cross_entropy(x, np.array([0, 1, 3, 0]))
    with pytest.raises(ValueError, match=r"cross_entropy: target \(3,\) should be \(4,\)"):
        cpu.cross_entropy(x, np.array([0, 1, 2]))


# ---------------------------------------------------------------- relu backward

@settings(max_examples=60)
@given(shape=st.one_of(st.tuples(sizes), st.sampled_from([(1, 1), (64, 200), (3, 5, 7), (2, 16, 9, 11)])),
       dtype=dtypes, seed=seeds, layout=layouts)
def test_relu_backward_matches_reference(shape, dtype, seed, layout):
    rng = np.random.default_rng(seed)
    y = np.maximum(rng.standard_normal(shape), 0).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    if g.size > 2:
        g.reshape(-1)[:3] = [np.nan, np.inf, -np.inf]  # where y == 0 these must still give 0
    out = cpu.relu_backward(as_layout(g, layout), y)
    ref = numpy_ref.relu_backward(g, y)
    assert out.shape == ref.shape and out.dtype == dtype
    np.testing.assert_array_equal(out, ref)


# ---------------------------------------------------------------- clamp backward (ReLU6)

@settings(max_examples=60)
@given(shape=st.one_of(st.tuples(sizes), st.sampled_from([(1, 1), (64, 200), (3, 5, 7), (2, 16, 9, 11)])),
       dtype=dtypes, seed=seeds, layout=layouts,
       bounds=st.sampled_from([(0.0, 6.0), (-0.5, 0.5), (None, 0.3), (-0.2, None), (None, None)]))
def test_clamp_backward_matches_reference(shape, dtype, seed, layout, bounds):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    x.reshape(-1)[:2] = [0.0, 6.0][:x.size]                     # the bounds themselves count as inside
    g = rng.standard_normal(shape).astype(dtype)
    if g.size > 4:
        g.reshape(-1)[2:5] = [np.nan, np.inf, -np.inf]           # outside the bounds these must give 0
    lo, hi = bounds
    out = cpu.clamp_backward(as_layout(g, layout), x, lo, hi)
    ref = numpy_ref.clamp_backward(g, x, lo, hi)
    assert out.shape == ref.shape and out.dtype == dtype
    np.testing.assert_array_equal(out, ref)


# ---------------------------------------------------------------- dropout masks (SplitMix64, as on the GPU)

@settings(max_examples=40)
@given(n=st.sampled_from([0, 1, 7, 1000, (1 << 16) + 3]), dtype=dtypes, p=st.sampled_from([0.0, 0.1, 0.5, 0.75, 0.99]),
       seed=st.integers(0, 2 ** 64 - 1), threads=st.sampled_from([1, 2]))
def test_dropout_mask_matches_reference(n, dtype, p, seed, threads):
    """Bit for bit the reference's mask, whatever the thread count (each element's number is its own)."""
    previous = cpu.get_num_threads()
    cpu.set_num_threads(threads)
    try:
        out = cpu.dropout_mask((n,), p, seed, dtype)
    finally:
        cpu.set_num_threads(previous)
    ref = numpy_ref.dropout_mask((n,), p, seed, dtype)
    assert out.dtype == dtype and out.shape == (n,)
    np.testing.assert_array_equal(out, ref)
    assert set(np.unique(out)) <= {0, dtype(1 / (1 - p))}


def test_dropout_mask_drops_about_p_independently():
    """About p of the elements dropped, neighbours uncorrelated, and a new seed a new mask."""
    m = cpu.dropout_mask((400, 500), 0.3, seed=7)
    kept = m != 0
    assert abs(1 - kept.mean() - 0.3) < 0.005
    assert abs(np.corrcoef(kept[:, :-1].ravel(), kept[:, 1:].ravel())[0, 1]) < 0.01
    assert (kept != (cpu.dropout_mask((400, 500), 0.3, seed=8) != 0)).mean() > 0.3
