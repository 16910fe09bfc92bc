"""The Tensor API: dtypes, memory sharing, conversions, factories, operators, indexing.

Every expectation here is PyTorch's behaviour (minidl follows it), except where a
comment says minidl chooses differently on purpose (numpy arrays on the left of an
operator give a Tensor).
"""
import numpy as np
import pytest

import minidl
from minidl import Tensor


# ---------------------------------------------------------------- dtypes

@pytest.mark.parametrize("data, dtype", [
    (1.5, minidl.float32),                                       # Python float -> default float
    ([1.0, 2.0], minidl.float32),
    ([1, 2.5], minidl.float32),                                  # mixed ints and floats -> float
    (np.array([1.0, 2.0], dtype=np.float64), minidl.float64),    # numpy float64 kept
    (np.float64(3.0), minidl.float64),                           # numpy float64 scalar kept
    (np.array([1.0], dtype=np.float32), minidl.float32),
    (3, minidl.int64),                                           # Python int -> int64
    ([[1, 2], [3, 4]], minidl.int64),
    (np.array([1, 2], dtype=np.int32), minidl.int64),            # any integer array -> int64
    ([True, False], minidl.bool_),
])
def test_tensor_infers_dtype(data, dtype):
    assert minidl.tensor(data).dtype == dtype


def test_default_float_dtype_is_float32_and_can_be_changed():
    assert minidl.get_default_dtype() == minidl.float32
    try:
        minidl.set_default_dtype(minidl.float64)
        assert minidl.tensor([1.0]).dtype == minidl.float64
        assert minidl.zeros(2).dtype == minidl.float64
        assert minidl.tensor(np.array([1.0], dtype=np.float32)).dtype == minidl.float32  # numpy dtype kept
    finally:
        minidl.set_default_dtype(minidl.float32)
    assert minidl.tensor([1.0]).dtype == minidl.float32


def test_explicit_dtype_converts():
    t = minidl.tensor([1, 2, 3], dtype=minidl.float64)
    assert t.dtype == minidl.float64
    np.testing.assert_array_equal(t.numpy(), [1.0, 2.0, 3.0])


def test_comparisons_give_bool_tensors():
    x = minidl.tensor([1.0, 2.0, 3.0])
    y = minidl.tensor([3.0, 2.0, 1.0])
    cases = {
        "lt": (x < y, [True, False, False]),
        "le": (x <= y, [True, True, False]),
        "gt": (x > y, [False, False, True]),
        "ge": (x >= y, [False, True, True]),
        "eq": (x == y, [False, True, False]),
        "ne": (x != y, [True, False, True]),
        "scalar": (x > 1.5, [False, True, True]),
    }
    for name, (result, expected) in cases.items():
        assert isinstance(result, Tensor), name
        assert result.dtype == minidl.bool_, name
        assert result.tolist() == expected, name


def test_logical_ops_on_bool_tensors():
    a = minidl.tensor([True, True, False])
    b = minidl.tensor([True, False, False])
    assert (a & b).tolist() == [True, False, False]
    assert (a | b).tolist() == [True, True, False]
    assert (~a).tolist() == [False, False, True]
    assert (~a).dtype == minidl.bool_


def test_comparison_with_numpy_on_the_left_gives_a_bool_tensor():
    x = minidl.tensor([1.0, 2.0, 3.0])
    r = np.array([2.0, 2.0, 2.0]) < x
    assert isinstance(r, Tensor) and r.dtype == minidl.bool_
    assert r.tolist() == [False, False, True]


def test_comparisons_do_not_require_grad():
    x = minidl.tensor([1.0, -1.0], requires_grad=True)
    m = x > 0
    assert not m.requires_grad and m.grad_fn is None


def test_sum_of_bool_tensor_counts_as_int64():
    x = minidl.tensor([0.5, -1.0, 2.0, 3.0])
    n = (x > 0).sum()
    assert n.dtype == minidl.int64
    assert n.item() == 3


# ---------------------------------------------------------------- memory: tensor copies, from_numpy shares

def test_tensor_copies_its_data():
    a = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    t = minidl.tensor(a)
    a[0] = 100.0
    assert t.tolist() == [1.0, 2.0, 3.0]
    t.add_(1)
    np.testing.assert_array_equal(a, [100.0, 2.0, 3.0])


