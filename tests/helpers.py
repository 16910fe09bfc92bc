"""Turning drawn numpy inputs into minidl (or torch) tensors the same way everywhere."""
import numpy as np

import minidl


def is_param(v):
    """("params", a, b, ...) entries of a drawn input list are passed to the op as they are."""
    return isinstance(v, tuple) and v[0] == "params"


def to_minidl(values, dtype=np.float64, requires_grad=True):
    """Float arrays become tensors (non-contiguous layouts kept) that require grad."""
    out = []
    for v in values:
        if is_param(v):
            out.extend(v[1:])
            continue
        v = np.asarray(v)
        if v.dtype.kind == "f":
            arr = v if v.dtype == dtype else v.astype(dtype)
            out.append(minidl.from_numpy(arr).requires_grad_(requires_grad))
        else:
            out.append(minidl.from_numpy(v.astype(np.int64) if v.dtype.kind in "iu" else v))
    return out


def to_torch(values, dtype=np.float64):
    """The same inputs for PyTorch, as contiguous copies: the reference must be beyond doubt.

    (torch 2.13.0 on the CPU gives wrong input gradients for F.batch_norm in eval mode
    when weight is a strided view, e.g. every other element of a numpy array.)
    """
    import torch
    out = []
    for v in values:
        if is_param(v):
            out.extend(v[1:])
            continue
        v = np.array(v, order="C")  # (np.ascontiguousarray would turn 0-d into 1-d)
        if v.dtype.kind == "f":
            out.append(torch.from_numpy(v if v.dtype == dtype else v.astype(dtype)).requires_grad_(True))
        else:
            out.append(torch.from_numpy(v.astype(np.int64) if v.dtype.kind in "iu" else v))
    return out


def as_tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)
