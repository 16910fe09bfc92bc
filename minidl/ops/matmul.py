"""Matrix multiplication: the op that most of deep learning's FLOPs go through."""
from ..autograd import Function
from ..tensor import Tensor
from .elementwise import as_tensors, broadcast_shape


class MatMul(Function):
    """C = A @ B over the last two axes (batch axes broadcast);
    dL/dA = G @ B^T,  dL/dB = A^T @ G."""
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.backend.matmul(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_arrays
        be = ctx.backend
        da = be.matmul(grad, swap_last(be, b)) if ctx.needs_input_grad[0] else None
        db = be.matmul(swap_last(be, a), grad) if ctx.needs_input_grad[1] else None
        return da, db


def swap_last(be, x):
    """x with its last two axes swapped (a batched transpose), with backend ``be``."""
    axes = list(range(x.ndim))
    axes[-1], axes[-2] = axes[-2], axes[-1]
    return be.transpose(x, tuple(axes))


def matmul(a, b):
    """PyTorch's matmul: 1-D operands become a row (left) or a column (right) and lose that dim again;
    derivative in ``MatMul``."""
    a, b = as_tensors("matmul", a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: needs tensors with at least 1 dim, got shapes {a.shape} and {b.shape}; "
                         f"use * to multiply by a scalar")
    a2 = a.unsqueeze(0) if a.ndim == 1 else a
    b2 = b.unsqueeze(-1) if b.ndim == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(f"matmul: cannot multiply {a.shape} by {b.shape}: the first's last dim "
                         f"({a2.shape[-1]}) must equal the second's {'only' if b.ndim == 1 else 'second-to-last'} "
                         f"dim ({b2.shape[-2]}). Transposing one of them (.T) may be what you meant")
    broadcast_shape("matmul (batch dims)", a2.shape[:-2], b2.shape[:-2])
    out = MatMul.apply(a2, b2)
    if a.ndim == 1:
        out = out.squeeze(-2)
    if b.ndim == 1:
        out = out.squeeze(-1)
    return out


class Linear(Function):
    """y = x @ W^T + b, x (..., in), W (out, in), b (out,) or absent;
    dL/dx = G @ W,  dL/dW = G^T @ x and dL/db = sum of G, both over every row of x.

    The same math as ``matmul(x, weight.T) + bias``, as one op instead of three
    (transpose, matmul, add), to pay one op's Python overhead where a Linear layer would pay
    three (why that matters: benchmarks/NOTES.md). W^T and G^T are transposed views; the
    matmul kernel reads them in place.
    """
    @staticmethod
    def forward(ctx, x, weight, bias=None):
        be = ctx.backend
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        y = be.matmul(x, be.transpose(weight, (1, 0)))
        return y if bias is None else be.add(y, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_arrays
        be = ctx.backend
        g2 = be.reshape(grad, (-1, grad.shape[-1]))                   # every row of the batch: (rows, out)
        dx = be.matmul(grad, weight) if ctx.needs_input_grad[0] else None
        dw = None
        if ctx.needs_input_grad[1]:
            dw = be.matmul(be.transpose(g2, (1, 0)), be.reshape(x, (-1, x.shape[-1])))
        if not ctx.has_bias:
            return dx, dw
        return dx, dw, be.sum(g2, axis=0) if ctx.needs_input_grad[2] else None


def linear(x, weight, bias=None):
    """y = x @ W^T + b, PyTorch's layout: weight is (out_features, in_features); derivative in ``Linear``."""
    if not isinstance(x, Tensor) or x.ndim == 0 or x.shape[-1] != weight.shape[-1]:
        raise ValueError(f"linear: input {getattr(x, 'shape', x)} does not fit weight {weight.shape}: "
                         f"the input's last dim must be in_features={weight.shape[-1]}")
    if weight.ndim != 2 or (bias is not None and bias.shape != weight.shape[:1]) or x.dtype != weight.dtype:
        y = matmul(x, weight.T)  # the general path and its errors (a 1-D weight, mixed dtypes, ...)
        return y if bias is None else y + bias
    return Linear.apply(x, weight) if bias is None else Linear.apply(x, weight, bias)