def test_tensor_of_a_tensor_copies():
    t = minidl.tensor([1.0, 2.0])
    u = minidl.tensor(t)
    u.add_(1)
    assert t.tolist() == [1.0, 2.0]
    assert u.tolist() == [2.0, 3.0]


def test_from_numpy_shares_memory_both_ways():
    a = np.array([1.0, 2.0, 3.0], dtype=np.float64)
    t = minidl.from_numpy(a)
    assert t.dtype == minidl.float64
    a[0] = 100.0
    assert t.tolist() == [100.0, 2.0, 3.0]
    t.mul_(2)
    np.testing.assert_array_equal(a, [200.0, 4.0, 6.0])


# ---------------------------------------------------------------- conversions

def test_numpy_shares_memory_and_array_protocol():
    t = minidl.tensor([[1.0, 2.0], [3.0, 4.0]])
    a = t.numpy()
    assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.shape == (2, 2)
    a[0, 0] = -1.0
    assert t.tolist()[0][0] == -1.0  # like torch: .numpy() is a view of the tensor
    b = np.asarray(t)
    np.testing.assert_array_equal(b, [[-1.0, 2.0], [3.0, 4.0]])
    c = np.asarray(t, dtype=np.float64)
    assert c.dtype == np.float64
    np.testing.assert_array_equal(c, b)
    assert float(np.asarray(t).sum()) == 8.0


def test_item_returns_python_numbers():
    f = minidl.tensor([2.5]).item()
    i = minidl.tensor([[7]]).item()
    b = minidl.tensor(True).item()
    assert type(f) is float and f == 2.5
    assert type(i) is int and i == 7
    assert type(b) is bool and b is True
    assert float(minidl.tensor(1.5)) == 1.5
    assert int(minidl.tensor(3)) == 3


def test_item_of_many_values_is_an_error():
    with pytest.raises(ValueError, match="item"):
        minidl.tensor([1.0, 2.0]).item()


def test_tolist_gives_nested_python_lists():
    t = minidl.tensor([[1, 2, 3], [4, 5, 6]])
    out = t.tolist()
    assert out == [[1, 2, 3], [4, 5, 6]]
    assert type(out) is list and type(out[0]) is list and type(out[0][0]) is int
    assert minidl.tensor(2.0).tolist() == 2.0


# ---------------------------------------------------------------- shape, ndim, size, numel

def test_shape_ndim_size_numel_len():
    t = minidl.zeros(2, 3, 4)
    assert t.shape == (2, 3, 4)
    assert isinstance(t.shape, tuple)
    assert t.ndim == 3 and t.dim() == 3
    assert tuple(t.size()) == (2, 3, 4)
    assert t.size(1) == 3 and t.size(-1) == 4
    assert t.numel() == 24
    assert len(t) == 2
    s = minidl.tensor(5.0)
    assert s.shape == () and s.ndim == 0 and s.numel() == 1
    with pytest.raises(TypeError):
        len(s)


def test_iterating_gives_rows():
    t = minidl.tensor([[1, 2], [3, 4], [5, 6]])
    rows = list(t)
    assert len(rows) == 3
    assert all(isinstance(r, Tensor) for r in rows)
    assert [r.tolist() for r in rows] == [[1, 2], [3, 4], [5, 6]]


# ---------------------------------------------------------------- factories

def test_zeros_ones_full():
    z = minidl.zeros(2, 3)
    assert z.shape == (2, 3) and z.dtype == minidl.float32 and not z.numpy().any()
    assert minidl.zeros((2, 3)).shape == (2, 3)  # a tuple works too
    o = minidl.ones(4, dtype=minidl.int64)
    assert o.dtype == minidl.int64 and o.tolist() == [1, 1, 1, 1]
    f = minidl.full((2, 2), 1.5)
    assert f.dtype == minidl.float32 and f.tolist() == [[1.5, 1.5], [1.5, 1.5]]
    f64 = minidl.full((3,), 2.0, dtype=minidl.float64)
    assert f64.dtype == minidl.float64
    assert minidl.zeros(3, requires_grad=True).requires_grad


