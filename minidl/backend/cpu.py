"""The C++ kernels of csrc/cpu (the extension module minidl._C), with numpy semantics.

This module is the border between Python and the C++ kernels, and the one place that checks
their arguments. Each function here, named like the reference kernel in numpy_ref.py that it
replaces on the "cpu" device (``KERNELS``):

1. falls back to that reference kernel for what the C++ kernel does not take (other dtypes,
   layouts it cannot update in place, other axes, empty arrays);
2. checks the rest, raising an error that names the op, the shapes and the fix;
3. allocates the outputs and calls minidl._C, which hands the arrays straight to the kernel
   (csrc/cpu/bindings.cpp picks float32 or float64 and checks dtypes and layouts, not sizes).

Shapes that do not match are errors here as in any implementation; a kernel that indexes
memory with its data (embedding ids, class targets, max-pool winners) checks those values
itself (IndexError). The hot paths (matmul, the optimizer steps, batch norm) keep their
checks to a few attribute reads: they run once per layer or parameter per step.
"""
import math
import os

import numpy as np

from . import numpy_ref
from .kernel_types import activation_code, conv_geometry, pool_geometry

try:
    from minidl import _C
except ImportError as e:
    raise ImportError(
        "minidl._C (the C++ kernels) is not built: run `pip install -e .` in the repo "
        "(or `make test`), or set MINIDL_KERNELS=numpy to use the numpy reference kernels"
    ) from e

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Every fresh array of more than 128 KiB costs glibc's malloc an mmap and a page fault per
# 4 KiB, which for a training step's activations costs more than the kernels that fill
# them (a small CNN's step: 26 ms -> 19.5 ms with this).  Keep freed memory for reuse,
# unless MINIDL_KEEP_MEMORY=0.  (csrc/cpu/malloc_tuning.cpp.)
MALLOC_TUNED = os.environ.get("MINIDL_KEEP_MEMORY", "1") != "0" and _C.keep_freed_memory()


def _same_float(*arrays):
    """True when every argument is a numpy array of one float dtype (float32 or float64)."""
    dtype = getattr(arrays[0], "dtype", None)
    if dtype not in FLOAT_DTYPES:
        return False
    for a in arrays:
        if not isinstance(a, np.ndarray) or a.dtype != dtype:
            return False
    return True


def _int64(a):
    """An integer array as int64, the index type of the kernels (a copy only if it is not already)."""
    return a.astype(np.int64, copy=False)


# ---------------------------------------------------------------- matmul (matmul.cpp)

def matmul(a, b):
    """(..., M, K) @ (..., K, N) -> (..., M, N), exactly numpy.matmul; batch dims broadcast.

    float32/float64 run csrc/cpu/matmul.cpp, which reads 2-D and 3-D operands with any
    strides (a transposed view costs no copy); other dtypes (and 1-D operands) use numpy.matmul.
    """
    if a.ndim < 2 or b.ndim < 2 or a.dtype != b.dtype or a.dtype not in FLOAT_DTYPES:
        return np.matmul(a, b)
    (m, k), (k2, n) = a.shape[-2:], b.shape[-2:]
    if k != k2:
        raise ValueError(f"matmul: {a.shape} @ {b.shape}: inner dims {k} and {k2} differ")
    if a.ndim == 2 and b.ndim == 2:  # the common case (a Linear layer): no batch to broadcast
        out = np.empty((m, n), a.dtype)
        _C.matmul(a, b, out)
        return out
    try:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: {a.shape} @ {b.shape}: batch dims {a.shape[:-2]} and "
                         f"{b.shape[:-2]} do not broadcast") from None
    out = np.empty(batch + (m, n), a.dtype)
    if math.prod(b.shape[:-2]) == 1:
        # One shared right operand (a layer's weight): all of a's rows in one (batch*M, K) @ (K, N).
        # (reshape gives views where the strides allow, copies otherwise)
        _C.matmul(a.reshape(1, math.prod(a.shape[:-1]), k), b.reshape(1, k, n), out)
    else:
        nb = math.prod(batch)
        a3 = np.ascontiguousarray(np.broadcast_to(a, batch + (m, k))).reshape(nb, m, k)
        b3 = np.ascontiguousarray(np.broadcast_to(b, batch + (k, n))).reshape(nb, k, n)
        _C.matmul(a3, b3, out)
    return out


