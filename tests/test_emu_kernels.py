"""Every CUDA kernel of csrc/cuda against the numpy reference (numpy_ref.py).

The tests run on the "emu" device (the kernels compiled by g++ against csrc/emu and run
on the CPU: tier 2) and on "cuda" (tier 3), which is skipped where no GPU is visible.
Shapes are small and hypothesis-drawn, including sizes that are not multiples of the
kernels' tiles (64x64 matmul tiles, 256-thread blocks), so the edge handling runs.
The emulator runs each block's threads as real threads: keep the shapes small.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minidl.backend import get_backend, numpy_ref
from minidl.backend.cuda import gpu_count

# A hung kernel fails the run instead of stalling CI. method="thread": a kernel runs in C with
# the GIL released, where the default SIGALRM timeout could not interrupt it.
pytestmark = pytest.mark.timeout(120, method="thread")

DEVICES = ["emu", pytest.param("cuda", marks=pytest.mark.skipif(
    gpu_count() == 0, reason="no CUDA device visible (tier 3 runs on a machine with a GPU; 'emu' covers these here)"))]
FEW = settings(max_examples=6)
rng = np.random.default_rng(0)


@pytest.fixture(params=DEVICES)
def be(request):
    return get_backend(request.param)


on_each_device = pytest.mark.parametrize("device", DEVICES)  # for the hypothesis tests (no fixtures there)


def on(be, a):
    """A copy of a on the device (on "emu" asarray alone would share memory with the reference's array)."""
    return be.asarray(np.array(a, order="C"))


def back(be, a):
    return be.to_numpy(a)


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def close(actual, expected, rtol=1e-4, atol=1e-5):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                               rtol=rtol, atol=atol)


# ---------------------------------------------------------------- elementwise.cu

UNARY_INPUTS = {"neg": "any", "exp": "any", "log": "positive", "sqrt": "positive", "abs": "any", "sign": "any",
                "tanh": "any", "sigmoid": "wide", "relu": "any", "erf": "any"}


@pytest.mark.parametrize("op", sorted(UNARY_INPUTS))
def test_unary(be, op):
    x = randn(3, 5, 37)  # 555 elements: more than the emulator's 2 blocks of 256, so the grid-stride loop runs
    if UNARY_INPUTS[op] == "positive":
        x = np.abs(x) + 0.1
    if UNARY_INPUTS[op] == "wide":
        x = x * 40  # sigmoid's two branches, far into the tails
    y = getattr(be, op)(on(be, x))
    assert y.dtype == np.float32
    close(back(be, y), getattr(numpy_ref, op)(x))


@on_each_device
@FEW
@given(shapes=st.sampled_from([((3, 1, 5), (4, 1)), ((7,), (2, 3, 7)), ((2, 1, 3), (1, 4, 1)), ((), (6, 5)),
                               ((33, 17), (33, 17)), ((1,), ())]),
       op=st.sampled_from(["add", "sub", "mul", "div", "maximum", "minimum", "power"]))
def test_binary_broadcasting(device, shapes, op):
    be = get_backend(device)
    a, b = randn(*shapes[0], seed=1), randn(*shapes[1], seed=2)
    if op == "power":
        a = np.abs(a) + 0.5
    if op == "div":
        b = np.sign(b) * (np.abs(b) + 0.5)
    y = getattr(be, op)(on(be, a), on(be, b))
    assert y.shape == np.broadcast_shapes(a.shape, b.shape) and y.dtype == np.float32
    close(back(be, y), getattr(numpy_ref, op)(a, b))


def test_binary_with_scalars_and_views(be):
    a = randn(4, 6)
    close(back(be, be.mul(on(be, a), 0.5)), a * 0.5)
    close(back(be, be.sub(2, on(be, a))), 2 - a)
    view = on(be, a).T  # non-contiguous: the host copies it first
    close(back(be, be.add(view, view)), a.T * 2)


def test_other_dtypes_use_the_glue(be):
    a = np.arange(6.0).reshape(2, 3)  # float64: no float32 kernel, the array module computes it
    y = be.add(on(be, a), on(be, a))
    assert y.dtype == np.float64
    close(back(be, y), 2 * a)


# ---------------------------------------------------------------- reduce.cu

@on_each_device
@FEW
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=3).map(tuple), data=st.data(),
       op=st.sampled_from(["sum", "max", "min", "mean"]), keepdims=st.booleans())
def test_reduce(device, shape, data, op, keepdims):
    be = get_backend(device)
    axes = tuple(sorted(data.draw(st.sets(st.integers(0, len(shape) - 1), min_size=1))))
    x = randn(*shape, seed=3)
    y = getattr(be, op)(on(be, x), axis=axes, keepdims=keepdims)
    close(back(be, y), getattr(np, op)(x, axis=axes, keepdims=keepdims))


