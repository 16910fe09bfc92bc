"""The autograd engine: accumulation, broadcasting, grad modes, deep graphs, freeing,
indexing backward, in-place safety, gradcheck and custom Functions.

The expected behaviour is PyTorch's.
"""
import gc
import threading
import weakref

import numpy as np
import pytest

import minidl
from minidl import Function, Tensor
from minidl.testing import GradcheckError, gradcheck


def f64(data, requires_grad=True):
    return minidl.tensor(np.asarray(data, dtype=np.float64), requires_grad=requires_grad)


# ---------------------------------------------------------------- the basics

def test_gradients_accumulate_across_backward_calls():
    x = f64([1.0, 2.0, 3.0])
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3, 3, 3])
    (x * x).sum().backward()  # a second graph: its gradient is added, not stored
    np.testing.assert_allclose(x.grad.numpy(), [3 + 2, 3 + 4, 3 + 6])


def test_retain_graph_allows_a_second_backward_that_doubles_grad():
    x = f64([1.0, -2.0])
    y = (x * x * x).sum()
    y.backward(retain_graph=True)
    np.testing.assert_allclose(x.grad.numpy(), [3, 12])
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [6, 24])


def test_second_backward_without_retain_graph_raises():
    x = f64([1.0, 2.0])
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


def test_retain_graph_then_freed():
    x = f64([2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()  # this one frees
    np.testing.assert_allclose(x.grad.numpy(), [8.0])
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


def test_graph_is_freed_after_backward():
    x = f64(np.linspace(0.1, 1, 5))
    h = x.exp()
    ref = weakref.ref(h)
    y = h.sum()
    del h
    gc.collect()
    assert ref() is not None  # the graph keeps the intermediate alive for backward
    y.backward()
    gc.collect()
    assert ref() is None      # ... and lets it go afterwards


def test_retain_graph_keeps_the_graph():
    x = f64([0.5])
    h = x.exp()
    ref = weakref.ref(h)
    y = h.sum()
    del h
    y.backward(retain_graph=True)
    gc.collect()
    assert ref() is not None


def test_tensor_used_twice_gets_summed_gradient():
    x = f64([1.0, -2.0, 3.0])
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2, -4, 6])


def test_diamond_graph_collects_all_paths_before_going_on():
    # h is used by two ops; its gradient must be complete before it flows on to x
    x = f64([1.0, 2.0])
    h = x * 2
    out = (h * h + h.exp() + h).sum()
    out.backward()
    hv = 2 * np.array([1.0, 2.0])
    np.testing.assert_allclose(x.grad.numpy(), 2 * (2 * hv + np.exp(hv) + 1))


def test_broadcasting_is_undone_in_gradients():
    a = f64([[1.0], [2.0], [3.0]])      # (3, 1)
    b = f64([10.0, 20.0, 30.0, 40.0])   # (4,)
    (a + b).sum().backward()
    assert a.grad.shape == (3, 1) and b.grad.shape == (4,)
    np.testing.assert_allclose(a.grad.numpy(), [[4], [4], [4]])
    np.testing.assert_allclose(b.grad.numpy(), [3, 3, 3, 3])

    a.grad = b.grad = None
    (a * b).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [[100], [100], [100]])  # sum of b
    np.testing.assert_allclose(b.grad.numpy(), [6, 6, 6, 6])           # sum of a


def test_broadcasting_with_leading_and_inner_size_one_dims():
    a = f64(np.arange(6.0).reshape(2, 1, 3))
    b = f64(np.ones((4, 1)))
    (a * b).sum().backward()
    assert a.grad.shape == (2, 1, 3) and b.grad.shape == (4, 1)
    np.testing.assert_allclose(a.grad.numpy(), np.full((2, 1, 3), 4.0))
    np.testing.assert_allclose(b.grad.numpy(), np.full((4, 1), 15.0))


def test_backward_with_explicit_gradient_on_non_scalar():
    x = f64([1.0, 2.0, 3.0])
    y = x * x
    y.backward(f64([1.0, 10.0, 100.0], requires_grad=False))
    np.testing.assert_allclose(x.grad.numpy(), [2, 40, 600])
    x2 = f64([[1.0, 2.0]])
    (x2 * 3).backward(np.array([[0.5, -1.0]]))  # a numpy array works as well
    np.testing.assert_allclose(x2.grad.numpy(), [[1.5, -3.0]])


