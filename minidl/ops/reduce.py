"""Reductions (sum, mean, var, max, min, argmax) and the softmax family.

A reduction's backward sends each output's gradient back to the inputs it was
computed from: to all of them for a sum, to the winner for a max.
"""
from collections import namedtuple

from ..autograd import Function
from ..tensor import Tensor, is_float
from .shape import gather, normalize_dims

# This module defines sum, max and min: Python's builtins of those names are not used here.

ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])  # what x.max(dim) returns, as in PyTorch


def _keep(be, grad, axes, keepdims):
    """Put the reduced axes back (as size 1) so grad broadcasts against the input."""
    if keepdims or not axes:
        return grad
    shape = list(grad.shape)
    for a in axes:
        shape.insert(a, 1)
    return be.reshape(grad, tuple(shape))


class Sum(Function):
    """y = sum of x over axes;  dy/dx = 1 for every summed element."""
    @staticmethod
    def forward(ctx, x, axes, keepdims):
        ctx.axes, ctx.keepdims, ctx.shape = axes, keepdims, x.shape
        return ctx.backend.sum(x, axis=axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, grad):
        be = ctx.backend
        return be.broadcast_to(_keep(be, grad, ctx.axes, ctx.keepdims), ctx.shape)


class Mean(Function):
    """y = (sum of x over axes) / n, n the number of values averaged;  dy/dx = 1/n for each of them."""
    @staticmethod
    def forward(ctx, x, axes, keepdims, count):
        ctx.axes, ctx.keepdims, ctx.shape, ctx.count = axes, keepdims, x.shape, count
        return ctx.backend.div(ctx.backend.sum(x, axis=axes, keepdims=keepdims), count)

    @staticmethod
    def backward(ctx, grad):
        be = ctx.backend
        return be.broadcast_to(be.div(_keep(be, grad, ctx.axes, ctx.keepdims), ctx.count), ctx.shape)


class Extreme(Function):
    """y = max (or min) of x over axes;  the gradient goes to the elements equal to y,
    split evenly on ties (PyTorch's amax/amin rule)."""
    @staticmethod
    def forward(ctx, x, axes, keepdims, kernel):
        y = getattr(ctx.backend, kernel)(x, axis=axes, keepdims=True)
        ctx.save_for_backward(x, y)
        ctx.axes, ctx.keepdims = axes, keepdims
        return y if keepdims else ctx.backend.reshape(y, tuple(n for i, n in enumerate(x.shape) if i not in axes))

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_arrays
        be = ctx.backend
        winners = be.astype(be.equal(x, y), x.dtype)
        share = be.div(winners, be.sum(winners, axis=ctx.axes, keepdims=True))
        return be.mul(_keep(be, grad, ctx.axes, ctx.keepdims), share)


def sum(x, dim=None, keepdim=False):
    """sum of x over ``dim`` (an int, a tuple, or None for all axes; bools count their Trues); derivative in ``Sum``."""
    axes = normalize_dims("sum", dim, x.ndim)
    if x.dtype.kind == "b":
        x = x.long()  # counting Trues
    return Sum.apply(x, axes=axes, keepdims=keepdim)


def mean(x, dim=None, keepdim=False):
    """(sum of x over ``dim``) / n, n the number of values averaged (float tensors only); derivative in ``Mean``."""
    axes = normalize_dims("mean", dim, x.ndim)
    if not is_float(x.dtype):
        raise TypeError(f"mean/var: need a float tensor, got {x.dtype}; convert with x.float()")
    count = 1
    for a in axes:
        count *= x.shape[a]
    return Mean.apply(x, axes=axes, keepdims=keepdim, count=count)


def var(x, dim=None, keepdim=False, correction=1):
    """sum (x - mean)^2 / (n - correction) over ``dim``: unbiased (correction=1) by default. Made of mean,
    sub, mul and sum, so its derivative is theirs."""
    axes = normalize_dims("var", dim, x.ndim)
    count = 1
    for a in axes:
        count *= x.shape[a]
    centered = x - mean(x, axes, keepdim=True)
    return (centered * centered).sum(axes, keepdim) / (count - correction)


def amax(x, dim=None, keepdim=False):
    """The largest value over ``dim`` (int, tuple or None); derivative in ``Extreme``."""
    return Extreme.apply(x, axes=normalize_dims("amax", dim, x.ndim), keepdims=keepdim, kernel="max")


def amin(x, dim=None, keepdim=False):
    """The smallest value over ``dim`` (int, tuple or None); derivative in ``Extreme``."""
    return Extreme.apply(x, axes=normalize_dims("amin", dim, x.ndim), keepdims=keepdim, kernel="min")