def test_full_infers_dtype_from_the_fill_value_like_torch():
    # torch.full((2, 2), 7) is int64 and torch.full((2,), True) is bool
    assert minidl.full((2, 2), 7).dtype == minidl.int64
    assert minidl.full((2, 2), 7).tolist() == [[7, 7], [7, 7]]
    assert minidl.full((2,), True).dtype == minidl.bool_


def test_arange_int_and_float():
    a = minidl.arange(5)
    assert a.dtype == minidl.int64 and a.tolist() == [0, 1, 2, 3, 4]
    b = minidl.arange(2, 8, 2)
    assert b.dtype == minidl.int64 and b.tolist() == [2, 4, 6]
    c = minidl.arange(0, 1, 0.25)
    assert c.dtype == minidl.float32 and c.tolist() == [0.0, 0.25, 0.5, 0.75]
    d = minidl.arange(3.0)
    assert d.dtype == minidl.float32 and d.tolist() == [0.0, 1.0, 2.0]
    e = minidl.arange(3, dtype=minidl.float64)
    assert e.dtype == minidl.float64 and e.tolist() == [0.0, 1.0, 2.0]


def test_eye():
    e = minidl.eye(3)
    assert e.dtype == minidl.float32
    np.testing.assert_array_equal(e.numpy(), np.eye(3))
    assert minidl.eye(2, dtype=minidl.float64).dtype == minidl.float64


def test_zeros_like_and_ones_like_keep_shape_and_dtype():
    i = minidl.tensor([[1, 2, 3]])
    z = minidl.zeros_like(i)
    assert z.shape == (1, 3) and z.dtype == minidl.int64 and z.tolist() == [[0, 0, 0]]
    f = minidl.tensor(np.ones((2, 2)))  # float64
    o = minidl.ones_like(f)
    assert o.dtype == minidl.float64 and o.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert minidl.zeros_like(i, dtype=minidl.float32).dtype == minidl.float32
    zg = minidl.zeros_like(f, requires_grad=True)
    assert zg.requires_grad and not f.requires_grad


def test_randn_rand_reproducible_with_manual_seed():
    minidl.manual_seed(123)
    a, u = minidl.randn(3, 4), minidl.rand(5)
    minidl.manual_seed(123)
    b, v = minidl.randn(3, 4), minidl.rand(5)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(u.numpy(), v.numpy())
    c = minidl.randn(3, 4)  # the stream moves on
    assert not np.array_equal(a.numpy(), c.numpy())
    minidl.manual_seed(124)
    assert not np.array_equal(a.numpy(), minidl.randn(3, 4).numpy())
    assert a.shape == (3, 4) and a.dtype == minidl.float32
    assert minidl.randn(2, dtype=minidl.float64).dtype == minidl.float64
    assert minidl.randn((2, 2), requires_grad=True).requires_grad


def test_randn_and_rand_distributions():
    minidl.manual_seed(0)
    n = minidl.randn(20000).numpy()
    assert abs(n.mean()) < 0.05 and abs(n.std() - 1) < 0.05
    u = minidl.rand(20000).numpy()
    assert u.min() >= 0.0 and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.02


def test_randint_and_randperm():
    minidl.manual_seed(7)
    r = minidl.randint(3, 9, (1000,))
    assert r.dtype == minidl.int64 and r.shape == (1000,)
    assert r.numpy().min() == 3 and r.numpy().max() == 8  # high is exclusive, every value reached
    minidl.manual_seed(7)
    np.testing.assert_array_equal(minidl.randint(3, 9, (1000,)).numpy(), r.numpy())
    r2 = minidl.randint(4, size=(2, 5))
    assert r2.shape == (2, 5) and 0 <= r2.numpy().min() and r2.numpy().max() < 4

    p = minidl.randperm(50)
    assert p.dtype == minidl.int64
    assert sorted(p.tolist()) == list(range(50))
    assert p.tolist() != list(range(50))
    minidl.manual_seed(1)
    p1 = minidl.randperm(20).tolist()
    minidl.manual_seed(1)
    assert minidl.randperm(20).tolist() == p1


# ---------------------------------------------------------------- operators