def test_retain_grad_on_an_intermediate():
    x = f64([1.0, 2.0])
    h = x * 3
    h.retain_grad()
    k = h * 2               # not retained
    (k * h).sum().backward()  # = 2 h^2
    np.testing.assert_allclose(h.grad.numpy(), 4 * np.array([3.0, 6.0]))
    np.testing.assert_allclose(x.grad.numpy(), 12 * np.array([3.0, 6.0]))
    assert k.grad is None    # intermediates keep no grad unless asked, like torch


def test_leaf_without_requires_grad_gets_no_grad():
    x = f64([1.0, 2.0])
    c = f64([3.0, 4.0], requires_grad=False)
    (x * c).sum().backward()
    assert c.grad is None
    np.testing.assert_allclose(x.grad.numpy(), [3, 4])


def test_grad_dtype_matches_the_leaf():
    x = minidl.tensor([1.0, 2.0], requires_grad=True)  # float32
    (x * x).sum().backward()
    assert x.grad.dtype == minidl.float32
    assert isinstance(x.grad, Tensor) and not x.grad.requires_grad


# ---------------------------------------------------------------- grad modes

def test_no_grad_records_nothing():
    x = f64([1.0, 2.0])
    assert minidl.is_grad_enabled()
    with minidl.no_grad():
        assert not minidl.is_grad_enabled()
        y = x * 2 + 1
        z = y.exp().sum()
    assert minidl.is_grad_enabled()
    for t in (y, z):
        assert not t.requires_grad and t.grad_fn is None
    np.testing.assert_allclose(y.numpy(), [3, 5])


def test_enable_grad_inside_no_grad():
    x = f64([1.0, 2.0])
    with minidl.no_grad():
        with minidl.enable_grad():
            assert minidl.is_grad_enabled()
            y = x * x
        z = x * x
        assert not minidl.is_grad_enabled()
    assert y.requires_grad and y.grad_fn is not None
    assert not z.requires_grad
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2, 4])


def test_no_grad_restores_the_mode_after_an_exception():
    with pytest.raises(KeyError):
        with minidl.no_grad():
            raise KeyError("boom")
    assert minidl.is_grad_enabled()
    with minidl.no_grad():
        try:
            with minidl.enable_grad():
                raise KeyError("boom")
        except KeyError:
            pass
        assert not minidl.is_grad_enabled()


def test_no_grad_as_a_decorator():
    x = f64([1.0, 2.0])

    @minidl.no_grad()
    def double(t):
        """Doubles."""
        assert not minidl.is_grad_enabled()
        return t * 2

    y = double(x)
    assert not y.requires_grad and y.grad_fn is None
    assert minidl.is_grad_enabled()
    assert double.__name__ == "double" and double.__doc__ == "Doubles."
    assert (x * 2).requires_grad  # the decorator did not leave grad off

    @minidl.enable_grad()
    def square(t):
        return t * t

    with minidl.no_grad():
        s = square(x)
    assert s.requires_grad


def test_no_grad_as_a_bare_decorator_like_torch():
    # torch >= 2.1 accepts @torch.no_grad without parentheses
    x = f64([1.0, 2.0])

    @minidl.no_grad
    def double(t):
        return t * 2

    y = double(x)
    assert isinstance(y, Tensor) and not y.requires_grad
    assert minidl.is_grad_enabled()


def test_grad_mode_is_per_thread():
    seen = []
    with minidl.no_grad():
        thread = threading.Thread(target=lambda: seen.append(minidl.is_grad_enabled()))
        thread.start()
        thread.join()
        assert not minidl.is_grad_enabled()
    assert seen == [True]


# ---------------------------------------------------------------- deep graphs

def test_chain_of_10000_ops():
    x = f64(1.0)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()  # no RecursionError: the walk is iterative
    assert x.grad.item() == pytest.approx(1.0001 ** 10_000, rel=1e-9)


