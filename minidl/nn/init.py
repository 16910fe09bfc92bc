"""Weight initialisation, in place: PyTorch's functions, with its default choices per layer.

Why it matters: a layer's output variance is fan_in * Var(w) * Var(x). Kaiming (He)
initialisation picks Var(w) = gain^2 / fan so the signal neither dies nor explodes
through many ReLU layers; Xavier (Glorot) balances fan_in and fan_out for tanh/sigmoid.
"""
import math

from .. import random
from ..autograd import no_grad
from ..tensor import zeros


def calculate_gain(nonlinearity, param=None):
    """The factor by which an activation shrinks the standard deviation (PyTorch's table)."""
    if nonlinearity in ("linear", "sigmoid", "conv1d", "conv2d", "conv3d",
                        "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unknown nonlinearity {nonlinearity!r}")


def fan_in_and_fan_out(t):
    """For a (out, in, *kernel) weight: fan_in = in * kernel size, fan_out = out * kernel size."""
    if t.ndim < 2:
        raise ValueError(f"fan_in_and_fan_out: needs a weight with at least 2 dims, got shape {t.shape}")
    receptive = math.prod(t.shape[2:])
    return t.shape[1] * receptive, t.shape[0] * receptive


def _fill(t, host):
    with no_grad():
        t.data[...] = t.backend.asarray(host.astype(t.dtype, copy=False))
        t._version_counter.value += 1
    return t


def uniform_(t, a=0.0, b=1.0):
    """Fill t with values drawn from U(a, b), in place."""
    return _fill(t, random.generator().uniform(a, b, t.shape))


def normal_(t, mean=0.0, std=1.0):
    """Fill t with values drawn from N(mean, std^2), in place."""
    return _fill(t, random.generator().normal(mean, std, t.shape))


def trunc_normal_(t, mean=0.0, std=1.0, a=-2.0, b=2.0):
    """Normal values, redrawn until they fall in [a, b] (fastai initialises embeddings with std=0.01)."""
    rng = random.generator()
    values = rng.normal(mean, std, t.shape)
    outside = (values < a) | (values > b)
    while outside.any():
        values[outside] = rng.normal(mean, std, int(outside.sum()))
        outside = (values < a) | (values > b)
    return _fill(t, values)


def constant_(t, value):
    """Fill t with ``value``, in place."""
    with no_grad():
        t.data[...] = value
        t._version_counter.value += 1
    return t


def zeros_(t):
    """Fill t with 0, in place."""
    return constant_(t, 0.0)


def ones_(t):
    """Fill t with 1, in place."""
    return constant_(t, 1.0)


def _fan(t, mode):
    fan_in, fan_out = fan_in_and_fan_out(t)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', not {mode!r}")
    return fan_in if mode == "fan_in" else fan_out


def kaiming_uniform_(t, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    """U(-bound, bound) with bound = gain * sqrt(3 / fan): variance gain^2 / fan."""
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(t, mode))
    return uniform_(t, -bound, bound)


def kaiming_normal_(t, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    """N(0, gain^2 / fan)."""
    return normal_(t, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(_fan(t, mode)))


def xavier_uniform_(t, gain=1.0):
    """U(-bound, bound) with bound = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = fan_in_and_fan_out(t)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound)


def xavier_normal_(t, gain=1.0):
    """N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = fan_in_and_fan_out(t)
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def default_linear_init(weight, bias):
    """PyTorch's default for Linear and Conv2d: kaiming_uniform(a=sqrt(5)), which works out to
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the weight, and the same bound for the bias."""
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        bound = 1 / math.sqrt(fan_in_and_fan_out(weight)[0])
        uniform_(bias, -bound, bound)


def icnr_(t, scale=2, init=kaiming_normal_):
    """ICNR (Aitken et al. 2017, fastai's icnr_init) for a convolution whose output goes to
    pixel_shuffle(scale): the weight (O, I, kh, kw) gets O / scale^2 kernels drawn by ``init``, each
    repeated for the scale^2 consecutive output channels that pixel_shuffle lays out as one
    scale x scale block. The block's pixels then start equal: the shuffled output begins as a
    nearest upsampling, free of the checkerboard a random sub-pixel convolution starts with."""
    n = scale * scale
    if t.ndim < 2 or t.shape[0] % n:
        raise ValueError(f"icnr_: the weight {t.shape} needs output channels (dim 0) divisible by scale^2 = {n}, "
                         f"one group of {n} per channel after pixel_shuffle({scale})")
    kernels = zeros(t.shape[0] // n, *t.shape[1:], dtype=t.dtype)
    init(kernels)
    return _fill(t, kernels.numpy().repeat(n, axis=0))