def max(x, dim=None, keepdim=False):
    """``x.max()`` is the largest value; ``x.max(dim)`` gives (values, indices) as in PyTorch.

    With a dim, the values are gathered at the indices, so the gradient goes to the
    returned index (the first one, on a tie), as in PyTorch.
    """
    if dim is None:
        return amax(x)
    if x.ndim == 0:
        return ValuesIndices(x.clone(), argmax(x))
    return _values_at(x, argmax(x, dim, keepdim=True), dim, keepdim)


def min(x, dim=None, keepdim=False):
    """``x.min()`` is the smallest value; ``x.min(dim)`` gives (values, indices), the gradient going to the index."""
    if dim is None:
        return amin(x)
    if x.ndim == 0:
        return ValuesIndices(x.clone(), argmin(x))
    return _values_at(x, argmin(x, dim, keepdim=True), dim, keepdim)


def _values_at(x, indices, dim, keepdim):
    values = gather(x, dim, indices)
    if not keepdim:
        values, indices = values.squeeze(dim), indices.squeeze(dim)
    return ValuesIndices(values, indices)


def _arg(kernel, x, dim, keepdim):
    if dim is None or x.ndim == 0:
        return Tensor._make(getattr(x.backend, kernel)(x.data.reshape(-1)), x.device)
    axis = _one_axis(kernel, x, dim)
    return Tensor._make(getattr(x.backend, kernel)(x.data, axis=axis, keepdims=keepdim), x.device)


def argmax(x, dim=None, keepdim=False):
    """Index of the largest value (of the flattened tensor when dim is None); int64."""
    return _arg("argmax", x, dim, keepdim)


def argmin(x, dim=None, keepdim=False):
    """Index of the smallest value (of the flattened tensor when dim is None); int64."""
    return _arg("argmin", x, dim, keepdim)


# ---------------------------------------------------------------- softmax family

class Softmax(Function):
    """y_i = e^x_i / sum_j e^x_j;  dL/dx = y * (g - sum(g * y))."""
    @staticmethod
    def forward(ctx, x, axis):
        y = ctx.backend.softmax(x, axis)
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_arrays
        be = ctx.backend
        dot = be.sum(be.mul(grad, y), axis=ctx.axis, keepdims=True)
        return be.mul(y, be.sub(grad, dot))


class LogSoftmax(Function):
    """y_i = x_i - log sum_j e^x_j;  dL/dx = g - softmax(x) * sum(g)."""
    @staticmethod
    def forward(ctx, x, axis):
        y = ctx.backend.log_softmax(x, axis)
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_arrays
        be = ctx.backend
        total = be.sum(grad, axis=ctx.axis, keepdims=True)
        return be.sub(grad, be.mul(be.exp(y), total))


class LogSumExp(Function):
    """y = log sum_i e^x_i;  dy/dx_i = e^(x_i - y) = softmax(x)_i."""
    @staticmethod
    def forward(ctx, x, axis, keepdims):
        y = ctx.backend.logsumexp(x, axis, keepdims=True)
        ctx.save_for_backward(x, y)
        ctx.axis, ctx.keepdims = axis, keepdims
        return y if keepdims else ctx.backend.reshape(y, tuple(n for i, n in enumerate(x.shape) if i != axis))

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_arrays
        be = ctx.backend
        return be.mul(_keep(be, grad, (ctx.axis,), ctx.keepdims), be.exp(be.sub(x, y)))


def _one_axis(op, x, dim):
    axes = normalize_dims(op, dim, x.ndim or 1)
    if len(axes) != 1:
        raise ValueError(f"{op}: takes one dim, got {dim}")
    return axes[0]


def _as_float(x):
    return x if is_float(x.dtype) else x.float()


def _on_0d(fn, x, *args):
    """Run a one-dim op on a 0-d tensor as on a 1-element vector (PyTorch accepts dim 0 / -1)."""
    return fn(x.reshape(1), *args).reshape(()) if x.ndim == 0 else fn(x, *args)


def softmax(x, dim):
    """e^x_i / sum_j e^x_j along ``dim`` (each slice sums to 1), computed stably; derivative in ``Softmax``."""
    _one_axis("softmax", x, dim)
    return _on_0d(lambda v: Softmax.apply(v, axis=_one_axis("softmax", v, dim)), _as_float(x))


def log_softmax(x, dim):
    """x_i - log sum_j e^x_j along ``dim``, computed stably (the max subtracted first); derivative in ``LogSoftmax``."""
    _one_axis("log_softmax", x, dim)
    return _on_0d(lambda v: LogSoftmax.apply(v, axis=_one_axis("log_softmax", v, dim)), _as_float(x))


def logsumexp(x, dim, keepdim=False):
    """log sum_i e^x_i along ``dim``, computed stably as m + log sum_i e^(x_i - m), m = max x; derivative in
    ``LogSumExp``."""
    _one_axis("logsumexp", x, dim)
    if x.ndim == 0:
        return _as_float(x).clone()
    return LogSumExp.apply(_as_float(x), axis=_one_axis("logsumexp", x, dim), keepdims=keepdim)