def test_chain_of_10000_additions():
    x = f64([0.0, 1.0])
    y = x
    for _ in range(10_000):
        y = y + 0.001
    y.sum().backward()
    np.testing.assert_allclose(y.numpy(), [10.0, 11.0])
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0])


class Scale(Function):
    """y = 1.00001 x: a cheap op, so that building 100,000 nodes stays fast."""
    @staticmethod
    def forward(ctx, x):
        return x * 1.00001

    @staticmethod
    def backward(ctx, grad):
        return grad * 1.00001


def test_chain_of_100000_ops():
    x = f64(1.0)
    y = x
    for _ in range(100_000):
        y = Scale.apply(y)
    y.backward()
    assert x.grad.item() == pytest.approx(1.00001 ** 100_000, rel=1e-8)


# ---------------------------------------------------------------- indexing backward

def test_getitem_repeated_int_indices_scatter_add():
    x = f64(np.arange(5.0))
    x[[0, 0, 1]].sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2, 1, 0, 0, 0])


def test_getitem_repeated_tensor_and_2d_indices():
    x = f64(np.arange(12.0).reshape(3, 4))
    idx = minidl.tensor([2, 2, 0])
    (x[idx] * 2).sum().backward()
    expected = np.zeros((3, 4))
    expected[2] = 4
    expected[0] = 2
    np.testing.assert_allclose(x.grad.numpy(), expected)

    x.grad = None
    x[[0, 0, 2], [1, 1, 3]].sum().backward()  # element pairs, (0, 1) twice
    expected = np.zeros((3, 4))
    expected[0, 1] = 2
    expected[2, 3] = 1
    np.testing.assert_allclose(x.grad.numpy(), expected)


def test_getitem_slice_and_int_backward():
    x = f64(np.arange(12.0).reshape(3, 4))
    (x[1:, ::2].sum() + x[0, 3] * 5 + x[None, -1, 1].sum()).backward()
    expected = np.zeros((3, 4))
    expected[1:, ::2] = 1
    expected[0, 3] = 5
    expected[2, 1] += 1
    np.testing.assert_allclose(x.grad.numpy(), expected)


def test_bool_mask_backward():
    x = f64([-1.0, 2.0, -3.0, 4.0])
    mask = x > 0
    (x[mask] * x[mask]).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0, 4, 0, 8])
    y = f64(np.arange(6.0).reshape(2, 3))
    y[np.array([False, True])].sum().backward()
    np.testing.assert_allclose(y.grad.numpy(), [[0, 0, 0], [1, 1, 1]])


def test_max_dim_gradient_goes_to_the_returned_index_like_torch():
    # torch: x.max(dim) sends the gradient to the element at .indices only (no splitting on ties)
    x = f64([[1.0, 3.0, 3.0], [5.0, 2.0, 0.0]])
    out = x.max(1)
    out.values.sum().backward()
    expected = np.zeros((2, 3))
    for row, col in enumerate(out.indices.tolist()):
        expected[row, col] = 1
    np.testing.assert_allclose(x.grad.numpy(), expected)


def test_max_without_dim_splits_ties_evenly_like_torch():
    x = f64([[1.0, 3.0, 3.0]])
    x.max().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0, 0.5, 0.5]])


# ---------------------------------------------------------------- in-place safety

def test_in_place_on_a_leaf_that_requires_grad_is_refused():
    x = f64([1.0, 2.0])
    for change in (lambda: x.add_(1), lambda: x.mul_(2), lambda: x.zero_(),
                   lambda: x.__setitem__(0, 5.0)):
        with pytest.raises(RuntimeError, match="no_grad"):
            change()
    assert x.version == 0 and x.tolist() == [1.0, 2.0]


def test_in_place_on_a_leaf_works_under_no_grad_and_bumps_version():
    x = f64([1.0, 2.0])
    with minidl.no_grad():
        same = x.add_(1)
        x[0] = 10.0
    assert same is x
    assert x.tolist() == [10.0, 3.0]
    assert x.version == 2
    assert x.requires_grad and x.is_leaf


def test_in_place_update_of_a_saved_leaf_is_caught_at_backward():
    x = f64([1.0, 2.0])
    y = (x * x).sum()
    with minidl.no_grad():
        x.add_(1)
    with pytest.raises(RuntimeError, match="modified in place"):
        y.backward()


