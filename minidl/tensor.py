"""Tensor: an array, where it lives, and how it was made.

A Tensor holds
  * ``data``          the array itself (a numpy array on "cpu"), owned by a backend;
  * ``device``        which backend holds it and runs its kernels;
  * ``requires_grad`` whether gradients should flow back to it;
  * ``grad_fn``       the op (a Function in autograd.py) that produced it, or None for a leaf;
  * ``grad``          after ``backward()``, d(loss)/d(this tensor), for leaves.

This file says what a tensor *is*: its array, dtype, device and gradient, how it turns
into numbers and numpy arrays, how it changes in place, and how to make one. What a tensor
*computes* (``x + y``, ``x.exp()``, ``x.sum(dim=1)``, ``x[0]``, ``x.to("cpu")``) are the ops
of minidl/ops, which import this file to make tensors; so this file cannot import them, and
ops/tensor_methods.py, read after the ops, makes each op a method of Tensor.
"""
import numbers

import numpy as np

from . import autograd
from .backend import get_backend

float32, float64, int64, bool_ = np.dtype("float32"), np.dtype("float64"), np.dtype("int64"), np.dtype("bool")
DTYPES = (float32, float64, int64, bool_)
_default_float = float32


def set_default_dtype(dtype):
    """The dtype of tensors made from Python floats (float32 unless changed)."""
    global _default_float
    dtype = np.dtype(dtype)
    if dtype not in (float32, float64):
        raise ValueError(f"set_default_dtype: {dtype} is not a float dtype; use minidl.float32 or minidl.float64")
    _default_float = dtype


def get_default_dtype():
    """The dtype of tensors made from Python floats (float32 unless set_default_dtype changed it)."""
    return _default_float


def _infer_dtype(data, host):
    """Python floats become the default float dtype; numpy arrays keep theirs (if supported)."""
    kind = host.dtype.kind
    if kind == "b":
        return bool_
    if kind in "iu":
        return int64
    if kind == "f":
        from_numpy = isinstance(data, (np.ndarray, np.generic)) and host.dtype in (float32, float64)
        return host.dtype if from_numpy else _default_float
    raise TypeError(f"tensor: cannot make a tensor of {host.dtype} data; minidl supports {[str(d) for d in DTYPES]}")


def is_float(dtype):
    """True for float32 and float64, the dtypes that can carry gradients."""
    return dtype in (float32, float64)