# ---------------------------------------------------------------- optimizer steps (optim.cpp)

def _updatable(*arrays):
    """True when every array is a C-contiguous, writable float32/float64 array of one dtype:
    what a kernel can update in place.

    (A plain loop, not all(... for ...): the optimizer asks this for every parameter of
    every step, and a generator costs more than the checks.)
    """
    dtype = arrays[0].dtype
    if dtype not in FLOAT_DTYPES:
        return False
    for a in arrays:
        if type(a) is not np.ndarray or a.dtype != dtype:
            return False
        flags = a.flags
        if not (flags.c_contiguous and flags.writeable):
            return False
    return True


def _check_grad(op, grad, param):
    """A ValueError naming op unless grad broadcasts to param's shape (the reference's semantics)."""
    try:
        fits = np.broadcast_shapes(np.shape(grad), param.shape) == param.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{op}: grad {np.shape(grad)} does not match param {param.shape} "
                         f"(it must have the parameter's shape, or broadcast to it)")


def sgd_step(param, grad, momentum_buf, lr, momentum, weight_decay, nesterov, dampening=0.0):
    """numpy_ref.sgd_step, fused in one pass (csrc/cpu/optim.cpp); same in-place semantics and return.

    Layouts the kernel cannot update in place (non-contiguous param or buffer, mixed dtypes,
    a grad that only broadcasts) use the reference kernel.
    """
    momentum = float(momentum)
    inplace = (param,) if momentum == 0 or momentum_buf is None else (param, momentum_buf)
    if (not _updatable(*inplace) or not isinstance(grad, np.ndarray) or grad.dtype != param.dtype
            or grad.shape != param.shape):
        _check_grad("sgd_step", grad, param)
        return numpy_ref.sgd_step(param, grad, momentum_buf, lr, momentum, weight_decay, nesterov, dampening)
    if momentum == 0:
        _C.sgd_step(param, grad, None, param.size, lr, 0.0, weight_decay, dampening, bool(nesterov), False)
        return momentum_buf
    first = momentum_buf is None
    if first:
        momentum_buf = np.empty(param.shape, param.dtype)
    _C.sgd_step(param, grad, momentum_buf, param.size, lr, momentum, weight_decay, dampening, bool(nesterov), first)
    return momentum_buf


def adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """numpy_ref.adam_step (Adam / AdamW), fused in one pass (csrc/cpu/optim.cpp), in place."""
    step = int(step)
    if step < 1:
        raise ValueError(f"adam_step: step={step}, but steps count from 1 (the first update is step 1)")
    if (not _updatable(param, exp_avg, exp_avg_sq) or not isinstance(grad, np.ndarray) or grad.dtype != param.dtype
            or grad.shape != param.shape or exp_avg.shape != param.shape or exp_avg_sq.shape != param.shape):
        _check_grad("adam_step", grad, param)
        return numpy_ref.adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay,
                                   decoupled)
    _C.adam_step(param, grad, exp_avg, exp_avg_sq, param.size, step, lr, beta1, beta2, eps, weight_decay,
                 bool(decoupled))


# ---------------------------------------------------------------- embedding (embedding.cpp)

