"""Gradient clipping: PyTorch's torch.nn.utils.clip_grad_norm_."""
import math

from ..autograd import no_grad
from ..ops.elementwise import clamp
from ..ops.shape import stack

__all__ = ["clip_grad_norm_"]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0):
    """Scale the gradients of ``parameters`` in place so that their total norm (all of them as one long
    vector) is at most ``max_norm``; returns the total norm before clipping, a 0-d tensor.

    An LSTM's gradient can jump by orders of magnitude in one step (a step that saturates a gate, a long
    sequence); clipping bounds the step's size without changing its direction. The scale,
    min(1, max_norm / (norm + 1e-6)), is multiplied in always, as PyTorch does: deciding "clip or not"
    would read the norm on the host, which on a GPU waits for the backward pass to finish."""
    parameters = [parameters] if hasattr(parameters, "grad") else list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        raise ValueError("clip_grad_norm_: no parameter has a gradient (call backward() first)")
    if not (max_norm > 0 and math.isfinite(max_norm)):
        raise ValueError(f"clip_grad_norm_: max_norm must be a positive number, got {max_norm}")
    if norm_type not in (2.0, math.inf):
        raise ValueError(f"clip_grad_norm_: norm_type must be 2.0 or math.inf, got {norm_type}")
    with no_grad():
        if norm_type == math.inf:
            total = stack([g.abs().amax() for g in grads]).amax()
        else:
            total = stack([(g * g).sum() for g in grads]).sum().sqrt()
        scale = clamp(max_norm / (total + 1e-6), max=1.0)
        for p in parameters:
            if p.grad is not None:
                p.grad = p.grad * scale.to(p.grad.dtype)
    return total
