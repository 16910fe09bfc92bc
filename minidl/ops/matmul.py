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
    axes = list(range(x.ndim))
    axes[-1], axes[-2] = axes[-2], axes[-1]
    return be.transpose(x, tuple(axes))


def matmul(a, b):
    """PyTorch's matmul: 1-D operands become a row (left) or a column (right) and lose that dim again."""
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


def linear(x, weight, bias=None):
    """y = x @ W^T + b, PyTorch's layout: weight is (out_features, in_features)."""
    if not isinstance(x, Tensor) or x.ndim == 0 or x.shape[-1] != weight.shape[-1]:
        raise ValueError(f"linear: input {getattr(x, 'shape', x)} does not fit weight {weight.shape}: "
                         f"the input's last dim must be in_features={weight.shape[-1]}")
    y = matmul(x, weight.T)
    return y if bias is None else y + bias
