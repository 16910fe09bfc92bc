"""The C++ kernels of csrc/cpu (the extension module minidl._C), with numpy semantics.

``KERNELS`` maps a kernel name to a function over numpy arrays; the "cpu" backend
uses it in place of the reference kernel of the same name in numpy_ref.py.
"""
import numpy as np

try:
    from minidl import _C
except ImportError as e:
    raise ImportError(
        "minidl._C (the C++ kernels) is not built: run `pip install -e .` in the repo "
        "(or `make test`), or set MINIDL_KERNELS=numpy to use the numpy reference kernels"
    ) from e

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def matmul(a, b):
    """(..., M, K) @ (..., K, N) -> (..., M, N), exactly numpy.matmul; batch dims broadcast.

    float32/float64 run csrc/cpu/matmul.cpp on (batch, M, K) @ (batch, K, N) copies
    made contiguous; other dtypes (and 1-D operands) use numpy.matmul.
    """
    if a.ndim < 2 or b.ndim < 2 or a.dtype != b.dtype or a.dtype not in FLOAT_DTYPES:
        return np.matmul(a, b)
    (m, k), (k2, n) = a.shape[-2:], b.shape[-2:]
    if k != k2:
        raise ValueError(f"matmul: {a.shape} @ {b.shape}: inner dims {k} and {k2} differ")
    try:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: {a.shape} @ {b.shape}: batch dims {a.shape[:-2]} and "
                         f"{b.shape[:-2]} do not broadcast") from None
    if np.prod(b.shape[:-2], dtype=np.int64) == 1:
        # One shared right operand (a layer's weight): all of a's rows in one (batch*M, K) @ (K, N).
        rows = int(np.prod(a.shape[:-1], dtype=np.int64))
        a3 = np.ascontiguousarray(a).reshape(1, rows, k)
        out = _C.matmul(a3, np.ascontiguousarray(b).reshape(1, k, n))
    else:
        nb = int(np.prod(batch, dtype=np.int64))
        a3 = np.ascontiguousarray(np.broadcast_to(a, batch + (m, k))).reshape(nb, m, k)
        b3 = np.ascontiguousarray(np.broadcast_to(b, batch + (k, n))).reshape(nb, k, n)
        out = _C.matmul(a3, b3)
    return out.reshape(batch + (m, n))


def set_num_threads(n):
    """Use n threads in the C++ kernels (process-wide)."""
    _C.set_num_threads(n)


def get_num_threads():
    return _C.get_num_threads()


KERNELS = {"matmul": matmul}
