"""minidl: a deep-learning framework to read.

Read the source in this order: autograd.py, tensor.py, ops/elementwise.py (then the other
ops). Each imports only the files before it, and the kernels (backend/). These are the first
steps of the whole tour, README.md's "Read the source in this order".
"""
import builtins
import os

# What minidl exports, in the reading order.
from .autograd import Function, enable_grad, is_grad_enabled, no_grad  # noqa: F401
from .tensor import (Tensor, arange, bool_, eye, float32, float64, from_numpy, full, get_default_dtype,  # noqa: F401
                     int64, ones, ones_like, set_default_dtype, tensor, zeros, zeros_like)
from .ops.elementwise import (abs, add, clamp, div, exp, log, maximum, minimum, mul, neg, pow, relu,  # noqa: F401
                              sigmoid, sqrt, sub, tanh, where)
from .ops.shape import cat, chunk, flatten, gather, permute, reshape, split, squeeze, stack, transpose, unsqueeze  # noqa: F401
from .ops.reduce import (amax, amin, argmax, argmin, logsumexp, max, mean, min, softmax, sum,  # noqa: F401
                         var, log_softmax)
from .ops.matmul import matmul  # noqa: F401
from .ops.conv import conv2d  # noqa: F401
from .random import manual_seed, rand, randint, randn, randperm, set_seed  # noqa: F401
from .backend import devices, register_backend  # noqa: F401
from . import testing, nn, optim, data, learn, io, viz  # noqa: F401
from .profiler import profile  # noqa: F401

try:
    from . import _C  # the C++ kernels (csrc/cpu); optional with MINIDL_KERNELS=numpy
except ImportError:
    _C = None


def max_threads():
    """The most threads the C++ kernels may run on: 4 per core this process may use, at least 8.

    More threads than cores only make the kernels wait for each other, and far more (tens of
    thousands) make OpenMP fail to create them: libgomp then crashes the process."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return builtins.max(8, 4 * cores)   # (this module's own max is the tensor reduction)


def set_num_threads(n):
    """Run the C++ kernels on ``n`` threads (process-wide, like torch.set_num_threads), 1 <= n <= max_threads().

    The default is OMP_NUM_THREADS if set (capped the same way), else one thread per core.
    numpy's own BLAS threads (OPENBLAS_NUM_THREADS) are not changed.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be an integer >= 1, got {n!r}")
    if n > max_threads():
        raise ValueError(f"set_num_threads: {n} threads is more than minidl allows here ({max_threads()}: 4 per "
                         f"core, at least 8). More threads than cores only slow the kernels down, and OpenMP "
                         f"crashes the process when it cannot create that many; use n <= {max_threads()}")
    if _C is None:
        raise RuntimeError("set_num_threads: the C++ kernels (minidl._C) are not built, so there are no "
                           "threads to set; build them with `pip install -e .`")
    _C.set_num_threads(n)


if _C is not None and _C.get_num_threads() > max_threads():   # OMP_NUM_THREADS=100000, say
    import warnings
    warnings.warn(f"minidl: OMP_NUM_THREADS asks for {_C.get_num_threads()} threads; the C++ kernels use "
                  f"{max_threads()} (4 per core, at least 8: OpenMP crashes the process when it cannot create "
                  f"that many threads)", stacklevel=2)
    _C.set_num_threads(max_threads())


def get_num_threads():
    """How many threads the C++ kernels use (1 in a forked child process, e.g. a data-loader worker)."""
    return 1 if _C is None else _C.get_num_threads()

__version__ = "0.1.0"
