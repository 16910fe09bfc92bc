"""Errors a learner can act on: each names the op and the shapes (or dtypes, devices)."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import minidl
import minidl.backend
import minidl.nn.functional as F
from minidl.testing import gradcheck


def raises(exception, *fragments):
    """pytest.raises that checks that every fragment appears (literally) in the message."""
    pattern = "(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments)
    return pytest.raises(exception, match=pattern)


# ---------------------------------------------------------------- shapes

def test_add_shapes_that_do_not_broadcast():
    with raises(ValueError, "add", "(3, 4)", "(5,)"):
        minidl.zeros(3, 4) + minidl.zeros(5)


@pytest.mark.parametrize("op, name", [
    (lambda a, b: a - b, "sub"),
    (lambda a, b: a * b, "mul"),
    (lambda a, b: a / b, "div"),
])
def test_other_binary_ops_name_themselves(op, name):
    with raises(ValueError, name, "(2, 3)", "(4,)"):
        op(minidl.ones(2, 3), minidl.ones(4))


def test_matmul_inner_dims_differ():
    with raises(ValueError, "matmul", "(3, 4)", "(5, 2)"):
        minidl.zeros(3, 4) @ minidl.zeros(5, 2)
    with raises(ValueError, "matmul", "(3, 4)", "(5,)"):
        minidl.matmul(minidl.zeros(3, 4), minidl.zeros(5))


def test_conv2d_wrong_channels():
    x = minidl.zeros(1, 3, 8, 8)
    w = minidl.zeros(4, 2, 3, 3)
    with raises(ValueError, "conv2d", "(1, 3, 8, 8)", "(4, 2, 3, 3)"):
        minidl.conv2d(x, w)


def test_conv2d_needs_4d_input():
    with raises(ValueError, "conv2d", "(3, 8, 8)"):
        F.conv2d(minidl.zeros(3, 8, 8), minidl.zeros(4, 3, 3, 3))


def test_reshape_to_an_incompatible_shape():
    with raises(ValueError, "reshape", "(2, 3)", "(4,)"):
        minidl.zeros(2, 3).reshape(4)
    with raises(ValueError, "reshape", "(2, 3)"):
        minidl.zeros(2, 3).reshape(-1, 4)
    with raises(ValueError, "reshape"):
        minidl.zeros(2, 3).reshape(-1, -1)


def test_cat_shapes_must_match():
    with raises(ValueError, "cat", "(2, 3)", "(2, 4)"):
        minidl.cat([minidl.zeros(2, 3), minidl.zeros(2, 4)], dim=0)


def test_index_out_of_range():
    with raises(IndexError, "getitem", "(3, 4)"):
        minidl.zeros(3, 4)[5]


def test_float_tensor_as_index():
    with pytest.raises(IndexError):
        minidl.zeros(3, 4)[minidl.tensor([0.0, 1.0])]


def test_reduction_dim_out_of_range():
    with raises(IndexError, "sum", "3"):
        minidl.zeros(2, 3).sum(dim=3)


def test_item_and_truth_value_of_many_values():
    with raises(ValueError, "item", "(2,)"):
        minidl.zeros(2).item()
    with pytest.raises((RuntimeError, ValueError), match="ambiguous"):
        bool(minidl.zeros(2))


# ---------------------------------------------------------------- dtypes

@pytest.mark.parametrize("op, name", [
    (lambda a, b: a + b, "add"),
    (lambda a, b: a * b, "mul"),
    (lambda a, b: a @ b, "matmul"),
])
def test_mixing_float32_and_float64(op, name):
    a = minidl.ones(2, 2)                          # float32
    b = minidl.tensor(np.ones((2, 2)))             # float64
    with raises(TypeError, name, "float32", "float64"):
        op(a, b)


def test_requires_grad_on_an_int_tensor():
    with raises(RuntimeError, "requires_grad", "int64"):
        minidl.tensor([1, 2, 3], requires_grad=True)
    with raises(RuntimeError, "requires_grad"):
        minidl.arange(3).requires_grad_()
    with raises(RuntimeError, "requires_grad"):
        minidl.zeros(2, dtype=minidl.int64, requires_grad=True)


def test_unsupported_data():
    with pytest.raises(TypeError, match="tensor"):
        minidl.tensor(["a", "b"])
    with raises(TypeError, "from_numpy", "float16"):
        minidl.from_numpy(np.zeros(2, dtype=np.float16))
    with pytest.raises((TypeError, ValueError)):
        minidl.set_default_dtype(minidl.int64)


def test_cross_entropy_with_float_targets():
    logits = minidl.zeros(4, 3)
    with raises(TypeError, "cross_entropy", "float32"):
        F.cross_entropy(logits, minidl.tensor([0.0, 1.0, 2.0, 1.0]))


def test_cross_entropy_with_out_of_range_class_index():
    logits = minidl.zeros(4, 3)
    with raises(IndexError, "cross_entropy", "[0, 2]", "5"):
        F.cross_entropy(logits, minidl.tensor([0, 1, 5, 2]))
    with raises(IndexError, "cross_entropy", "-1"):
        F.cross_entropy(logits, minidl.tensor([0, -1, 2, 2]))
    with raises(IndexError, "nll_loss"):
        F.nll_loss(logits, minidl.tensor([0, 1, 3, 2]))


def test_cross_entropy_with_mismatched_batch():
    with raises(ValueError, "cross_entropy", "(4, 3)", "(5,)"):
        F.cross_entropy(minidl.zeros(4, 3), minidl.tensor([0, 1, 2, 0, 1]))


def test_embedding_with_out_of_range_ids():
    weight = minidl.randn(5, 2, requires_grad=True)
    with raises(IndexError, "embedding", "5"):
        F.embedding(minidl.tensor([0, 5]), weight)
    with raises(IndexError, "embedding"):
        F.embedding(minidl.tensor([[-1, 0]]), weight)
    with raises(TypeError, "embedding"):
        F.embedding(minidl.tensor([0.0, 1.0]), weight)


# ---------------------------------------------------------------- backward

def test_backward_on_a_non_scalar_without_gradient():
    x = minidl.ones(2, 3, requires_grad=True)
    with raises(RuntimeError, "shape", "(2, 3)"):
        (x * 2).backward()


def test_backward_with_a_gradient_of_the_wrong_shape():
    x = minidl.ones(2, 3, requires_grad=True)
    with raises(RuntimeError, "(3, 2)", "(2, 3)"):
        (x * 2).backward(minidl.ones(3, 2))


def test_backward_on_a_tensor_that_does_not_require_grad():
    with raises(RuntimeError, "does not require grad"):
        (minidl.ones(3) * 2).sum().backward()
    x = minidl.ones(3, requires_grad=True)
    with minidl.no_grad():
        y = (x * 2).sum()
    with raises(RuntimeError, "does not require grad"):
        y.backward()


# ---------------------------------------------------------------- gradcheck

def test_gradcheck_with_float32_input():
    x = minidl.randn(3, requires_grad=True)
    with raises(ValueError, "gradcheck", "float64"):
        gradcheck(lambda t: t * 2, x)


def test_gradcheck_with_nothing_to_check():
    with raises(ValueError, "gradcheck", "requires_grad"):
        gradcheck(lambda t: t * 2, minidl.randn(3, dtype=minidl.float64))


# ---------------------------------------------------------------- devices

@pytest.mark.parametrize("make", [
    lambda: minidl.tensor([1.0], device="tpu"),
    lambda: minidl.zeros(2, device="tpu"),
    lambda: minidl.randn(2, device="tpu"),
    lambda: minidl.ones(2).to("tpu"),
], ids=["tensor", "zeros", "randn", "to"])
def test_unknown_device_lists_the_available_ones(make):
    with raises(ValueError, "'tpu'", "cpu"):
        make()


def test_registered_device_is_listed(cpu2):
    assert "cpu2" in minidl.devices() and "cpu" in minidl.devices()
    with raises(ValueError, "'tpu'", "cpu2"):
        minidl.zeros(1, device="tpu")


def test_mixing_devices(cpu2):
    x = minidl.ones(3).to("cpu2")
    y = minidl.ones(3)
    assert x.device == "cpu2" and y.device == "cpu"
    with raises(RuntimeError, "different devices", "cpu2", "cpu"):
        x + y
    with raises(RuntimeError, "different devices"):
        y * x
    with raises(RuntimeError, "different devices"):
        minidl.ones(2, 3).to("cpu2") @ minidl.ones(3, 2)


def test_to_another_device_is_differentiable(cpu2):
    x = minidl.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x.to("cpu2")
    assert y.device == "cpu2" and y.requires_grad
    assert (y * 2 + 1).device == "cpu2"
    (y * y * minidl.tensor([1.0, 10.0, 100.0], device="cpu2")).sum().backward()
    assert x.grad.device == "cpu"
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 40.0, 600.0])
    back = y.to("cpu")
    assert back.device == "cpu"
    np.testing.assert_array_equal(back.numpy(), x.numpy())
    assert y.to("cpu2") is y  # already there


def test_unknown_kernels_choice_is_a_clear_error():
    env = dict(os.environ, MINIDL_KERNELS="bogus")
    code = "import minidl; print(minidl.ones(2) + 1)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError"), done.stderr
    assert "MINIDL_KERNELS" in last and "bogus" in last
    assert "numpy" in last  # says what would work
