"""The records the Python host code shares with the C++ and CUDA kernels, one of each.

``ConvGeometry``: the geometry of a 2-D convolution or pooling, the fields of
csrc/common/conv_geometry.h in the same order. ``conv_geometry`` and ``pool_geometry`` make
it, and are the one place that computes a conv's output size (numpy_ref.conv_out_size's
formula); ops/conv.py checks a layer's arguments with it, cpu.py passes it to the C++ kernels
(csrc/cpu: a tuple of 16 ints) and cuda.py to the CUDA kernels (csrc/cuda/conv.cu, pool.cu:
an int32 array).

``ACTIVATIONS``: the activations a kernel applies after batch norm in evaluation mode
(channel_affine), in the order of their codes in csrc/common/activation.h (None is ACT_NONE).

tests/test_kernel_types.py checks both against the headers.
"""
from typing import NamedTuple

from .numpy_ref import conv_out_size


class ConvGeometry(NamedTuple):
    """The geometry of conv2d(x, w) or of a pooling of x, NCHW (csrc/common/conv_geometry.h).

    x is (N, C, H, W); the output (N, O, OH, OW). Pooling: O == C, groups == 1.
    """
    N: int
    C: int
    H: int
    W: int
    O: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int
    groups: int
    OH: int
    OW: int

    def problem(self):
        """Why no kernel can compute this geometry (a sentence), or None when it is valid.

        Valid: positive kernel, stride, dilation and groups, padding >= 0, channels that
        divide by groups and an output of at least one pixel.
        """
        N, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, groups, OH, OW = self
        if kh < 1 or kw < 1 or sh < 1 or sw < 1 or dh < 1 or dw < 1 or groups < 1 or ph < 0 or pw < 0:
            return (f"kernel {(kh, kw)}, stride {(sh, sw)}, dilation {(dh, dw)} and groups {groups} "
                    f"must be >= 1 and padding {(ph, pw)} >= 0")
        if C % groups or O % groups:
            return f"channels {C} and {O} must both divide by groups={groups}"
        if OH < 1 or OW < 1:
            return (f"the kernel does not fit the padded input (output would be {OH} x {OW}): "
                    f"a {kh}x{kw} kernel (dilation {(dh, dw)}) on a {H}x{W} input with padding {(ph, pw)}; "
                    f"use more padding or a smaller kernel")
        return None

    def empty(self):
        """True when the input, the output's channels or the kernel have no elements: nothing for a
        kernel to compute (the numpy reference returns the empty or zero result)."""
        return min(self.N, self.C, self.H, self.W, self.O, self.kh, self.kw) < 1


def conv_geometry(x_shape, w_shape, stride, padding, dilation, groups):
    """The ConvGeometry of conv2d(x, w) for x of shape (N, C, H, W) and w (O, C/groups, kh, kw)."""
    N, C, H, W = x_shape
    O, _, kh, kw = w_shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    return ConvGeometry(N, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, groups,
                        conv_out_size(H, kh, sh, ph, dh), conv_out_size(W, kw, sw, pw, dw))


def pool_geometry(x_shape, kernel, stride, padding, dilation=(1, 1)):
    """The ConvGeometry of a max or average pooling of x (N, C, H, W): a conv with O == C, one group."""
    N, C, H, W = x_shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    return ConvGeometry(N, C, H, W, C, kh, kw, sh, sw, ph, pw, dh, dw, 1,
                        conv_out_size(H, kh, sh, ph, dh), conv_out_size(W, kw, sw, pw, dw))


# The activations, in the order of csrc/common/activation.h's enum Activation: a name's code is its index.
ACTIVATIONS = (None, "relu", "relu6")
ACTIVATION_CODES = {name: code for code, name in enumerate(ACTIVATIONS)}


def activation_code(op, activation):
    """The kernels' code for ``activation`` (None, "relu" or "relu6"); a ValueError naming op otherwise."""
    code = ACTIVATION_CODES.get(activation) if isinstance(activation, (str, type(None))) else None
    if code is None:
        raise ValueError(f"{op}: activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
    return code