def test_binary_operators_with_tensors():
    a = minidl.tensor([1.0, 2.0, 4.0])
    b = minidl.tensor([2.0, 2.0, 2.0])
    np.testing.assert_allclose((a + b).numpy(), [3, 4, 6])
    np.testing.assert_allclose((a - b).numpy(), [-1, 0, 2])
    np.testing.assert_allclose((a * b).numpy(), [2, 4, 8])
    np.testing.assert_allclose((a / b).numpy(), [0.5, 1, 2])
    np.testing.assert_allclose((a ** b).numpy(), [1, 4, 16])
    np.testing.assert_allclose((-a).numpy(), [-1, -2, -4])
    np.testing.assert_allclose(abs(-a).numpy(), [1, 2, 4])
    m = minidl.tensor([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose((m @ m).numpy(), [[7, 10], [15, 22]])


def test_reflected_operators_with_python_scalars():
    t = minidl.tensor([1.0, 2.0, 4.0])
    cases = {
        "radd": (10 + t, [11, 12, 14]),
        "rsub": (10 - t, [9, 8, 6]),
        "rmul": (3 * t, [3, 6, 12]),
        "rtruediv": (8 / t, [8, 4, 2]),
        "rpow": (2 ** t, [2, 4, 16]),
        "add": (t + 0.5, [1.5, 2.5, 4.5]),
        "sub": (t - 1, [0, 1, 3]),
        "div": (t / 2, [0.5, 1, 2]),
        "pow": (t ** 2, [1, 4, 16]),
    }
    for name, (result, expected) in cases.items():
        assert isinstance(result, Tensor), name
        assert result.dtype == minidl.float32, name  # a Python number takes the tensor's dtype
        np.testing.assert_allclose(result.numpy(), expected, err_msg=name)


def test_python_scalar_keeps_float64():
    t = minidl.tensor(np.array([1.0, 2.0]))
    assert (t * 2.5).dtype == minidl.float64
    assert (2.5 - t).dtype == minidl.float64


def test_numpy_array_on_the_left_gives_a_tensor():
    t = minidl.tensor([1.0, 2.0, 3.0])
    for name, result, expected in [
        ("mul", np.ones(3) * t, [1, 2, 3]),
        ("add", np.full(3, 2.0) + t, [3, 4, 5]),
        ("sub", np.full(3, 10.0) - t, [9, 8, 7]),
        ("div", np.full(3, 6.0) / t, [6, 3, 2]),
        ("scalar", np.float64(2.0) * t, [2, 4, 6]),
    ]:
        assert isinstance(result, Tensor), name
        np.testing.assert_allclose(result.numpy(), expected, err_msg=name)
    m = np.ones((2, 3)) @ minidl.ones(3, 2)
    assert isinstance(m, Tensor) and m.shape == (2, 2)
    np.testing.assert_allclose(m.numpy(), np.full((2, 2), 3.0))


def test_numpy_array_on_the_left_is_differentiable():
    t = minidl.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (np.array([1.0, 2.0, 3.0]) * t).sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), [1, 2, 3])


def test_int_tensor_with_float_scalar_gives_float32():
    i = minidl.tensor([1, 2, 3])
    r = i * 1.5
    assert r.dtype == minidl.float32
    np.testing.assert_allclose(r.numpy(), [1.5, 3.0, 4.5])
    assert (0.5 + i).dtype == minidl.float32
    assert (i * 2).dtype == minidl.int64 and (i * 2).tolist() == [2, 4, 6]  # int stays int


def test_int_tensor_true_division_gives_float32():
    # torch: torch.tensor([1, 2]) / 2 is float32 (the default dtype), not float64
    r = minidl.tensor([1, 2]) / 2
    assert r.dtype == minidl.float32
    np.testing.assert_allclose(r.numpy(), [0.5, 1.0])


def test_broadcasting_in_operators():
    a = minidl.tensor([[1.0], [2.0], [3.0]])  # (3, 1)
    b = minidl.tensor([10.0, 20.0])           # (2,)
    c = a + b
    assert c.shape == (3, 2)
    np.testing.assert_allclose(c.numpy(), [[11, 21], [12, 22], [13, 23]])


def test_in_place_operators_keep_the_object():
    t = minidl.tensor([1.0, 2.0])
    same = t
    t += 1
    t *= 3
    t -= 1
    t /= 2
    assert t is same
    np.testing.assert_allclose(t.numpy(), [2.5, 4.0])
    assert t.version == 4


