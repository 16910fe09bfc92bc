"""Edge cases found in review: each asserts PyTorch's behaviour (or a clear error) where minidl once differed."""
import numpy as np
import pytest

import minidl as md
from minidl import Function
from minidl.testing import GradcheckError, gradcheck


def test_int_tensors_meeting_float_values_become_float():
    np.testing.assert_allclose((md.tensor([1, 2]) * np.array([0.5, 0.5])).numpy(), [0.5, 1.0])
    np.testing.assert_allclose((md.tensor([1, 2]) + [0.5, 0.5]).numpy(), [1.5, 2.5])
    assert (md.tensor([1, 2]) < np.array([1.5, 1.5])).tolist() == [True, False]
    assert (md.tensor([1, 2]) * 2).dtype == md.int64


def test_math_functions_on_int_tensors_give_the_default_float():
    y = md.tensor([1, 2]).sigmoid()
    assert y.dtype == md.float32
    np.testing.assert_allclose(y.numpy(), 1 / (1 + np.exp(-np.array([1.0, 2.0]))), rtol=1e-6)
    for fn in (lambda x: x.exp(), lambda x: x.log(), lambda x: x.sqrt(), lambda x: x.tanh(),
               lambda x: x.softmax(0), lambda x: x.log_softmax(0)):
        assert (fn(md.tensor([1, 2])) + md.ones(2)).dtype == md.float32
    assert md.tensor([-1, 2]).abs().dtype == md.int64          # abs and relu keep integers, as in PyTorch
    with pytest.raises(TypeError, match="bool"):
        -md.tensor([True])


def test_gather_with_an_index_smaller_than_the_input():
    x = md.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = x.gather(0, md.tensor([[1]]))
    assert y.tolist() == [[3.0]]
    y.sum().backward()
    assert x.grad.tolist() == [[0.0, 0.0], [1.0, 0.0]]
    assert md.randn(3, 4).gather(1, md.tensor([[0, 3], [1, 2]])).shape == (2, 2)
    with pytest.raises(IndexError, match="gather"):
        md.randn(2, 2).gather(1, md.tensor([[-1, 0], [0, 0]]))


@pytest.mark.parametrize("call", [
    lambda: md.ones(2, 3).unsqueeze(3), lambda: md.ones(2, 3).unsqueeze(-4),
    lambda: md.ones(2, 3).split(1, dim=2), lambda: md.cat([md.ones(2, 3)], dim=2),
    lambda: md.ones(2, 3).transpose(0, 2), lambda: md.ones(2, 3, 4).flatten(2, 1),
    lambda: md.ones(3, 1).expand(-1, 3, 4), lambda: md.cat([md.tensor(1.0), md.tensor(2.0)]),
    lambda: md.ones(3).split(0),
])
def test_out_of_range_dims_are_errors(call):
    with pytest.raises((IndexError, ValueError)):
        call()


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # 0 ** -1 inside the masked-out branch
def test_pow_gradients_at_a_zero_base_follow_pytorch():
    a = md.tensor([0.0, -1.0, 2.0], requires_grad=True)
    (a ** 0).sum().backward()
    assert a.grad.tolist() == [0.0, 0.0, 0.0]
    b = md.tensor([0.0, 2.0], requires_grad=True)
    (md.tensor([0.0, 0.0]) ** b).sum().backward()
    assert b.grad.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("op", [lambda y: y.logsumexp(1), lambda y: y.amax(1), lambda y: y.max()])
def test_changing_a_reduction_result_in_place_is_caught(op):
    x = md.randn(2, 3, requires_grad=True)
    y = op(x)
    z = y + 0.0
    with md.no_grad():
        y.add_(100.0)
    with pytest.raises(RuntimeError, match="modified in place"):
        z.sum().backward()


def test_advanced_indexing_copies_so_changing_the_source_is_fine():
    a = md.tensor([1.0, 2.0, 3.0])
    x = md.randn(3, requires_grad=True)
    v = a[md.tensor([0, 1])]
    y = (x[0:2] * v).sum()
    a.mul_(10)
    y.backward()
    assert x.grad.tolist() == [1.0, 2.0, 0.0]


def test_clamp_with_tensor_bounds_and_int_input():
    x = md.tensor([1.0, 5.0, 9.0], requires_grad=True)
    lo, hi = md.tensor([2.0, 2.0, 2.0], requires_grad=True), md.tensor([8.0, 8.0, 8.0])
    y = x.clamp(lo, hi)
    assert y.tolist() == [2.0, 5.0, 8.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 0.0] and lo.grad.tolist() == [1.0, 0.0, 0.0]
    assert md.tensor([1, 5]).clamp(0.5, 2.5).dtype == md.float32


def test_ops_without_any_tensor_argument():
    assert md.where(md.tensor([True, False]), 1.0, 0.0).tolist() == [1.0, 0.0]
    assert md.add(1.0, 2.0).item() == 3.0


def test_one_dim_ops_accept_0d_tensors():
    x = md.tensor(3.0)
    assert x.softmax(0).item() == 1.0 and x.log_softmax(-1).item() == 0.0
    assert x.logsumexp(0).item() == 3.0 and x.argmax(0).item() == 0
    values, indices = x.max(0)
    assert values.item() == 3.0 and indices.item() == 0
    assert md.ones(2, 3).mean(()).item() == 1.0 and md.ones(2, 3).sum(()).item() == 6.0


def test_backward_gradient_must_match_dtype():
    x = md.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="float64"):
        x.backward(md.tensor(np.array([1.0, 1.0])))


def test_gradcheck_fails_when_finite_differences_are_nan_and_keeps_grads():
    x = md.tensor([-1.0, 2.0], dtype=md.float64, requires_grad=True)
    with pytest.raises(GradcheckError, match="nan"):
        gradcheck(lambda t: t.log(), x)
    y = md.tensor([1.0, 2.0], dtype=md.float64, requires_grad=True)
    (y * 3).sum().backward()
    gradcheck(lambda t: t * t, y)
    assert y.grad.tolist() == [3.0, 3.0]


def test_custom_function_with_a_wrong_gradient_count_or_shape():
    class OneGrad(Function):
        @staticmethod
        def forward(ctx, a, b):
            return ctx.backend.add(a, b)

        @staticmethod
        def backward(ctx, grad):
            return grad

    class BadShape(OneGrad):
        @staticmethod
        def backward(ctx, grad):
            return grad[0], grad

    a, b = md.randn(2, 3, requires_grad=True), md.randn(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="1 gradients for 2 inputs"):
        OneGrad.apply(a, b).sum().backward()
    with pytest.raises(RuntimeError, match=r"shape \(3,\) for an input of shape \(2, 3\)"):
        BadShape.apply(a, b).sum().backward()


def test_assigning_a_tensor_that_requires_grad_is_refused():
    buf, w = md.zeros(3), md.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="drop its graph"):
        buf[:] = w * 2
    with pytest.raises(RuntimeError, match="retain_grad"):
        md.ones(2).retain_grad()
