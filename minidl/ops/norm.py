"""Batch normalization and dropout: the two ops that behave differently in training."""
from .. import random
from ..autograd import Function
from ..tensor import Tensor, ones, zeros
from .elementwise import relu, relu6

# The activations batch_norm can apply to its output (fused into the same pass in evaluation mode),
# as ops: the names of the kernels' table (backend/kernel_types.py ACTIVATIONS, csrc/common/activation.h).
ACTIVATIONS = {None: lambda y: y, "relu": relu, "relu6": relu6}


class BatchNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * w + b, with the batch's statistics per channel;
    see numpy_ref.batch_norm_backward for the gradient.

    ``running`` = (running_mean, running_var) arrays are moved toward the batch's
    statistics in place: running = (1 - momentum) * running + momentum * batch, with
    the variance unbiased (Bessel's correction), as PyTorch does.
    """
    @staticmethod
    def forward(ctx, x, weight, bias, eps, running, momentum):
        be = ctx.backend
        y, mean, var, invstd = be.batch_norm(x, weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        if running is not None:
            running_mean, running_var = running
            M = x.size // x.shape[1]
            running_mean[...] = be.add(be.mul(running_mean, 1 - momentum), be.mul(mean, momentum))
            running_var[...] = be.add(be.mul(running_var, 1 - momentum), be.mul(var, momentum * M / (M - 1)))
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, mean, invstd = ctx.saved_arrays
        return ctx.backend.batch_norm_backward(grad, x, weight, mean, invstd)


class ChannelAffine(Function):
    """y = act(x * scale[c] + shift[c]) over channel axis 1, act None, "relu" or "relu6":
    batch norm in evaluation mode, fused with the activation that follows it.

    With g' = the gradient where act passes it (0 < y, and y < 6 for ReLU6):
    dx = g' * scale[c], dscale[c] = sum g' * x, dshift[c] = sum g' (over all but axis 1).
    """
    @staticmethod
    def forward(ctx, x, scale, shift, activation):
        y = ctx.backend.channel_affine(x, scale, shift, activation)
        ctx.save_for_backward(x, y, scale)
        ctx.activation = activation
        return y

    @staticmethod
    def backward(ctx, grad):
        x, y, scale = ctx.saved_arrays
        return ctx.backend.channel_affine_backward(grad, x, y, scale, ctx.activation)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5,
               activation=None):
    """PyTorch's F.batch_norm over channel axis 1 of (N, C) or (N, C, H, W) input, then ``activation``
    (None, "relu" or "relu6") if given; derivatives in ``BatchNorm`` and ``ChannelAffine``.

    Training: normalise with the batch's mean and (biased) variance, and update the
    running averages if given. Evaluation: normalise with the running averages, which
    makes batch norm a per-channel affine map x * scale + shift with scale = weight /
    sqrt(running_var + eps) and shift = bias - running_mean * scale (PyTorch folds it the
    same way); that map and the activation run as one pass (ChannelAffine).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"batch_norm: activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
    if x.ndim < 2:
        raise ValueError(f"batch_norm: needs (N, C, ...) input, got shape {x.shape}")
    C = x.shape[1]
    weight = weight if weight is not None else ones(C, dtype=x.dtype, device=x.device)
    bias = bias if bias is not None else zeros(C, dtype=x.dtype, device=x.device)
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        if t is not None and t.shape != (C,):
            raise ValueError(f"batch_norm: {name} has shape {t.shape}, but the input {x.shape} has {C} channels")
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: evaluation mode needs running_mean and running_var")
        scale = weight / (running_var + eps).sqrt()
        return ChannelAffine.apply(x, scale, bias - running_mean * scale, activation=activation)
    if x.numel() // C <= 1:
        raise ValueError(f"batch_norm: training needs more than one value per channel, got input {x.shape}")
    running = None
    if running_mean is not None and running_var is not None:
        running = (running_mean.data, running_var.data)
        running_mean._version_counter.value += 1
        running_var._version_counter.value += 1
    return ACTIVATIONS[activation](BatchNorm.apply(x, weight, bias, eps=eps, running=running, momentum=momentum))


def dropout(x, p=0.5, training=True):
    """Zero each value with probability p and scale the rest by 1/(1-p), so the mean is kept."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be a probability in [0, 1], got {p}")
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0
    # One number drawn on the host, the seed; the mask is made where x lives (a GPU draws no numbers on the
    # host and copies nothing over), and one seed gives the same mask on every device.
    seed = int(random.generator().integers(2 ** 63))
    mask = x.backend.dropout_mask(x.shape, p, seed, x.dtype)
    return x * Tensor._make(mask, x.device)