def embedding(weight, ids):
    """weight[ids] (csrc/cpu/embedding.cpp) for a 2-D float table and integer ids; else numpy_ref.

    An id outside [-V, V) is an IndexError (negative ids count from the end, as numpy's).
    """
    ids = np.asarray(ids)
    if weight.ndim != 2 or weight.dtype not in FLOAT_DTYPES or ids.dtype.kind not in "iu":
        return numpy_ref.embedding(weight, ids)
    V, D = weight.shape
    out = np.empty(ids.shape + (D,), weight.dtype)
    _C.embedding(weight, _int64(ids), out, ids.size, V, D)
    return out


def embedding_backward(grad, ids, num_embeddings):
    """numpy_ref.embedding_backward: a deterministic, thread-parallel scatter-add (embedding.cpp)."""
    ids = np.asarray(ids)
    if (grad.dtype not in FLOAT_DTYPES or ids.dtype.kind not in "iu" or grad.ndim < 1
            or grad.shape[:-1] != ids.shape):
        return numpy_ref.embedding_backward(grad, ids, num_embeddings)
    V, D = int(num_embeddings), grad.shape[-1]
    if V < 0:
        raise ValueError(f"embedding_backward: num_embeddings={V}, but a table has >= 0 rows")
    dweight = np.empty((V, D), grad.dtype)
    _C.embedding_backward(grad, _int64(ids), dweight, ids.size, V, D)
    return dweight


# ---------------------------------------------------------------- convolution (conv.cpp, depthwise.cpp)

def _conv_geometry(op, a, b, x_shape, w_shape, stride, padding, dilation, groups):
    """The ConvGeometry the C++ kernels take, or None for the reference (other dtypes, empty
    arrays or kernels); a ValueError naming op for arguments no convolution has."""
    if not (_same_float(a, b) and len(x_shape) == 4 and len(w_shape) == 4):
        return None
    g = conv_geometry(x_shape, w_shape, stride, padding, dilation, int(groups))
    if g.empty():
        return None
    problem = g.problem()
    if problem is None and w_shape[1] * g.groups != g.C:
        problem = f"weight {tuple(w_shape)} must be (O, C/groups, kh, kw) with C={g.C}, groups={g.groups}"
    if problem:
        raise ValueError(f"{op}: {problem}")
    return g


def _check_output_grad(op, grad, g):
    """A ValueError naming op unless grad has the output's shape (N, O, OH, OW)."""
    if grad.shape != (g.N, g.O, g.OH, g.OW):
        raise ValueError(f"{op}: grad {grad.shape} should be {(g.N, g.O, g.OH, g.OW)}, the output's shape")


def conv2d(x, w, stride, padding, dilation, groups):
    """numpy_ref.conv2d in C++ (csrc/cpu/conv.cpp: im2col + matmul; depthwise.cpp for groups == C == O)."""
    g = _conv_geometry("conv2d", x, w, x.shape, w.shape, stride, padding, dilation, groups)
    if g is None:
        return numpy_ref.conv2d(x, w, stride, padding, dilation, groups)
    out = np.empty((g.N, g.O, g.OH, g.OW), x.dtype)
    _C.conv2d(x, w, out, g)
    return out


def conv2d_backward_data(grad, w, x_shape, stride, padding, dilation, groups):
    """numpy_ref.conv2d_backward_data in C++ (conv.cpp, depthwise.cpp)."""
    x_shape = tuple(int(v) for v in x_shape)
    g = _conv_geometry("conv2d_backward_data", grad, w, x_shape, w.shape, stride, padding, dilation, groups)
    if g is None:
        return numpy_ref.conv2d_backward_data(grad, w, x_shape, stride, padding, dilation, groups)
    _check_output_grad("conv2d_backward_data", grad, g)
    dx = np.empty(x_shape, grad.dtype)
    _C.conv2d_backward_data(grad, w, dx, g)
    return dx