@pytest.mark.parametrize("change", [
    lambda b: b.mul_(2),
    lambda b: b.__setitem__(0, 5.0),
    lambda b: b.add_(1),
    lambda b: b.fill_(0.0),
    lambda b: b.copy_(minidl.zeros(6, dtype=minidl.float64)),
], ids=["mul_", "setitem", "add_", "fill_", "copy_"])
def test_changing_a_saved_input_in_place_is_caught(change):
    a = f64(np.arange(1.0, 7.0))
    b = f64(np.arange(2.0, 8.0), requires_grad=False)
    y = a * b  # Mul saved b for a's gradient
    change(b)
    with pytest.raises(RuntimeError, match="modified in place"):
        y.sum().backward()


@pytest.mark.parametrize("view", [
    lambda b: b.reshape(2, 3),
    lambda b: b.view(3, 2),
    lambda b: b.reshape(2, 3).T,
    lambda b: b[1:4],
    lambda b: b.unsqueeze(0),
    lambda b: b.detach(),
], ids=["reshape", "view", "transpose", "slice", "unsqueeze", "detach"])
def test_changing_a_saved_input_through_a_view_is_caught(view):
    a = f64(np.arange(1.0, 7.0))
    b = f64(np.arange(2.0, 8.0), requires_grad=False)
    y = a * b
    view(b).mul_(2)
    with pytest.raises(RuntimeError, match="modified in place"):
        y.sum().backward()


def test_changing_the_base_of_a_saved_view_is_caught():
    a = f64(np.arange(6.0).reshape(2, 3))
    b = f64(np.arange(6.0), requires_grad=False)
    y = a * b.reshape(2, 3)  # Mul saved the view's array
    b.add_(1)
    with pytest.raises(RuntimeError, match="modified in place"):
        y.sum().backward()


def test_changing_a_saved_output_is_caught():
    x = f64([0.0, 1.0])
    h = x.exp()  # Exp saved its output for backward
    out = h.sum()
    h.detach().mul_(2)
    with pytest.raises(RuntimeError, match="modified in place"):
        out.backward()


def test_changing_a_tensor_no_saved_array_refers_to_is_fine():
    a = f64([1.0, 2.0, 3.0])
    b = f64([4.0, 5.0, 6.0], requires_grad=False)
    y = a + b  # Add saves nothing
    b.add_(1)
    y.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [1, 1, 1])

    a.grad = None
    c = f64([4.0, 5.0, 6.0], requires_grad=False)
    z = a * c
    c.clone().mul_(2)  # a clone is a copy: changing it leaves c alone
    z.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [4, 5, 6])


def test_changing_an_input_that_only_the_output_was_saved_for_is_fine():
    x = f64([0.0, 1.0])
    y = x.exp()  # Exp saves its output, not x (as in torch)
    with minidl.no_grad():
        x.add_(1)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.exp([0.0, 1.0]))


# ---------------------------------------------------------------- training by hand

def test_mlp_loss_decreases_with_manual_sgd():
    minidl.manual_seed(0)
    X = minidl.randn(64, 4)
    true_w = minidl.tensor([[1.0], [-2.0], [0.5], [3.0]])
    Y = (X @ true_w).tanh()
    params = [minidl.randn(4, 16) * 0.5, minidl.zeros(16), minidl.randn(16, 1) * 0.25, minidl.zeros(1)]
    params = [p.detach().requires_grad_() for p in params]
    W1, b1, W2, b2 = params
    lr, losses = 0.1, []
    for _ in range(30):
        pred = (X @ W1 + b1).relu() @ W2 + b2
        loss = ((pred - Y) ** 2).mean()
        assert loss.shape == ()
        loss.backward()
        losses.append(loss.item())
        for p in params:
            assert p.grad is not None and p.grad.shape == p.shape
        with minidl.no_grad():
            for p in params:
                p -= lr * p.grad
                p.grad = None
        assert all(p.requires_grad and p.is_leaf and p.grad is None for p in params)
    assert all(later < earlier for earlier, later in zip(losses[:5], losses[1:6]))
    assert losses[-1] < 0.5 * losses[0]