class Tensor:
    """An n-d array on a device, plus what autograd needs: requires_grad, grad_fn (the op that made it), grad."""
    __array_ufunc__ = None  # numpy defers to Tensor's operators: np_array * tensor -> Tensor.__rmul__

    def __init__(self, data, dtype=None, device="cpu", requires_grad=False):
        if isinstance(data, Tensor):
            data = data.numpy()
        host = np.asarray(data)
        dtype = np.dtype(dtype) if dtype is not None else _infer_dtype(data, host)
        if dtype not in DTYPES:
            raise TypeError(f"tensor: dtype {dtype} is not supported; use one of {[str(d) for d in DTYPES]}")
        self._setup(get_backend(device).asarray(np.array(host, dtype=dtype)), device)
        self.requires_grad_(requires_grad)

    def _setup(self, data, device):
        self.data = data
        self.device = device
        self.grad = None
        self.grad_fn = None
        self.requires_grad = False
        self._retains_grad = False
        self._version_counter = autograd.VersionCounter()

    @classmethod
    def _make(cls, data, device, requires_grad=False):
        """Wrap an array a kernel returned (no copy).

        asarray turns the numpy *scalars* that ufuncs return for 0-d inputs back into
        (writable) 0-d arrays.
        """
        t = cls.__new__(cls)
        t._setup(get_backend(device).asarray(data), device)
        t.requires_grad = requires_grad
        return t

    # ---------------------------------------------------------------- what it is
    @property
    def shape(self):
        return self.data.shape  # a tuple (numpy's and CuPy's shapes are)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def backend(self):
        return get_backend(self.device)

    @property
    def is_leaf(self):
        return self.grad_fn is None

    @property
    def version(self):
        """How many times this tensor's array was changed in place."""
        return self._version_counter.value

    def size(self, dim=None):
        """The shape, or its length along ``dim``."""
        return self.shape if dim is None else self.shape[dim]

    def dim(self):
        """The number of axes (ndim)."""
        return self.ndim

    def numel(self):
        """The number of values: the product of the shape."""
        return self.data.size

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    # ---------------------------------------------------------------- conversions
    def numpy(self):
        """The values as a numpy array (shares memory on "cpu"; never part of the graph).

        For a tensor that requires grad the array is read-only: autograd may have saved these
        values for backward, and an edit it cannot see would give a silently wrong gradient
        (PyTorch refuses ``.numpy()`` there). ``t.detach().numpy()`` is writable: editing it is a
        choice made outside autograd, as editing the array given to ``from_numpy`` is."""
        array = self.backend.to_numpy(self.data)
        if self.requires_grad and array.flags.writeable and isinstance(self.data, np.ndarray):
            array = array.view()
            array.flags.writeable = False
        return array

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def item(self):
        """The single value of a one-element tensor as a Python number."""
        if self.numel() != 1:
            raise ValueError(f"item: the tensor has {self.numel()} values (shape {self.shape}); only one-value tensors convert to a number")
        return self.numpy().reshape(()).item()

    def tolist(self):
        """The values as nested Python lists (a number for a 0-d tensor)."""
        return self.numpy().tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.dtype.kind not in "iu":
            raise TypeError(f"only integer tensors can be used as an index, not {self.dtype}")
        return int(self.item())

    def __bool__(self):
        if self.numel() != 1:
            raise ValueError(f"the truth value of a tensor with {self.numel()} values is ambiguous; use .any() or .all()")
        return bool(self.item())

    # ---------------------------------------------------------------- autograd
    def requires_grad_(self, requires_grad=True):
        """Mark (or unmark) this tensor as one whose gradient backward should compute; float dtypes only."""
        if requires_grad and not is_float(self.dtype):
            raise RuntimeError(f"requires_grad: only float tensors can require grad, this one is {self.dtype}; "
                               f"use .float() first")
        self.requires_grad = bool(requires_grad)
        return self

    def backward(self, gradient=None, retain_graph=False):
        """Compute d(self)/d(leaf) for every leaf with requires_grad, into ``leaf.grad``."""
        autograd.backward(self, gradient, retain_graph)

    def retain_grad(self):
        """Keep ``.grad`` for this intermediate (non-leaf) tensor too."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad: this tensor does not require grad, so it will never get a .grad")
        self._retains_grad = True
        return self

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(self)`` in every backward, as soon as this leaf's ``.grad`` is final (PyTorch's name;
        autograd.py says when). Returns a handle whose ``remove()`` takes the hook off."""
        if self.grad_fn is not None:
            raise RuntimeError("register_post_accumulate_grad_hook: only a leaf tensor (a parameter) has a .grad "
                               "that backward accumulates; this one was computed by an op")
        return autograd.HookHandle(self.__dict__.setdefault("_post_accumulate_grad_hooks", []), hook)

    def _accumulate_grad(self, g):
        if self.grad is None:
            self.grad = Tensor._make(self.backend.copy(g), self.device)
        else:
            self.grad = Tensor._make(self.backend.add(self.grad.data, g), self.device)

    def detach(self):
        """The same values (and memory), cut from the graph."""
        t = Tensor._make(self.data, self.device)
        t._version_counter = self._version_counter
        return t

    # ---------------------------------------------------------------- in-place changes
    # They change the array under every op that saved it, so they are refused while
    # a graph is being recorded through this tensor, and they bump the version
    # counter so a saved copy that went stale is caught at backward.
    def _inplace(self, name, fn, *args):
        if self.requires_grad and autograd.is_grad_enabled():
            raise RuntimeError(
                f"{name}: in-place change of a tensor that requires grad would corrupt the graph. "
                f"Use an out-of-place op (x = x + y), or wrap a parameter update in `with minidl.no_grad():`")
        args = [a.data if isinstance(a, Tensor) else a for a in args]
        fn(*args)
        self._version_counter.value += 1
        return self

    def __setitem__(self, index, value):
        if isinstance(value, Tensor) and value.requires_grad and autograd.is_grad_enabled():
            raise RuntimeError("__setitem__: the value requires grad, and assigning it into another tensor "
                               "would drop its graph; build the result out of place instead (minidl.cat, "
                               "minidl.stack or minidl.where)")

        def assign(v):
            self.data[_raw_index(index)] = v
        self._inplace("__setitem__", assign, value)

    def copy_(self, src):
        """Overwrite the values in place with ``src`` (broadcast); refused while recording a graph through self."""
        return self._inplace("copy_", lambda s: self.data.__setitem__(..., s), src)

    def fill_(self, value):
        """Set every value to ``value``, in place."""
        return self._inplace("fill_", lambda v: self.data.__setitem__(..., v), value)

    def zero_(self):
        """Set every value to 0, in place."""
        return self.fill_(0)

    def add_(self, other, alpha=1):
        """self += alpha * other, in place (alpha defaults to 1)."""
        return self._inplace("add_", lambda o: self.data.__iadd__(o * alpha if alpha != 1 else o), other)

    def sub_(self, other):
        """self -= other, in place."""
        return self._inplace("sub_", self.data.__isub__, other)

    def mul_(self, other):
        """self *= other, in place."""
        return self._inplace("mul_", self.data.__imul__, other)

    def div_(self, other):
        """self /= other, in place."""
        return self._inplace("div_", self.data.__itruediv__, other)

    __iadd__, __isub__, __imul__, __itruediv__ = add_, sub_, mul_, div_

    __hash__ = object.__hash__  # tensors are keyed by identity (== is elementwise: ops/tensor_methods.py)

    # ---------------------------------------------------------------- printing
    def __repr__(self):
        body = np.array2string(self.numpy(), separator=", ", precision=4, prefix="tensor(")
        extras = []
        if self.device != "cpu":
            extras.append(f"device={self.device!r}")
        if self.dtype not in (_default_float, int64, bool_) or self.numel() == 0:
            extras.append(f"dtype={self.dtype}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{self.grad_fn.name}>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([body] + extras) + ")"


