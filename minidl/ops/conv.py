"""Convolution and pooling (NCHW layout, PyTorch's conventions).

The kernels (im2col + matmul in numpy_ref.py) do the work; these Functions say
which kernel computes each gradient.
"""
from ..autograd import Function
from ..backend.kernel_types import conv_geometry, pool_geometry
from .elementwise import as_tensors
from .shape import stack


def pair(v):
    """An int or a pair of ints as an (h, w) tuple of ints."""
    return (int(v), int(v)) if isinstance(v, int) else tuple(int(i) for i in v)


class Conv2d(Function):
    """y = conv(x, w);  dL/dx = conv2d_backward_data(g, w),  dL/dw = conv2d_backward_weight(g, x)."""
    @staticmethod
    def forward(ctx, x, w, stride, padding, dilation, groups):
        ctx.save_for_backward(x, w)
        ctx.params = stride, padding, dilation, groups
        return ctx.backend.conv2d(x, w, *ctx.params)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_arrays
        be = ctx.backend
        dx = be.conv2d_backward_data(grad, w, x.shape, *ctx.params) if ctx.needs_input_grad[0] else None
        dw = be.conv2d_backward_weight(grad, x, w.shape, *ctx.params) if ctx.needs_input_grad[1] else None
        return dx, dw


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution of x (N, C, H, W) with weight (O, C/groups, kh, kw), plus bias (O,); derivatives in ``Conv2d``."""
    x, weight = as_tensors("conv2d", x, weight)
    stride, padding, dilation = pair(stride), pair(padding), pair(dilation)
    if x.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"conv2d: needs x of shape (N, C, H, W) and weight (O, C/groups, kh, kw), "
                         f"got {x.shape} and {weight.shape} (add a batch dim with x.unsqueeze(0))")
    N, C, H, W = x.shape
    O, Cg, kh, kw = weight.shape
    if C % groups or O % groups or Cg != C // groups:
        raise ValueError(f"conv2d: input {x.shape} has {C} channels; with groups={groups} weight {weight.shape} "
                         f"must be (O, {C // groups if C % groups == 0 else 'C/groups'}, kh, kw) with O and C "
                         f"divisible by groups")
    geometry = conv_geometry(x.shape, weight.shape, stride, padding, dilation, groups)  # (backend/kernel_types.py)
    if geometry.OH < 1 or geometry.OW < 1:
        raise ValueError(f"conv2d: a {kh}x{kw} kernel (dilation {dilation}) does not fit the padded "
                         f"{H}x{W} input with padding {padding}; use more padding or a smaller kernel")
    y = Conv2d.apply(x, weight, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return y if bias is None else y + bias.reshape(1, -1, 1, 1)


class MaxPool2d(Function):
    """y = max over each window;  the gradient goes to each window's winner."""
    @staticmethod
    def forward(ctx, x, kernel, stride, padding, dilation):
        y, winner = ctx.backend.max_pool2d(x, kernel, stride, padding, dilation)
        ctx.save_for_backward(winner)
        ctx.params, ctx.shape = (kernel, stride, padding, dilation), x.shape
        return y

    @staticmethod
    def backward(ctx, grad):
        winner, = ctx.saved_arrays
        return ctx.backend.max_pool2d_backward(grad, winner, ctx.shape, *ctx.params)


class AvgPool2d(Function):
    """y = mean over each window (zeros padding included);  each input gets 1/(kh*kw) of it."""
    @staticmethod
    def forward(ctx, x, kernel, stride, padding):
        ctx.params, ctx.shape = (kernel, stride, padding), x.shape
        return ctx.backend.avg_pool2d(x, kernel, stride, padding)

    @staticmethod
    def backward(ctx, grad):
        return ctx.backend.avg_pool2d_backward(grad, ctx.shape, *ctx.params)


class AdaptiveAvgPool2d(Function):
    """y = mean over the window of each output cell, windows chosen to cover the input evenly;
    each input gets, from every window holding it, that window's gradient divided by its size."""
    @staticmethod
    def forward(ctx, x, out_size):
        ctx.shape = x.shape
        return ctx.backend.adaptive_avg_pool2d(x, out_size)

    @staticmethod
    def backward(ctx, grad):
        return ctx.backend.adaptive_avg_pool2d_backward(grad, ctx.shape)


def _pool_params(op, x, kernel_size, stride, padding, dilation=1):
    if x.ndim != 4:
        raise ValueError(f"{op}: needs an (N, C, H, W) input, got shape {x.shape}")
    kernel = pair(kernel_size)
    stride = kernel if stride is None else pair(stride)
    padding, dilation = pair(padding), pair(dilation)
    if any(2 * p > k for p, k in zip(padding, kernel)):
        raise ValueError(f"{op}: padding {padding} must be at most half the kernel size {kernel}")
    geometry = pool_geometry(x.shape, kernel, stride, padding, dilation)  # (backend/kernel_types.py)
    if geometry.OH < 1 or geometry.OW < 1:
        raise ValueError(f"{op}: kernel {kernel} does not fit the {x.shape[2:]} input with padding {padding}")
    return kernel, stride, padding, dilation


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1):
    """y[n,c,i,j] = max of x (N, C, H, W) over the (dilated) window at (i, j) * stride, padding as -inf
    (its gradient: ``MaxPool2d``). stride defaults to kernel_size.
    """
    kernel, stride, padding, dilation = _pool_params("max_pool2d", x, kernel_size, stride, padding, dilation)
    return MaxPool2d.apply(x, kernel=kernel, stride=stride, padding=padding, dilation=dilation)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """y[n,c,i,j] = mean of x (N, C, H, W) over the window at (i, j) * stride, zero padding counted
    (its gradient: ``AvgPool2d``). stride defaults to kernel_size.
    """
    kernel, stride, padding, _ = _pool_params("avg_pool2d", x, kernel_size, stride, padding)
    return AvgPool2d.apply(x, kernel=kernel, stride=stride, padding=padding)


def _adaptive_size(op, x, output_size):
    if x.ndim != 4:
        raise ValueError(f"{op}: needs an (N, C, H, W) input, got shape {x.shape}")
    size = (output_size, output_size) if isinstance(output_size, int) or output_size is None else output_size
    return tuple(x.shape[2 + i] if s is None else int(s) for i, s in enumerate(size))


def adaptive_avg_pool2d(x, output_size):
    """Mean over output_size windows that tile H and W: window i spans [floor(i H / OH), ceil((i+1) H / OH))
    (its gradient: ``AdaptiveAvgPool2d``)."""
    return AdaptiveAvgPool2d.apply(x, out_size=_adaptive_size("adaptive_avg_pool2d", x, output_size))


def adaptive_max_pool2d(x, output_size):
    """Max over PyTorch's adaptive windows, composed from amax over each window (output cells
    are few: usually one), so its gradient comes from amax's."""
    OH, OW = _adaptive_size("adaptive_max_pool2d", x, output_size)
    bins = x.backend.adaptive_bins  # the same windows as the average-pooling kernel
    rows = [stack([x[:, :, h0:h1, w0:w1].amax(dim=(2, 3)) for w0, w1 in bins(x.shape[3], OW)], dim=-1)
            for h0, h1 in bins(x.shape[2], OH)]
    return stack(rows, dim=-2)