def test_reduce_long_rows_and_all(be):
    x = randn(3, 700)  # a row longer than the block: each thread folds several elements first
    close(back(be, be.sum(on(be, x), axis=1)), x.sum(1), rtol=1e-4, atol=1e-4)
    close(back(be, be.max(on(be, x))), x.max())
    close(back(be, be.mean(on(be, x), axis=0)), x.mean(0))


# ---------------------------------------------------------------- softmax.cu

@on_each_device
@FEW
@given(shape=st.sampled_from([(4, 10), (2, 3, 33), (1, 70), (5, 1)]), axis=st.integers(-1, 1))
def test_softmax(device, shape, axis):
    be = get_backend(device)
    x = randn(*shape, seed=4) * 5
    close(back(be, be.softmax(on(be, x), axis)), numpy_ref.softmax(x, axis))
    close(back(be, be.log_softmax(on(be, x), axis)), numpy_ref.log_softmax(x, axis))
    close(back(be, be.logsumexp(on(be, x), axis, keepdims=True)), numpy_ref.logsumexp(x, axis, keepdims=True))


def test_softmax_huge_and_minus_inf(be):
    x = np.array([[1000.0, 1000.0, -np.inf], [-np.inf, -np.inf, -np.inf]], dtype=np.float32)
    y = back(be, be.softmax(on(be, x), 1))
    close(y[0], [0.5, 0.5, 0.0])
    with np.errstate(divide="ignore"):  # the reference's log(0) for the all -inf row
        expected = numpy_ref.logsumexp(x.astype(np.float64), 1)
    close(back(be, be.logsumexp(on(be, x), 1)), expected)


def test_cross_entropy_fused(be):
    logits, target = randn(7, 45) * 3, np.random.default_rng(5).integers(0, 45, 7)
    loss, dlogits = be.cross_entropy(on(be, logits), on(be, target))
    log_p = numpy_ref.log_softmax(logits.astype(np.float64), 1)
    close(back(be, loss), -log_p[np.arange(7), target])
    close(back(be, dlogits), np.exp(log_p) - np.eye(45)[target])


def test_relu_backward(be):
    grad, y = randn(5, 70, seed=1), numpy_ref.relu(randn(5, 70, seed=2))
    close(back(be, be.relu_backward(on(be, grad), on(be, y))), np.where(y > 0, grad, 0))


# ---------------------------------------------------------------- matmul.cu

@on_each_device
@settings(max_examples=8)
@given(m=st.integers(1, 70), k=st.integers(1, 20), n=st.integers(1, 70), trans_a=st.booleans(),
       trans_b=st.booleans(), version=st.sampled_from(["tiled", "naive"]))
def test_matmul(device, m, k, n, trans_a, trans_b, version):
    be = get_backend(device)
    a, b = randn(m, k, seed=6), randn(k, n, seed=7)
    # A transposed view is passed to the kernel as it lies in memory, with the trans flag.
    a_dev = on(be, a.T).T if trans_a else on(be, a)
    b_dev = on(be, b.T).T if trans_b else on(be, b)
    close(back(be, be.kernels.matmul(a_dev, b_dev, version=version)), a @ b)


@pytest.mark.parametrize("version", ["tiled", "naive"])
def test_matmul_batched_and_broadcast(be, version):
    a, b = randn(2, 3, 5, 9), randn(9, 66)
    close(back(be, be.kernels.matmul(on(be, a), on(be, b), version=version)), a @ b)
    a, b = randn(2, 1, 5, 9), randn(3, 9, 4)
    close(back(be, be.kernels.matmul(on(be, a), on(be, b), version=version)), a @ b)


def test_matmul_tile_multiples(be):
    a, b = randn(128, 16), randn(16, 64)  # exactly two by one 64x64 tiles: no edge at all
    close(back(be, be.matmul(on(be, a), on(be, b))), a @ b)


# ---------------------------------------------------------------- conv.cu