autograd.register_tensor_class(Tensor)  # Function.apply wraps each op's result in a Tensor


def _shape_args(args):
    """Accept both x.reshape(2, 3) and x.reshape((2, 3))."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(args[0])
    return tuple(args)


def _raw_index(index):
    """An index with Tensors replaced by their arrays."""
    if isinstance(index, tuple):
        return tuple(_raw_index(i) for i in index)
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, list) and any(isinstance(i, Tensor) for i in index):
        return [_raw_index(i) for i in index]
    return index


def is_scalar(x):
    """True for a Python or numpy number (not a tensor or array)."""
    return isinstance(x, (numbers.Number, np.generic))


# ---------------------------------------------------------------- making tensors

def tensor(data, dtype=None, device="cpu", requires_grad=False):
    """A new tensor holding a copy of ``data`` (a number, nested lists, a numpy array)."""
    return Tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)


def from_numpy(array):
    """A tensor sharing memory with a numpy array (changes to one show in the other)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy array, got {type(array).__name__}")
    if array.dtype not in DTYPES:
        raise TypeError(f"from_numpy: dtype {array.dtype} is not supported; use {[str(d) for d in DTYPES]} "
                        f"(e.g. array.astype(np.float32))")
    return Tensor._make(array, "cpu")


def _filled(fill, shape, dtype, device, requires_grad):
    dtype = np.dtype(dtype) if dtype is not None else _default_float
    return Tensor._make(fill(get_backend(device), _shape_args(shape), dtype), device).requires_grad_(requires_grad)


def zeros(*shape, dtype=None, device="cpu", requires_grad=False):
    """A tensor of ``shape`` filled with 0 (the default float dtype unless ``dtype`` is given)."""
    return _filled(lambda b, s, d: b.zeros(s, d), shape, dtype, device, requires_grad)


def ones(*shape, dtype=None, device="cpu", requires_grad=False):
    """A tensor of ``shape`` filled with 1 (the default float dtype unless ``dtype`` is given)."""
    return _filled(lambda b, s, d: b.ones(s, d), shape, dtype, device, requires_grad)


def full(shape, fill_value, dtype=None, device="cpu", requires_grad=False):
    """A tensor of ``shape`` filled with one value; its dtype follows the value (bool, int64, float)."""
    if dtype is None:
        dtype = _infer_dtype(fill_value, np.asarray(fill_value))
    return _filled(lambda b, s, d: b.full(s, fill_value, d), shape, dtype, device, requires_grad)


def zeros_like(t, dtype=None, requires_grad=False):
    """zeros with ``t``'s shape, device and (unless given) dtype."""
    return zeros(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    """ones with ``t``'s shape, device and (unless given) dtype."""
    return ones(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)


def arange(start, stop=None, step=1, dtype=None, device="cpu", requires_grad=False):
    """start, start + step, ... up to (not including) stop; int64 if all three are ints, else the default float."""
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        dtype = int64 if all(isinstance(v, numbers.Integral) for v in (start, stop, step)) else _default_float
    return Tensor._make(get_backend(device).arange(start, stop, step, np.dtype(dtype)), device).requires_grad_(requires_grad)


def eye(n, dtype=None, device="cpu"):
    """The n x n identity matrix."""
    return tensor(np.eye(n), dtype=dtype or _default_float, device=device)

