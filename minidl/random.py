"""Random numbers: one seeded generator on the host for every device.

Drawing on the host and copying to the device means a seed gives the same
initialisation on "cpu" and on a GPU, so runs on different devices can be compared.
Dropout, which needs new numbers every step, draws one number here, a seed, and each
device makes the mask from it with the same counter-based generator (numpy_ref.dropout_mask):
nothing is copied to a GPU, and the masks are still the same on every device.
"""
import contextlib
import threading

import numpy as np

from .backend import get_backend
from .tensor import Tensor, get_default_dtype, int64, _shape_args

_generator = np.random.default_rng()
_local = threading.local()  # a generator set for the current thread only (see using)


def manual_seed(seed):
    """Make every later random draw (init, dropout, shuffling) repeatable."""
    global _generator
    _generator = np.random.default_rng(seed)


def set_seed(seed):
    """Seed everything a training run draws from: minidl's generator (init, dropout, shuffling),
    numpy's global generator and Python's ``random``, so a run can be repeated exactly."""
    import random as python_random
    manual_seed(seed)
    np.random.seed(seed)
    python_random.seed(seed)


def generator():
    """The numpy Generator behind minidl's random numbers (this thread's own, inside ``using``)."""
    return getattr(_local, "generator", None) or _generator


@contextlib.contextmanager
def using(gen):
    """Draw from ``gen`` in this thread while inside the block.

    The DataLoader builds each batch inside ``using`` a generator of its own, seeded
    once per epoch from the main one: a dataset's random augmentations then never
    share a generator with the training thread (dropout), whichever thread builds
    the batch, so runs stay reproducible.
    """
    previous = getattr(_local, "generator", None)
    _local.generator = gen
    try:
        yield gen
    finally:
        _local.generator = previous


def _on_device(host, dtype, device, requires_grad):
    data = get_backend(device).asarray(host.astype(dtype or get_default_dtype(), copy=False))
    return Tensor._make(data, device).requires_grad_(requires_grad)


def rand(*shape, dtype=None, device="cpu", requires_grad=False):
    """Uniform on [0, 1)."""
    return _on_device(generator().random(_shape_args(shape)), dtype, device, requires_grad)


def randn(*shape, dtype=None, device="cpu", requires_grad=False):
    """Standard normal (mean 0, variance 1)."""
    return _on_device(generator().standard_normal(_shape_args(shape)), dtype, device, requires_grad)


def randint(low, high=None, size=(), device="cpu"):
    """Integers uniform on [low, high) (or [0, low) when high is omitted)."""
    if high is None:
        low, high = 0, low
    return _on_device(generator().integers(low, high, size=_shape_args((size,) if isinstance(size, int) else size)),
                      int64, device, False)


def randperm(n, device="cpu"):
    """A random ordering of 0 .. n-1."""
    return _on_device(generator().permutation(n), int64, device, False)