def test_setitem_writes_in_place():
    t = minidl.zeros(2, 3)
    t[0, 1] = 5.0
    t[1] = minidl.tensor([1.0, 2.0, 3.0])
    t[t > 2.5] = -1.0
    np.testing.assert_allclose(t.numpy(), [[0, -1, 0], [1, 2, -1]])
    assert t.version == 3


# ---------------------------------------------------------------- repr

def test_repr_shows_values_and_autograd_state():
    r = repr(minidl.tensor([1.5, -2.25]))
    assert r.startswith("tensor(") and "1.5" in r and "-2.25" in r
    assert "requires_grad" not in r and "grad_fn" not in r
    x = minidl.tensor([1.5, 2.0], requires_grad=True)
    assert "requires_grad=True" in repr(x)
    y = x * 2
    assert "grad_fn=<Mul" in repr(y)
    assert "3." in repr(y)
    assert "dtype=float64" in repr(minidl.tensor(np.array([1.0])))
    assert "7" in repr(minidl.tensor([7]))


# ---------------------------------------------------------------- max / argmax

def test_max_with_dim_returns_values_and_indices_like_torch():
    x = minidl.tensor([[1.0, 5.0, 3.0], [7.0, 2.0, 0.0]])
    out = x.max(1)
    assert out.values.tolist() == [5.0, 7.0]
    assert out.indices.tolist() == [1, 0]
    assert out.indices.dtype == minidl.int64
    values, indices = x.max(dim=0)  # unpacks like a tuple
    assert values.tolist() == [7.0, 5.0, 3.0] and indices.tolist() == [1, 0, 0]
    kept = x.max(1, keepdim=True)
    assert kept.values.shape == (2, 1) and kept.indices.shape == (2, 1)
    low = x.min(1)
    assert low.values.tolist() == [1.0, 0.0] and low.indices.tolist() == [0, 2]


def test_max_without_dim_is_a_single_value():
    x = minidl.tensor([[1.0, 5.0, 3.0], [7.0, 2.0, 0.0]])
    m = x.max()
    assert isinstance(m, Tensor) and m.shape == () and m.item() == 7.0
    assert x.min().item() == 0.0


def test_argmax():
    x = minidl.tensor([[1.0, 5.0, 3.0], [7.0, 2.0, 0.0]])
    a = x.argmax()
    assert a.dtype == minidl.int64 and a.item() == 3  # index into the flattened tensor
    assert x.argmax(1).tolist() == [1, 0]
    assert x.argmax(dim=0).tolist() == [1, 0, 0]
    assert x.argmax(1, keepdim=True).shape == (2, 1)
    assert minidl.argmax(x, 1).tolist() == [1, 0]
    assert x.argmin(1).tolist() == [0, 2]


# ---------------------------------------------------------------- indexing (forward)

@pytest.fixture
def grid():
    return np.arange(12, dtype=np.float32).reshape(3, 4)


@pytest.mark.parametrize("name, index", [
    ("int", 1),
    ("negative int", -1),
    ("two ints", (2, 3)),
    ("slice", slice(1, 3)),
    ("step slice", (slice(None), slice(None, None, 2))),
    ("None", None),
    ("None inside", (slice(None), None, 1)),
    ("ellipsis", (Ellipsis, 0)),
    ("int list", [0, 2, 2]),
    ("int array", np.array([2, 0])),
    ("2-d int array", np.array([[0, 1], [2, 0]])),
    ("paired arrays", ([0, 1, 2], [3, 2, 1])),
    ("bool mask rows", np.array([True, False, True])),
    ("bool mask all", np.arange(12).reshape(3, 4) % 5 == 0),
    ("mixed", (np.array([0, 2]), slice(1, 3))),
])
def test_getitem_matches_numpy(grid, name, index):
    out = minidl.tensor(grid)[index]
    expected = grid[index]
    assert isinstance(out, Tensor)
    assert out.shape == expected.shape, name
    np.testing.assert_array_equal(out.numpy(), expected)


