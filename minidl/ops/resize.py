"""Resizing (NCHW, PyTorch's conventions): interpolate (nearest, bilinear) and pixel shuffle.

A U-Net's decoder climbs back to the photo's size with these: nearest or bilinear upsampling,
or a convolution to r*r times the channels whose outputs pixel_shuffle lays out side by side
(a sub-pixel convolution). The kernels do the work (numpy_ref.py: upsample_nearest2d,
upsample_bilinear2d and their backward); which input pixels an output reads is PyTorch's exact
rule, written once in numpy_ref.nearest_source_index and linear_source_index.
"""
import math

from ..autograd import Function
from ..tensor import is_float

MODES = ("nearest", "bilinear")


class UpsampleNearest2d(Function):
    """y[n, c, i, j] = x[n, c, rows[i], cols[j]];  dL/dx: each gradient added onto the pixel its output copied."""
    @staticmethod
    def forward(ctx, x, size, scales):
        ctx.shape, ctx.scales = x.shape, scales
        return ctx.backend.upsample_nearest2d(x, size, scales)

    @staticmethod
    def backward(ctx, grad):
        return ctx.backend.upsample_nearest2d_backward(grad, ctx.shape, ctx.scales)


class UpsampleBilinear2d(Function):
    """y[n, c, i, j] = sum of x's 2x2 pixels around (i, j)'s source position, each weighted by its
    nearness (y is linear in x);  dL/dx: each gradient shared among the same pixels by the same weights."""
    @staticmethod
    def forward(ctx, x, size, align_corners, scales):
        ctx.shape, ctx.params = x.shape, (align_corners, scales)
        return ctx.backend.upsample_bilinear2d(x, size, align_corners, scales)

    @staticmethod
    def backward(ctx, grad):
        return ctx.backend.upsample_bilinear2d_backward(grad, ctx.shape, *ctx.params)


def _pair(name, v, kind):
    """v (a number or a pair of numbers) as an (h, w) tuple of ``kind``."""
    values = (v, v) if not isinstance(v, (tuple, list)) else tuple(v)
    if len(values) != 2:
        raise ValueError(f"interpolate: {name} must be a number or a pair (h, w), got {v!r}")
    return tuple(kind(n) for n in values)


def interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """x (N, C, H, W) resized to ``size`` (h, w), or by ``scale_factor`` (h = floor(H * factor)), as
    torch.nn.functional.interpolate does:

    nearest   y[i, j] = x[floor(i * s), floor(j * s')], s = 1/scale_factor if given, else H/h (float32)
    bilinear  y[i, j] = x's 2x2 pixels around the source position, weighted by nearness; the source of
              row i is (i + 1/2) s - 1/2 (pixel centres scale), or with align_corners=True
              i (H - 1)/(h - 1) (the corner pixels meet)

    (the exact rules: numpy_ref.nearest_source_index and linear_source_index; the derivatives:
    ``UpsampleNearest2d``, ``UpsampleBilinear2d``).
    """
    if x.ndim != 4:
        raise ValueError(f"interpolate: needs an (N, C, H, W) input, got shape {x.shape} "
                         f"(add a batch dim with x.unsqueeze(0))")
    if mode not in MODES:
        raise ValueError(f"interpolate: unknown mode {mode!r}; minidl has {', '.join(MODES)}")
    if (size is None) == (scale_factor is None):
        raise ValueError(f"interpolate: give exactly one of size and scale_factor, got size={size!r}, "
                         f"scale_factor={scale_factor!r}")
    if mode == "nearest" and align_corners is not None:
        raise ValueError("interpolate: align_corners is for mode='bilinear' (nearest has no corners to align); "
                         "leave it None")
    if mode == "bilinear" and not is_float(x.dtype):
        raise TypeError(f"interpolate: mode='bilinear' needs a float tensor, got {x.dtype} (convert with .float())")
    if size is not None:
        size, scales = _pair("size", size, int), (None, None)
    else:
        scales = _pair("scale_factor", scale_factor, float)
        size = tuple(math.floor(n * s) for n, s in zip(x.shape[2:], scales))
    if min(size) < 1:
        raise ValueError(f"interpolate: the output size {size} of the {tuple(x.shape[2:])} input must be at least "
                         f"1 x 1; use a larger size or scale_factor")
    if mode == "nearest":
        return UpsampleNearest2d.apply(x, size=size, scales=scales)
    return UpsampleBilinear2d.apply(x, size=size, align_corners=bool(align_corners), scales=scales)


def pixel_shuffle(x, upscale_factor):
    """(N, C r^2, H, W) -> (N, C, H r, W r): y[n, c, h r + i, w r + j] = x[n, c r^2 + i r + j, h, w]
    (PyTorch's order). A permutation of the values: a reshape, a permute and a reshape, whose
    derivatives move the gradient back."""
    r = int(upscale_factor)
    if x.ndim != 4 or r < 1 or x.shape[1] % (r * r):
        raise ValueError(f"pixel_shuffle: needs an (N, C r^2, H, W) input and r >= 1, got shape {x.shape} and "
                         f"r={r} (the channels must be divisible by r*r)")
    N, C, H, W = x.shape
    return x.reshape(N, C // (r * r), r, r, H, W).permute(0, 1, 4, 2, 5, 3).reshape(N, C // (r * r), H * r, W * r)


def pixel_unshuffle(x, downscale_factor):
    """(N, C, H r, W r) -> (N, C r^2, H, W), the inverse of pixel_shuffle."""
    r = int(downscale_factor)
    if x.ndim != 4 or r < 1 or x.shape[2] % r or x.shape[3] % r:
        raise ValueError(f"pixel_unshuffle: needs an (N, C, H r, W r) input and r >= 1, got shape {x.shape} and "
                         f"r={r} (the height and width must be divisible by r)")
    N, C, H, W = x.shape
    return x.reshape(N, C, H // r, r, W // r, r).permute(0, 1, 3, 5, 2, 4).reshape(N, C * r * r, H // r, W // r)
