"""The ops fused to cut per-op overhead (Linear, CrossEntropy, Mean, ReLU's backward kernel) against
the composed ops they replace: same values, same gradients, float32 and float64, on both kernel
sets (the C++ one and MINIDL_KERNELS=numpy), plus a float64 gradcheck of each.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minidl
from minidl.nn import functional as F
from minidl.testing import gradcheck

dtypes = st.sampled_from([np.float32, np.float64])
seeds = st.integers(0, 2**32 - 1)


def leaf(a):
    return minidl.tensor(a, requires_grad=True)


def grads_of(fn, *arrays):
    ts = [leaf(a) for a in arrays]
    out = fn(*ts)
    out.backward(minidl.tensor(np.ones(out.shape, out.dtype)))
    return out.numpy(), [t.grad.numpy() for t in ts]


def assert_same(got, want, dtype):
    t = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    (out, grads), (ref, ref_grads) = got, want
    np.testing.assert_allclose(out, ref, **t)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, **t)


@settings(max_examples=40, deadline=None)
@given(lead=st.sampled_from([(1,), (7,), (64,), (2, 3)]), n_in=st.sampled_from([1, 5, 200]),
       n_out=st.sampled_from([1, 2, 13]), bias=st.booleans(), transposed_x=st.booleans(), dtype=dtypes, seed=seeds)
def test_linear_equals_matmul_with_transposed_weight(lead, n_in, n_out, bias, transposed_x, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(lead + (n_in,)).astype(dtype)
    if transposed_x and len(lead) == 1:  # the same values, laid out column by column
        x = np.asfortranarray(x)
    w = rng.standard_normal((n_out, n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    arrays = (x, w, b) if bias else (x, w)
    fused = grads_of(lambda *t: F.linear(*t), *arrays)
    composed = grads_of(lambda x, w, b=None: minidl.matmul(x, w.T) + (b if b is not None else 0), *arrays)
    assert_same(fused, composed, dtype)


def test_linear_gradcheck_without_and_with_bias():
    rng = np.random.default_rng(0)
    x, w, b = (leaf(rng.standard_normal(s)) for s in [(2, 3, 4), (5, 4), (5,)])
    assert gradcheck(lambda x, w: F.linear(x, w), x, w)
    assert gradcheck(lambda x, w, b: F.linear(x, w, b), x, w, b)


@settings(max_examples=40, deadline=None)
@given(n=st.sampled_from([1, 2, 64, 1031]), c=st.sampled_from([1, 2, 10, 37]),
       reduction=st.sampled_from(["mean", "sum", "none"]), dtype=dtypes, seed=seeds)
def test_cross_entropy_equals_log_softmax_and_pick(n, c, reduction, dtype, seed):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((n, c)) * 3).astype(dtype)
    target = minidl.tensor(rng.integers(0, c, n))

    def composed(x):
        picked = -minidl.gather(F.log_softmax(x, 1), 1, target.reshape(-1, 1)).reshape(-1)
        return {"mean": picked.mean(), "sum": picked.sum(), "none": picked}[reduction]
    fused = grads_of(lambda x: F.cross_entropy(x, target, reduction=reduction), logits)
    assert_same(fused, grads_of(composed, logits), dtype)


def test_cross_entropy_and_mean_gradcheck():
    rng = np.random.default_rng(1)
    x = leaf(rng.standard_normal((6, 4)))
    target = minidl.tensor(rng.integers(0, 4, 6))
    assert gradcheck(lambda x: F.cross_entropy(x, target), x)
    assert gradcheck(lambda x: x.mean(), x)
    assert gradcheck(lambda x: x.mean(1, keepdim=True), x)
    assert gradcheck(lambda x: x.mean((0, 1)), x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_gradient_is_zero_where_the_output_is_zero_even_for_nan_gradients(dtype):
    x = leaf(np.array([-1.0, 0.0, 2.0, -3.0], dtype))
    y = F.relu(x)
    y.backward(minidl.tensor(np.array([np.nan, np.inf, 5.0, 1.0], dtype)))
    np.testing.assert_array_equal(x.grad.numpy(), np.array([0.0, 0.0, 5.0, 0.0], dtype))