# ---------------------------------------------------------------- custom Functions and gradcheck

class Cube(Function):
    """y = x^3;  dy/dx = 3 x^2."""
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_arrays
        return grad * 3 * x ** 2


class ScaledMul(Function):
    """z = scale * a * b, with a keyword parameter."""
    @staticmethod
    def forward(ctx, a, b, scale):
        ctx.save_for_backward(a, b)
        ctx.scale = scale
        return scale * a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_arrays
        da = grad * ctx.scale * b if ctx.needs_input_grad[0] else None
        db = grad * ctx.scale * a if ctx.needs_input_grad[1] else None
        return da, db


class WrongSquare(Function):
    """y = x^2 with a wrong backward: d(x^2)/dx = x (should be 2x)."""
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_arrays
        return grad * x


class WrongAtOneElement(Function):
    """y = 2x with a backward that is off at element (1, 2) only."""
    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad):
        g = 2 * grad
        g[1, 2] += 1.0
        return g


class WrongSecondInput(Function):
    """z = a * b with the gradient of b doubled."""
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_arrays
        return grad * b, 2 * grad * a


def test_custom_function_forward_and_backward():
    x = f64([1.0, -2.0, 3.0])
    y = Cube.apply(x)
    assert isinstance(y, Tensor) and y.requires_grad
    assert "Cube" in y.grad_fn.name
    np.testing.assert_allclose(y.numpy(), [1, -8, 27])
    (y * 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 6 * np.array([1.0, 4.0, 9.0]))
    assert gradcheck(Cube.apply, f64(np.linspace(-1, 1, 7)))


def test_custom_function_with_two_inputs_and_a_parameter():
    a = f64([1.0, 2.0])
    b = f64([3.0, 4.0], requires_grad=False)
    z = ScaledMul.apply(a, b, scale=0.5)
    np.testing.assert_allclose(z.numpy(), [1.5, 4.0])
    z.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [1.5, 2.0])
    assert b.grad is None
    with minidl.no_grad():
        assert not ScaledMul.apply(a, b, scale=2.0).requires_grad
    assert gradcheck(lambda a, b: ScaledMul.apply(a, b, scale=3.0), f64(np.ones((2, 3))), f64(np.arange(3.0)))


def test_custom_function_saved_arrays_are_guarded_against_in_place_changes():
    a = f64([1.0, 2.0])
    b = f64([3.0, 4.0], requires_grad=False)
    z = ScaledMul.apply(a, b, scale=1.0)
    b.mul_(10)
    with pytest.raises(RuntimeError, match="modified in place"):
        z.sum().backward()


def test_gradcheck_passes_on_correct_functions():
    minidl.manual_seed(0)
    x = minidl.randn(3, 4, dtype=minidl.float64, requires_grad=True)
    y = minidl.randn(3, 1, dtype=minidl.float64, requires_grad=True)
    before = x.numpy().copy()
    assert gradcheck(lambda x, y: (x * y).tanh() + x.exp() / (1 + y * y), x, y) is True
    np.testing.assert_array_equal(x.numpy(), before)  # the inputs are left as they were
    assert gradcheck(lambda x: (x @ x.T).sigmoid(), x) is True
    assert gradcheck(lambda x: x[[0, 0, 2], 1:] * 3, x) is True


def test_gradcheck_catches_a_wrong_backward():
    x = f64(np.linspace(0.5, 2.0, 6).reshape(2, 3))
    with pytest.raises(GradcheckError, match=r"input 0.*index") as info:
        gradcheck(WrongSquare.apply, x)
    assert isinstance(info.value, AssertionError)
    assert "(2, 3)" in str(info.value)  # the shape of the input


def test_gradcheck_names_the_wrong_element():
    x = f64(np.arange(12.0).reshape(3, 4))
    with pytest.raises(GradcheckError, match=r"index \(1, 2\)"):
        gradcheck(WrongAtOneElement.apply, x)


def test_gradcheck_names_the_wrong_input():
    a = f64([[1.0, 2.0]])
    b = f64([[3.0, -1.0]])
    with pytest.raises(GradcheckError, match="input 1"):
        gradcheck(WrongSecondInput.apply, a, b)
