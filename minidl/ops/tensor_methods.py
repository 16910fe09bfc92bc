"""Tensor's methods that compute: ``x + y``, ``x.exp()``, ``x.sum(1)``, ``x[0]``, ``x.to("cpu")``.

tensor.py says what a tensor holds; the ops import it to make tensors, so it cannot import
them. The methods that call an op are therefore attached to Tensor here, once every op
exists: each is one call into an op, and each op's math and derivative are stated once, in
its Function's docstring (``x.exp()`` is ``elementwise.exp(x)``, whose derivative is in ``Exp``).
"""
import inspect

import numpy as np

from ..tensor import Tensor, _shape_args, bool_, float32, float64, int64
from . import elementwise, matmul, reduce, shape


class TensorMethods:
    """Tensor's methods that run an op; each is copied onto Tensor (below), so ``x.exp()`` is ``exp(x)``."""

    # ---------------------------------------------------------------- ops whose helper takes the method's arguments
    # x.exp() is elementwise.exp(x), x.sum(1, keepdim=True) is reduce.sum(x, 1, keepdim=True): the helper is the method.
    exp, log, sqrt, abs = elementwise.exp, elementwise.log, elementwise.sqrt, elementwise.abs
    tanh, sigmoid, relu, clamp = elementwise.tanh, elementwise.sigmoid, elementwise.relu, elementwise.clamp
    clip = clamp
    clone = elementwise.clone
    softmax, log_softmax, logsumexp = reduce.softmax, reduce.log_softmax, reduce.logsumexp
    sum, mean, var = reduce.sum, reduce.mean, reduce.var
    max, min, amax, amin = reduce.max, reduce.min, reduce.amax, reduce.amin
    argmax, argmin = reduce.argmax, reduce.argmin
    transpose, squeeze, unsqueeze, flatten = shape.transpose, shape.squeeze, shape.unsqueeze, shape.flatten
    split, chunk, gather = shape.split, shape.chunk, shape.gather

    # ---------------------------------------------------------------- dtypes and devices
    def to(self, target):
        """``x.to("cpu")`` moves it to a device (shape.to_device), ``x.to(minidl.float64)`` changes its dtype
        (elementwise.cast); both differentiable."""
        if isinstance(target, str):
            return self if target == self.device else shape.to_device(self, target)
        dtype = np.dtype(target)
        return self if dtype == self.dtype else elementwise.cast(self, dtype)

    def float(self):
        """A float32 copy (differentiable), or self if already float32."""
        return self.to(float32)

    def double(self):
        """A float64 copy (differentiable), or self if already float64."""
        return self.to(float64)

    def long(self):
        """An int64 copy, cut from the graph (integers carry no gradient)."""
        return self.to(int64)

    def bool(self):
        """A bool copy: True where the value is nonzero; not differentiable."""
        return self.to(bool_)

    def cpu(self):
        """The same values on the "cpu" device (self if already there); the gradient flows back."""
        return self.to("cpu")

    # ---------------------------------------------------------------- arithmetic
    # The operators, their reflections (2 * x calls x.__rmul__(2)) and the named methods.
    def __add__(self, other):
        return elementwise.add(self, other)

    def __radd__(self, other):
        return elementwise.add(other, self)

    def __sub__(self, other):
        return elementwise.sub(self, other)

    def __rsub__(self, other):
        return elementwise.sub(other, self)

    def __mul__(self, other):
        return elementwise.mul(self, other)

    def __rmul__(self, other):
        return elementwise.mul(other, self)

    def __truediv__(self, other):
        return elementwise.div(self, other)

    def __rtruediv__(self, other):
        return elementwise.div(other, self)

    def __pow__(self, other):
        return elementwise.pow(self, other)

    def __rpow__(self, other):
        return elementwise.pow(other, self)

    def __neg__(self):
        return elementwise.neg(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return elementwise.abs(self)

    def __matmul__(self, other):
        return matmul.matmul(self, other)

    def __rmatmul__(self, other):
        return matmul.matmul(other, self)

    def add(self, other):
        """self + other, broadcasting (elementwise.add)."""
        return elementwise.add(self, other)

    def sub(self, other):
        """self - other, broadcasting (elementwise.sub)."""
        return elementwise.sub(self, other)

    def mul(self, other):
        """self * other elementwise, broadcasting (elementwise.mul)."""
        return elementwise.mul(self, other)

    def div(self, other):
        """self / other elementwise, true division (elementwise.div)."""
        return elementwise.div(self, other)

    def pow(self, exponent):
        """self ** exponent elementwise (elementwise.pow)."""
        return elementwise.pow(self, exponent)

    def neg(self):
        """-self (elementwise.neg)."""
        return elementwise.neg(self)

    def matmul(self, other):
        """self @ other: matrix product over the last two axes, batched over the leading ones (matmul.matmul)."""
        return matmul.matmul(self, other)

    def maximum(self, other):
        """max(self, other) elementwise, broadcasting (elementwise.maximum)."""
        return elementwise.maximum(self, other)

    def minimum(self, other):
        """min(self, other) elementwise, broadcasting (elementwise.minimum)."""
        return elementwise.minimum(self, other)

    # ---------------------------------------------------------------- comparisons: bool tensors, not differentiable
    def __eq__(self, other):
        return elementwise.compare("equal", self, other)

    def __ne__(self, other):
        return elementwise.compare("not_equal", self, other)

    def __lt__(self, other):
        return elementwise.compare("less", self, other)

    def __le__(self, other):
        return elementwise.compare("less_equal", self, other)

    def __gt__(self, other):
        return elementwise.compare("greater", self, other)

    def __ge__(self, other):
        return elementwise.compare("greater_equal", self, other)

    def __and__(self, other):
        return elementwise.compare("logical_and", self, other)

    def __or__(self, other):
        return elementwise.compare("logical_or", self, other)

    def __invert__(self):
        return Tensor._make(self.backend.logical_not(self.data), self.device)

    # ---------------------------------------------------------------- reductions
    def std(self, dim=None, keepdim=False, correction=1):
        """sqrt(var(dim, correction)): the standard deviation, unbiased by default (reduce.var, then sqrt)."""
        return reduce.var(self, dim, keepdim, correction).sqrt()

    def any(self):
        """True if any value is nonzero (a Python bool)."""
        return bool(self.numpy().any())

    def all(self):
        """True if every value is nonzero (a Python bool)."""
        return bool(self.numpy().all())

    # ---------------------------------------------------------------- shape
    # x.reshape(2, 3) and x.reshape((2, 3)) alike.
    def reshape(self, *sizes):
        """The same values in a new shape, one size may be -1 (shape.reshape); view is the same method."""
        return shape.reshape(self, _shape_args(sizes))

    view = reshape

    def permute(self, *dims):
        """Reorder the axes: result axis i is input axis dims[i] (shape.permute)."""
        return shape.permute(self, _shape_args(dims))

    @property
    def T(self):
        return shape.permute(self, tuple(reversed(range(self.ndim))))

    def expand(self, *sizes):
        """Broadcast size-1 axes to ``sizes`` without copying, -1 keeping a size (shape.expand)."""
        return shape.expand(self, _shape_args(sizes))

    def expand_as(self, other):
        """expand to ``other.shape``."""
        return shape.expand(self, other.shape)

    def __getitem__(self, index):
        return shape.getitem(self, index)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


# Copy every method (and the property T) onto Tensor. Defining __eq__ set TensorMethods.__hash__
# to None; that is not a function, so it is not copied: tensors stay hashable by identity.
for _name, _method in vars(TensorMethods).items():
    if inspect.isfunction(_method) or isinstance(_method, property):
        setattr(Tensor, _name, _method)