@st.composite
def conv_cases(draw):
    """A small convolution: (N, C, H, W), (O, kh, kw), stride, padding, dilation, groups; the output fits."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    C, O = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), 1)
    padding = (draw(st.integers(0, kh // 2 + 1)), draw(st.integers(0, kw // 2)))
    H = draw(st.integers(dilation[0] * (kh - 1) + 1, 9))
    W = draw(st.integers(kw, 9))
    return (draw(st.integers(1, 2)), C, H, W), (O, kh, kw), stride, padding, dilation, groups


FIXED_CONV_CASES = [  # the layers a CNN has: 3x3 same-padding, strided, 1x1 and depthwise
    ((2, 3, 7, 6), (4, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((1, 5, 6, 6), (5, 3, 3), (2, 2), (1, 1), (1, 1), 5),
    ((2, 3, 8, 7), (3, 3, 2), (1, 2), (2, 0), (2, 1), 3),  # depthwise, dilated, uneven strides
    ((3, 2, 5, 5), (2, 1, 1), (1, 1), (0, 0), (1, 1), 1),
]


def check_conv(be, case):
    x_shape, (O, kh, kw), stride, padding, dilation, groups = case
    x = randn(*x_shape, seed=8)
    w = randn(O, x_shape[1] // groups, kh, kw, seed=9)
    y_ref = numpy_ref.conv2d(x, w, stride, padding, dilation, groups)
    y = be.conv2d(on(be, x), on(be, w), stride, padding, dilation, groups)
    close(back(be, y), y_ref)
    g = randn(*y_ref.shape, seed=10)
    dx = be.conv2d_backward_data(on(be, g), on(be, w), x.shape, stride, padding, dilation, groups)
    close(back(be, dx), numpy_ref.conv2d_backward_data(g, w, x.shape, stride, padding, dilation, groups))
    dw = be.conv2d_backward_weight(on(be, g), on(be, x), w.shape, stride, padding, dilation, groups)
    close(back(be, dw), numpy_ref.conv2d_backward_weight(g, x, w.shape, stride, padding, dilation, groups),
          rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", FIXED_CONV_CASES, ids=["3x3", "depthwise", "depthwise-dilated", "1x1"])
def test_conv2d_layers(be, case):
    check_conv(be, case)


@on_each_device
@settings(max_examples=12)
@given(case=conv_cases())
def test_conv2d(device, case):
    check_conv(get_backend(device), case)


# ---------------------------------------------------------------- pool.cu

@st.composite
def pool_cases(draw):
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    x_shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(kernel[0], 8)),
               draw(st.integers(kernel[1], 8)))
    return x_shape, kernel, stride, padding


@on_each_device
@settings(max_examples=12)
@given(case=pool_cases())
def test_max_pool(device, case):
    be = get_backend(device)
    x_shape, kernel, stride, padding = case
    x = np.random.default_rng(11).permutation(np.prod(x_shape)).reshape(x_shape).astype(np.float32)  # no ties
    y_ref, win_ref = numpy_ref.max_pool2d(x, kernel, stride, padding)
    y, win = be.max_pool2d(on(be, x), kernel, stride, padding)
    close(back(be, y), y_ref)
    np.testing.assert_array_equal(back(be, win), win_ref)
    g = randn(*y_ref.shape, seed=12)
    dx = be.max_pool2d_backward(on(be, g), win, x_shape, kernel, stride, padding)
    close(back(be, dx), numpy_ref.max_pool2d_backward(g, win_ref, x_shape, kernel, stride, padding))


@on_each_device
@settings(max_examples=12)
@given(case=pool_cases())
def test_avg_pool(device, case):
    be = get_backend(device)
    x_shape, kernel, stride, padding = case
    x = randn(*x_shape, seed=13)
    y_ref = numpy_ref.avg_pool2d(x, kernel, stride, padding)
    close(back(be, be.avg_pool2d(on(be, x), kernel, stride, padding)), y_ref)
    g = randn(*y_ref.shape, seed=14)
    dx = be.avg_pool2d_backward(on(be, g), x_shape, kernel, stride, padding)
    close(back(be, dx), numpy_ref.avg_pool2d_backward(g, x_shape, kernel, stride, padding))


# ---------------------------------------------------------------- batchnorm.cu

@on_each_device
@FEW
@given(shape=st.sampled_from([(6, 3), (2, 3, 5, 7), (4, 2, 40), (1, 1, 3, 3), (33, 2)]))
def test_batch_norm(device, shape):
    be = get_backend(device)
    C = shape[1]
    x = randn(*shape, seed=15) * 3 + 1
    w, b = randn(C, seed=16), randn(C, seed=17)
    ref = numpy_ref.batch_norm(x, w, b, 1e-5)
    out = be.batch_norm(on(be, x), on(be, w), on(be, b), 1e-5)
    for got, want in zip(out, ref):
        close(back(be, got), want, rtol=1e-4, atol=1e-4)
    g = randn(*shape, seed=18)
    ref = numpy_ref.batch_norm_backward(g, x, w, ref[1], ref[3])
    out = be.batch_norm_backward(on(be, g), on(be, x), on(be, w), out[1], out[3])
    for got, want in zip(out, ref):
        close(back(be, got), want, rtol=1e-3, atol=1e-4)


@on_each_device
@FEW
@given(shape=st.sampled_from([(2, 3), (3, 4, 5), (2, 3, 4, 5), (5, 2, 1, 1)]),
       activation=st.sampled_from([None, "relu", "relu6"]))
def test_channel_affine(device, shape, activation):
    be = get_backend(device)
    C = shape[1]
    x = randn(*shape, seed=21) * 3
    scale, shift = randn(C, seed=22) * 2, randn(C, seed=23) + 3
    y = numpy_ref.channel_affine(x, scale, shift, activation)
    close(back(be, be.channel_affine(on(be, x), on(be, scale), on(be, shift), activation)), y)
    g = randn(*shape, seed=24)
    ref = numpy_ref.channel_affine_backward(g, x, y, scale, activation)
    out = be.channel_affine_backward(on(be, g), on(be, x), on(be, y), on(be, scale), activation)
    for got, want in zip(out, ref):
        close(back(be, got), want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- embedding.cu

@on_each_device
@FEW
@given(n_ids=st.integers(1, 40), dim=st.integers(1, 13), vocab=st.integers(1, 9))
def test_embedding(device, n_ids, dim, vocab):
    be = get_backend(device)
    weight = randn(vocab, dim, seed=19)
    ids = np.random.default_rng(20).integers(0, vocab, (n_ids,))
    close(back(be, be.embedding(on(be, weight), on(be, ids))), numpy_ref.embedding(weight, ids))
    g = randn(n_ids, dim, seed=21)  # repeated ids: atomicAdd adds every one of them
    close(back(be, be.embedding_backward(on(be, g), on(be, ids), vocab)),
          numpy_ref.embedding_backward(g, ids, vocab), rtol=1e-5, atol=1e-5)


def test_embedding_2d_ids_and_out_of_range(be):
    weight, ids = randn(5, 3), np.array([[0, 4], [4, 4]])
    close(back(be, be.embedding(on(be, weight), on(be, ids))), weight[ids])
    assert np.isnan(back(be, be.embedding(on(be, weight), on(be, np.array([5]))))).all()  # (the op's check:
                                                                                           # test_deferred.py)


def test_scatter_add_glue(be):
    """Not a kernel: the gather backward in array-module calls CuPy also has."""
    index = np.random.default_rng(3).integers(0, 5, (4, 3))
    values = randn(4, 3)
    for axis, shape in ((1, (4, 5)), (0, (5, 3))):
        close(back(be, be.scatter_add(shape, axis, on(be, index), on(be, values))),
              numpy_ref.scatter_add(shape, axis, index, values))


# ---------------------------------------------------------------- optim.cu

@pytest.mark.parametrize("momentum,nesterov,wd,dampening", [(0.0, False, 0.0, 0.0), (0.9, False, 0.01, 0.0),
                                                            (0.9, True, 0.0, 0.0), (0.8, False, 0.0, 0.3)])
def test_sgd(be, momentum, nesterov, wd, dampening):
    p_ref, grads = randn(3, 300), [randn(3, 300, seed=s) for s in (22, 23, 24)]
    p, buf_ref, buf = on(be, p_ref), None, None
    for g in grads:  # the first step creates the buffer, later ones update it
        buf_ref = numpy_ref.sgd_step(p_ref, g, buf_ref, 0.1, momentum, wd, nesterov, dampening)
        buf = be.sgd_step(p, on(be, g), buf, 0.1, momentum, wd, nesterov, dampening)
    close(back(be, p), p_ref)
    if momentum:
        close(back(be, buf), buf_ref)
    else:
        assert buf is None


@pytest.mark.parametrize("wd,decoupled", [(0.0, False), (0.1, False), (0.1, True)])
def test_adam(be, wd, decoupled):
    p_ref = randn(700)
    m_ref, v_ref = np.zeros_like(p_ref), np.zeros_like(p_ref)
    p, m, v = on(be, p_ref), on(be, m_ref), on(be, v_ref)
    for step in (1, 2, 3):
        g = randn(700, seed=25 + step)
        numpy_ref.adam_step(p_ref, g, m_ref, v_ref, step, 1e-2, 0.9, 0.999, 1e-8, wd, decoupled)
        be.adam_step(p, on(be, g), m, v, step, 1e-2, 0.9, 0.999, 1e-8, wd, decoupled)
    close(back(be, p), p_ref)
    close(back(be, m), m_ref)
    close(back(be, v), v_ref)