def test_getitem_with_tensor_indices(grid):
    t = minidl.tensor(grid)
    np.testing.assert_array_equal(t[minidl.tensor([2, 0])].numpy(), grid[[2, 0]])
    np.testing.assert_array_equal(t[minidl.tensor([[0, 1], [2, 2]])].numpy(), grid[[[0, 1], [2, 2]]])
    np.testing.assert_array_equal(t[minidl.tensor(1)].numpy(), grid[1])            # 0-d int tensor
    np.testing.assert_array_equal(t[minidl.tensor(1), 2].numpy(), grid[1, 2])
    np.testing.assert_array_equal(t[:, minidl.tensor([3, 0])].numpy(), grid[:, [3, 0]])
    mask = t > 6.5
    assert mask.dtype == minidl.bool_
    np.testing.assert_array_equal(t[mask].numpy(), grid[grid > 6.5])
    np.testing.assert_array_equal(t[minidl.tensor([True, False, True])].numpy(), grid[[0, 2]])


def test_getitem_single_element_is_0d_tensor(grid):
    e = minidl.tensor(grid)[1, 2]
    assert isinstance(e, Tensor) and e.shape == () and e.item() == 6.0


def test_getitem_slice_is_a_view_of_the_same_memory(grid):
    t = minidl.tensor(grid)
    row = t[1]
    row.fill_(-1.0)
    assert t.tolist()[1] == [-1.0] * 4
    assert t.version == row.version == 1  # they share the version counter


# ---------------------------------------------------------------- dtype conversion

def test_to_dtype_and_shortcuts():
    x = minidl.tensor([1.7, -1.7, 2.0])
    d = x.to(minidl.float64)
    assert d.dtype == minidl.float64
    np.testing.assert_allclose(d.numpy(), np.array([1.7, -1.7, 2.0], dtype=np.float32))
    assert x.double().dtype == minidl.float64
    assert d.float().dtype == minidl.float32
    assert x.float() is x  # already float32: no copy, like torch
    as_long = x.long()
    assert as_long.dtype == minidl.int64 and as_long.tolist() == [1, -1, 2]  # truncates toward zero
    assert (x > 0).float().tolist() == [1.0, 0.0, 1.0]
    assert minidl.tensor([0, 3]).bool().tolist() == [False, True]


def test_to_dtype_makes_a_copy():
    x = minidl.tensor([1.0, 2.0])
    d = x.double()
    d.add_(1)
    assert x.tolist() == [1.0, 2.0]


def test_to_dtype_is_differentiable():
    x = minidl.tensor([1.0, 2.0], requires_grad=True)
    y = x.double() * minidl.tensor(np.array([3.0, 4.0]))
    assert y.dtype == minidl.float64 and y.requires_grad
    y.sum().backward()
    assert x.grad.dtype == minidl.float32  # the gradient has its tensor's dtype
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 4.0])


def test_long_of_a_grad_tensor_does_not_require_grad():
    x = minidl.tensor([1.5, 2.5], requires_grad=True)
    i = x.long()
    assert i.dtype == minidl.int64 and not i.requires_grad


# ---------------------------------------------------------------- detach, clone

def test_detach_shares_memory_and_leaves_the_graph():
    x = minidl.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 2
    d = y.detach()
    assert not d.requires_grad and d.grad_fn is None and d.is_leaf
    d[0] = 100.0
    assert y.tolist()[0] == 100.0  # same memory
    dx = x.detach()
    dx.add_(1)  # allowed: the detached tensor does not require grad
    assert x.tolist() == [2.0, 3.0, 4.0]
    assert x.version == 1  # shares the version counter with x


def test_clone_copies_and_is_differentiable():
    x = minidl.tensor([1.0, 2.0, 3.0])
    c = x.clone()
    c[0] = 100.0
    assert x.tolist() == [1.0, 2.0, 3.0]
    assert c.tolist() == [100.0, 2.0, 3.0]
    w = minidl.tensor([1.0, 2.0], requires_grad=True)
    wc = w.clone()
    assert wc.requires_grad and wc.grad_fn is not None
    (wc * 3).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), [3.0, 3.0])


def test_requires_grad_flag_and_is_leaf():
    x = minidl.tensor([1.0])
    assert not x.requires_grad and x.is_leaf and x.grad is None and x.grad_fn is None
    assert x.requires_grad_() is x and x.requires_grad
    y = x * 2
    assert y.requires_grad and not y.is_leaf
    x.requires_grad_(False)
    assert not (x * 2).requires_grad