def conv2d_backward_weight(grad, x, w_shape, stride, padding, dilation, groups):
    """numpy_ref.conv2d_backward_weight in C++ (conv.cpp, depthwise.cpp)."""
    w_shape = tuple(int(v) for v in w_shape)
    g = _conv_geometry("conv2d_backward_weight", grad, x, x.shape, w_shape, stride, padding, dilation, groups)
    if g is None:
        return numpy_ref.conv2d_backward_weight(grad, x, w_shape, stride, padding, dilation, groups)
    _check_output_grad("conv2d_backward_weight", grad, g)
    dw = np.empty(w_shape, grad.dtype)
    _C.conv2d_backward_weight(grad, x, dw, g)
    return dw


# ---------------------------------------------------------------- pooling (pool.cpp)

def _pool_geometry(op, x, x_shape, kernel, stride, padding, dilation=(1, 1)):
    """The ConvGeometry of a pooling for the C++ kernels, or None for the reference; a ValueError naming op
    for a window no pooling has."""
    if not (isinstance(x, np.ndarray) and x.dtype in FLOAT_DTYPES and len(x_shape) == 4):
        return None
    g = pool_geometry(x_shape, kernel, stride, padding, dilation)
    if g.empty():
        return None
    problem = g.problem()
    if problem:
        raise ValueError(f"{op}: {problem}")
    return g


def _check_pooled(op, g, *arrays):
    """A ValueError naming op unless each array has one element per output of the pooling."""
    if any(a.size != g.N * g.C * g.OH * g.OW for a in arrays):
        shapes = " / ".join(str(np.shape(a)) for a in arrays)
        raise ValueError(f"{op}: {shapes} should have the pooled shape {(g.N, g.C, g.OH, g.OW)}")


def max_pool2d(x, kernel, stride, padding, dilation=(1, 1)):
    """numpy_ref.max_pool2d in C++: (out, winner), winner the window offset i*kw + j of the max."""
    g = _pool_geometry("max_pool2d", x, x.shape, kernel, stride, padding, dilation)
    if g is None:
        return numpy_ref.max_pool2d(x, kernel, stride, padding, dilation)
    out = np.empty((g.N, g.C, g.OH, g.OW), x.dtype)
    winner = np.empty((g.N, g.C, g.OH * g.OW), np.int64)
    _C.max_pool2d(x, out, winner, g)
    return out, winner.astype(np.intp, copy=False)


def max_pool2d_backward(grad, winner, x_shape, kernel, stride, padding, dilation=(1, 1)):
    """numpy_ref.max_pool2d_backward in C++ (winner from either implementation)."""
    x_shape = tuple(int(v) for v in x_shape)
    winner = np.asarray(winner)
    g = _pool_geometry("max_pool2d_backward", grad, x_shape, kernel, stride, padding, dilation)
    if g is None or winner.dtype.kind not in "iu":
        return numpy_ref.max_pool2d_backward(grad, winner, x_shape, kernel, stride, padding, dilation)
    _check_pooled("max_pool2d_backward", g, grad, winner)
    dx = np.empty(x_shape, grad.dtype)
    _C.max_pool2d_backward(grad, _int64(winner), dx, g)
    return dx


def avg_pool2d(x, kernel, stride, padding):
    """numpy_ref.avg_pool2d in C++ (padding counts as zeros)."""
    g = _pool_geometry("avg_pool2d", x, x.shape, kernel, stride, padding)
    if g is None:
        return numpy_ref.avg_pool2d(x, kernel, stride, padding)
    out = np.empty((g.N, g.C, g.OH, g.OW), x.dtype)
    _C.avg_pool2d(x, out, g)
    return out


def avg_pool2d_backward(grad, x_shape, kernel, stride, padding):
    """numpy_ref.avg_pool2d_backward in C++."""
    x_shape = tuple(int(v) for v in x_shape)
    g = _pool_geometry("avg_pool2d_backward", grad, x_shape, kernel, stride, padding)
    if g is None:
        return numpy_ref.avg_pool2d_backward(grad, x_shape, kernel, stride, padding)
    _check_pooled("avg_pool2d_backward", g, grad)
    dx = np.empty(x_shape, grad.dtype)
    _C.avg_pool2d_backward(grad, dx, g)
    return dx


# ---------------------------------------------------------------- resizing (resize.cpp)

def _resize_sizes(op, x_shape, out_shape):
    """(planes, H, W, h, w) of a resize of x_shape (N, C, H, W) to out_shape (N, C, h, w); a ValueError naming op
    for shapes that are not that."""
    x_shape, out_shape = tuple(int(n) for n in x_shape), tuple(int(n) for n in out_shape)
    if len(x_shape) != 4 or len(out_shape) != 4 or x_shape[:2] != out_shape[:2] or min(x_shape[2:] + out_shape[2:]) < 1:
        raise ValueError(f"{op}: resizes (N, C, H, W) to (N, C, h, w) with H, W, h, w >= 1, got {x_shape} -> "
                         f"{out_shape} "
                         f"(add a batch dim with x[None]; a gradient has the output's shape)")
    N, C, H, W = x_shape
    return N * C, H, W, out_shape[2], out_shape[3]


def _linear_maps(in_sizes, out_sizes, align_corners, scales, dtype):
    """The bilinear kernels' maps: rows [y0; y1] (2, h), their weights wy (h,), cols [x0; x1] (2, w), wx (w,)."""
    (y0, y1, wy), (x0, x1, wx) = (numpy_ref.linear_source_index(n, m, s, align_corners, dtype)
                                  for n, m, s in zip(in_sizes, out_sizes, scales))
    return _int64(np.stack([y0, y1])), wy, _int64(np.stack([x0, x1])), wx


def upsample_nearest2d(x, size, scales=(None, None)):
    """numpy_ref.upsample_nearest2d in C++ (csrc/cpu/resize.cpp); other dtypes (integer masks) in numpy."""
    out_shape = x.shape[:2] + tuple(size)
    planes, H, W, h, w = _resize_sizes("upsample_nearest2d", x.shape, out_shape)
    if not _same_float(x):
        return numpy_ref.upsample_nearest2d(x, (h, w), scales)
    rows, cols = (_int64(numpy_ref.nearest_source_index(n, m, s)) for n, m, s in zip((H, W), (h, w), scales))
    out = np.empty((*x.shape[:2], h, w), x.dtype)
    _C.upsample_nearest2d(x, out, rows, cols, planes, H, W, h, w)
    return out


def upsample_nearest2d_backward(grad, x_shape, scales=(None, None)):
    """numpy_ref.upsample_nearest2d_backward in C++ (resize.cpp): a deterministic scatter-add."""
    planes, H, W, h, w = _resize_sizes("upsample_nearest2d_backward", x_shape, grad.shape)
    if not _same_float(grad):
        return numpy_ref.upsample_nearest2d_backward(grad, x_shape, scales)
    rows, cols = (_int64(numpy_ref.nearest_source_index(n, m, s)) for n, m, s in zip((H, W), (h, w), scales))
    dx = np.empty(tuple(x_shape), grad.dtype)
    _C.upsample_nearest2d_backward(grad, dx, rows, cols, planes, H, W, h, w)
    return dx


def upsample_bilinear2d(x, size, align_corners, scales=(None, None)):
    """numpy_ref.upsample_bilinear2d in C++ (resize.cpp) for float32 and float64."""
    out_shape = x.shape[:2] + tuple(size)
    planes, H, W, h, w = _resize_sizes("upsample_bilinear2d", x.shape, out_shape)
    if not _same_float(x):
        return numpy_ref.upsample_bilinear2d(x, (h, w), align_corners, scales)
    out = np.empty((*x.shape[:2], h, w), x.dtype)
    _C.upsample_bilinear2d(x, out, *_linear_maps((H, W), (h, w), align_corners, scales, x.dtype),
                           planes, H, W, h, w)
    return out


def upsample_bilinear2d_backward(grad, x_shape, align_corners, scales=(None, None)):
    """numpy_ref.upsample_bilinear2d_backward in C++ (resize.cpp): the forward's weights transposed."""
    planes, H, W, h, w = _resize_sizes("upsample_bilinear2d_backward", x_shape, grad.shape)
    if not _same_float(grad):
        return numpy_ref.upsample_bilinear2d_backward(grad, x_shape, align_corners, scales)
    dx = np.empty(tuple(x_shape), grad.dtype)
    _C.upsample_bilinear2d_backward(grad, dx, *_linear_maps((H, W), (h, w), align_corners, scales, grad.dtype),
                                    planes, H, W, h, w)
    return dx


# ---------------------------------------------------------------- batch norm (batchnorm.cpp)

def _channel_dims(op, x, *same_shape, **vectors):
    """(N, C, S): x (N, C, ...) viewed as (N, C, S). A ValueError naming op unless each of
    same_shape (name, array) has x's shape and each per-channel vector has shape (C,)."""
    N, C = x.shape[0], x.shape[1]
    for name, a in same_shape:
        if a.shape != x.shape:
            raise ValueError(f"{op}: {name} {a.shape} does not match x {x.shape}")
    for name, v in vectors.items():
        if v.shape != (C,):
            raise ValueError(f"{op}: {name} {v.shape} should be ({C},), one value per channel of x {x.shape}")
    return N, C, x.size // (N * C)


def batch_norm(x, weight, bias, eps):
    """numpy_ref.batch_norm in C++ (csrc/cpu/batchnorm.cpp): (y, mean, var, invstd)."""
    if not _same_float(x, weight, bias) or x.ndim < 2 or x.size == 0:
        return numpy_ref.batch_norm(x, weight, bias, eps)
    N, C, S = _channel_dims("batch_norm", x, weight=weight, bias=bias)
    y = np.empty(x.shape, x.dtype)
    mean, var, invstd = np.empty((3, C), x.dtype)
    _C.batch_norm(x, weight, bias, eps, y, mean, var, invstd, N, C, S)
    return y, mean, var, invstd


def batch_norm_backward(grad, x, weight, mean, invstd):
    """numpy_ref.batch_norm_backward in C++: (dx, dweight, dbias)."""
    if not _same_float(grad, x, weight, mean, invstd) or x.ndim < 2 or x.size == 0:
        return numpy_ref.batch_norm_backward(grad, x, weight, mean, invstd)
    N, C, S = _channel_dims("batch_norm_backward", x, ("grad", grad), weight=weight, mean=mean, invstd=invstd)
    dx = np.empty(x.shape, x.dtype)
    dweight, dbias = np.empty((2, C), x.dtype)
    _C.batch_norm_backward(grad, x, weight, mean, invstd, dx, dweight, dbias, N, C, S)
    return dx, dweight, dbias


def channel_affine(x, scale, shift, activation=None):
    """numpy_ref.channel_affine in C++ (batchnorm.cpp): batch norm in eval mode and its activation, one pass."""
    act = activation_code("channel_affine", activation)
    if not _same_float(x, scale, shift) or x.ndim < 2 or x.size == 0:
        return numpy_ref.channel_affine(x, scale, shift, activation)
    N, C, S = _channel_dims("channel_affine", x, scale=scale, shift=shift)
    y = np.empty(x.shape, x.dtype)
    _C.channel_affine(x, scale, shift, act, y, N, C, S)
    return y


def channel_affine_backward(grad, x, y, scale, activation=None):
    """numpy_ref.channel_affine_backward in C++: (dx, dscale, dshift), one pass."""
    act = activation_code("channel_affine_backward", activation)
    if not _same_float(grad, x, y, scale) or x.ndim < 2 or x.size == 0:
        return numpy_ref.channel_affine_backward(grad, x, y, scale, activation)
    N, C, S = _channel_dims("channel_affine_backward", x, ("grad", grad), ("y", y), scale=scale)
    dx = np.empty(x.shape, x.dtype)
    dscale, dshift = np.empty((2, C), x.dtype)
    _C.channel_affine_backward(grad, x, y, scale, act, dx, dscale, dshift, N, C, S)
    return dx, dscale, dshift


# ---------------------------------------------------------------- softmax and cross-entropy (softmax.cpp)

def _over_last_axis(x, axis):
    return (isinstance(x, np.ndarray) and x.dtype in FLOAT_DTYPES and x.ndim >= 1 and x.size > 0
            and isinstance(axis, (int, np.integer)) and axis in (-1, x.ndim - 1))


def softmax(x, axis):
    """numpy_ref.softmax; over the last axis in C++ (csrc/cpu/softmax.cpp), other axes in numpy."""
    if not _over_last_axis(x, axis):
        return numpy_ref.softmax(x, axis)
    y = np.empty(x.shape, x.dtype)
    _C.softmax(x, y, x.size // x.shape[-1], x.shape[-1], False)
    return y


def log_softmax(x, axis):
    """numpy_ref.log_softmax; over the last axis in C++, other axes in numpy."""
    if not _over_last_axis(x, axis):
        return numpy_ref.log_softmax(x, axis)
    y = np.empty(x.shape, x.dtype)
    _C.softmax(x, y, x.size // x.shape[-1], x.shape[-1], True)
    return y


def cross_entropy(logits, target):
    """numpy_ref.cross_entropy in C++ (softmax.cpp): (loss, dlogits), one pass over the logits.

    A target that is not a class index in [0, C) is an IndexError.
    """
    if not (isinstance(logits, np.ndarray) and logits.dtype in FLOAT_DTYPES and logits.ndim == 2
            and logits.shape[1] > 0 and isinstance(target, np.ndarray) and target.dtype.kind in "iu"):
        return numpy_ref.cross_entropy(logits, target)
    N, C = logits.shape
    if target.shape != (N,):
        raise ValueError(f"cross_entropy: target {target.shape} should be ({N},), one class per row of "
                         f"logits {logits.shape}")
    loss, dlogits = np.empty(N, logits.dtype), np.empty((N, C), logits.dtype)
    _C.cross_entropy(logits, _int64(target), loss, dlogits, N, C)
    return loss, dlogits


# ---------------------------------------------------------------- activations' backward (elementwise.cpp)

def relu_backward(grad, y):
    """numpy_ref.relu_backward in C++ (csrc/cpu/elementwise.cpp) for same-shape float arrays."""
    if not (_same_float(grad, y) and grad.shape == y.shape):
        return numpy_ref.relu_backward(grad, y)
    dx = np.empty(y.shape, y.dtype)
    _C.relu_backward(grad, y, dx, dx.size)
    return dx


def dropout_mask(shape, p, seed, dtype=np.float32):
    """numpy_ref.dropout_mask in C++ (csrc/cpu/elementwise.cpp): SplitMix64 per element, as on the GPU."""
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        return numpy_ref.dropout_mask(shape, p, seed, dtype)
    out = np.empty(shape, dtype)
    _C.dropout_mask(out, out.size, int(seed) % 2 ** 64, p, 1 / (1 - p))
    return out


def clamp_backward(grad, x, lo, hi):
    """numpy_ref.clamp_backward in C++ (csrc/cpu/elementwise.cpp): ReLU6's backward in EfficientNet."""
    if not (_same_float(grad, x) and grad.shape == x.shape):
        return numpy_ref.clamp_backward(grad, x, lo, hi)
    dx = np.empty(x.shape, x.dtype)
    _C.clamp_backward(grad, x, dx, dx.size, -math.inf if lo is None else lo, math.inf if hi is None else hi)
    return dx


# ---------------------------------------------------------------- the LSTM (lstm.cpp)

def _lstm_dims(op, x, w_hh):
    """(T, B, I, H) from x (T, B, I) and w_hh (4H, H); a ValueError naming op for other shapes."""
    if x.ndim != 3 or w_hh.ndim != 2 or w_hh.shape[0] != 4 * w_hh.shape[1]:
        raise ValueError(f"{op}: needs x (T, B, I) and w_hh (4H, H), got x {x.shape} and w_hh {w_hh.shape}")
    return x.shape + (w_hh.shape[1],)


def _check_lstm_shapes(op, x, **arrays):
    """A ValueError naming op unless each name=(array, shape) has that shape."""
    for name, (a, want) in arrays.items():
        if a.shape != want:
            raise ValueError(f"{op}: {name} {a.shape} should be {want} for x {x.shape} (T, B, I)")


def lstm_forward(x, h0, c0, w_ih, w_hh, bias):
    """numpy_ref.lstm_forward in C++ (csrc/cpu/lstm.cpp): (hs, cs, gates), the time loop over fused gates."""
    if not _same_float(x, h0, c0, w_ih, w_hh, *(() if bias is None else (bias,))) or 0 in x.shape + h0.shape:
        return numpy_ref.lstm_forward(x, h0, c0, w_ih, w_hh, bias)
    T, B, I, H = _lstm_dims("lstm_forward", x, w_hh)
    if bias is None:
        bias = np.zeros(4 * H, x.dtype)
    _check_lstm_shapes("lstm_forward", x, h0=(h0, (B, H)), c0=(c0, (B, H)), w_ih=(w_ih, (4 * H, I)),
                       bias=(bias, (4 * H,)))
    hs, cs = np.empty((2, T + 1, B, H), x.dtype)
    gates = np.empty((T, B, 4 * H), x.dtype)
    _C.lstm_forward(x, h0, c0, w_ih, w_hh, bias, hs, cs, gates, T, B, I, H)
    return hs, cs, gates


def lstm_backward(d_out, d_cT, x, w_ih, w_hh, hs, cs, gates):
    """numpy_ref.lstm_backward in C++ (lstm.cpp): (dx, dh0, dc0, dw_ih, dw_hh, dbias), backpropagation through time."""
    if not _same_float(d_out, d_cT, x, w_ih, w_hh, hs, cs, gates) or 0 in x.shape + hs.shape:
        return numpy_ref.lstm_backward(d_out, d_cT, x, w_ih, w_hh, hs, cs, gates)
    T, B, I, H = _lstm_dims("lstm_backward", x, w_hh)
    _check_lstm_shapes("lstm_backward", x, d_out=(d_out, (T, B, H)), d_cT=(d_cT, (B, H)), w_ih=(w_ih, (4 * H, I)),
                       hs=(hs, (T + 1, B, H)), cs=(cs, (T + 1, B, H)), gates=(gates, (T, B, 4 * H)))
    dx = np.empty(x.shape, x.dtype)
    dh0, dc0 = np.empty((2, B, H), x.dtype)
    dw_ih, dw_hh, dbias = np.empty(w_ih.shape, x.dtype), np.empty(w_hh.shape, x.dtype), np.empty(4 * H, x.dtype)
    _C.lstm_backward(d_out, d_cT, x, w_ih, w_hh, hs, cs, gates, dx, dh0, dc0, dw_ih, dw_hh, dbias, T, B, I, H)
    return dx, dh0, dc0, dw_ih, dw_hh, dbias


# ---------------------------------------------------------------- threads

def set_num_threads(n):
    """Use n threads in the C++ kernels (process-wide)."""
    _C.set_num_threads(n)


def get_num_threads():
    """The number of threads the C++ kernels use (OpenMP)."""
    return _C.get_num_threads()


# Every function above named like a numpy_ref kernel, which it replaces on the "cpu" device.
KERNELS = {name: fn for name, fn in list(globals().items())
           if callable(fn) and getattr(fn, "__module__", None) == __name__ and not name.startswith("_")
           and callable(getattr(numpy_ref, name, None))}
