"""The C++ kernels of csrc/cpu (the extension module minidl._C), with numpy semantics.

``KERNELS`` maps a kernel name to a function over numpy arrays; the "cpu" backend
uses it in place of the reference kernel of the same name in numpy_ref.py.
"""
import math
import os

import numpy as np

from . import numpy_ref

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
# unless MINIDL_KEEP_MEMORY=0.  (csrc/cpu/bindings.cpp, keep_freed_memory.)
MALLOC_TUNED = os.environ.get("MINIDL_KEEP_MEMORY", "1") != "0" and _C.keep_freed_memory()


def matmul(a, b):
    """(..., M, K) @ (..., K, N) -> (..., M, N), exactly numpy.matmul; batch dims broadcast.

    float32/float64 run csrc/cpu/matmul.cpp, which reads 2-D and 3-D operands with any
    strides (a transposed view costs no copy); other dtypes (and 1-D operands) use numpy.matmul.
    """
    if a.ndim < 2 or b.ndim < 2 or a.dtype != b.dtype or a.dtype not in FLOAT_DTYPES:
        return np.matmul(a, b)
    if a.ndim == 2 and b.ndim == 2:  # the common case (a Linear layer): no batch to broadcast
        if a.shape[1] != b.shape[0]:
            raise ValueError(f"matmul: {a.shape} @ {b.shape}: inner dims {a.shape[1]} and {b.shape[0]} differ")
        return _C.matmul(a, b)
    (m, k), (k2, n) = a.shape[-2:], b.shape[-2:]
    if k != k2:
        raise ValueError(f"matmul: {a.shape} @ {b.shape}: inner dims {k} and {k2} differ")
    try:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: {a.shape} @ {b.shape}: batch dims {a.shape[:-2]} and "
                         f"{b.shape[:-2]} do not broadcast") from None
    if math.prod(b.shape[:-2]) == 1:
        # One shared right operand (a layer's weight): all of a's rows in one (batch*M, K) @ (K, N).
        # (reshape gives views where the strides allow, copies otherwise)
        rows = math.prod(a.shape[:-1])
        out = _C.matmul(a.reshape(1, rows, k), b.reshape(1, k, n))
    else:
        nb = math.prod(batch)
        a3 = np.ascontiguousarray(np.broadcast_to(a, batch + (m, k))).reshape(nb, m, k)
        b3 = np.ascontiguousarray(np.broadcast_to(b, batch + (k, n))).reshape(nb, k, n)
        out = _C.matmul(a3, b3)
    return out.reshape(batch + (m, n))


def _contiguous_float(*arrays):
    """True when every array is a C-contiguous, writable float32/float64 array of one dtype.

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


def sgd_step(param, grad, momentum_buf, lr, momentum, weight_decay, nesterov, dampening=0.0):
    """numpy_ref.sgd_step, fused in one pass (csrc/cpu/optim.cpp); same in-place semantics and return.

    Layouts the kernel cannot update in place (non-contiguous param or buffer, mixed dtypes,
    a grad that only broadcasts) use the reference kernel.
    """
    momentum = float(momentum)
    inplace = (param,) if momentum == 0 or momentum_buf is None else (param, momentum_buf)
    if (not _contiguous_float(*inplace) or not isinstance(grad, np.ndarray) or grad.dtype != param.dtype
            or grad.shape != param.shape):
        return numpy_ref.sgd_step(param, grad, momentum_buf, lr, momentum, weight_decay, nesterov, dampening)
    return _C.sgd_step(param, grad, momentum_buf, float(lr), momentum, float(weight_decay), bool(nesterov),
                       float(dampening))


def adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """numpy_ref.adam_step (Adam / AdamW), fused in one pass (csrc/cpu/optim.cpp), in place."""
    step = int(step)
    if step < 1:
        raise ValueError(f"adam_step: step={step}, but steps count from 1 (the first update is step 1)")
    if (not _contiguous_float(param, exp_avg, exp_avg_sq) or not isinstance(grad, np.ndarray)
            or grad.dtype != param.dtype or grad.shape != param.shape
            or exp_avg.shape != param.shape or exp_avg_sq.shape != param.shape):
        return numpy_ref.adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay,
                                   decoupled)
    _C.adam_step(param, grad, exp_avg, exp_avg_sq, step, float(lr), float(beta1), float(beta2), float(eps),
                 float(weight_decay), bool(decoupled))


def embedding(weight, ids):
    """weight[ids] (csrc/cpu/embedding.cpp) for a 2-D float table and integer ids; else numpy_ref."""
    ids = np.asarray(ids)
    if weight.ndim != 2 or weight.dtype not in FLOAT_DTYPES or ids.dtype.kind not in "iu":
        return numpy_ref.embedding(weight, ids)
    return _C.embedding(weight, ids)


def embedding_backward(grad, ids, num_embeddings):
    """numpy_ref.embedding_backward: a deterministic, thread-parallel scatter-add (embedding.cpp)."""
    ids = np.asarray(ids)
    if (grad.dtype not in FLOAT_DTYPES or ids.dtype.kind not in "iu" or grad.ndim < 1
            or grad.shape[:-1] != ids.shape):
        return numpy_ref.embedding_backward(grad, ids, num_embeddings)
    return _C.embedding_backward(grad, ids, int(num_embeddings))


def _pair_ok(*pairs):
    return all(len(p) == 2 and all(int(v) == v for v in p) for p in pairs)


def _float_pair(a, b):
    return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype and a.dtype in FLOAT_DTYPES


def _fits(x_shape, kernel, stride, padding, dilation):
    """True when the convolution / pooling window gives a non-empty output of a non-empty input."""
    if len(x_shape) != 4 or min(x_shape) < 1 or min(kernel) < 1 or min(stride) < 1 or min(dilation) < 1:
        return False
    if min(padding) < 0:
        return False
    return all(numpy_ref.conv_out_size(x_shape[2 + a], kernel[a], stride[a], padding[a], dilation[a]) >= 1
               for a in (0, 1))


def _conv_ok(x_shape, w_shape, stride, padding, dilation, groups):
    return (len(w_shape) == 4 and _pair_ok(stride, padding, dilation) and int(groups) >= 1
            and len(x_shape) == 4 and x_shape[1] % groups == 0 and w_shape[0] % groups == 0
            and w_shape[1] * groups == x_shape[1] and _fits(x_shape, w_shape[2:], stride, padding, dilation))


def conv2d(x, w, stride, padding, dilation, groups):
    """numpy_ref.conv2d in C++ (csrc/cpu/conv.cpp: im2col + matmul, or direct for depthwise)."""
    if not _float_pair(x, w) or not _conv_ok(x.shape, w.shape, stride, padding, dilation, groups):
        return numpy_ref.conv2d(x, w, stride, padding, dilation, groups)
    return _C.conv2d(x, w, tuple(stride), tuple(padding), tuple(dilation), int(groups))


def conv2d_backward_data(grad, w, x_shape, stride, padding, dilation, groups):
    """numpy_ref.conv2d_backward_data in C++ (conv.cpp)."""
    x_shape = tuple(int(v) for v in x_shape)
    if not _float_pair(grad, w) or not _conv_ok(x_shape, w.shape, stride, padding, dilation, groups):
        return numpy_ref.conv2d_backward_data(grad, w, x_shape, stride, padding, dilation, groups)
    return _C.conv2d_backward_data(grad, w, x_shape, tuple(stride), tuple(padding), tuple(dilation), int(groups))


def conv2d_backward_weight(grad, x, w_shape, stride, padding, dilation, groups):
    """numpy_ref.conv2d_backward_weight in C++ (conv.cpp)."""
    w_shape = tuple(int(v) for v in w_shape)
    if not _float_pair(grad, x) or not _conv_ok(x.shape, w_shape, stride, padding, dilation, groups):
        return numpy_ref.conv2d_backward_weight(grad, x, w_shape, stride, padding, dilation, groups)
    return _C.conv2d_backward_weight(grad, x, w_shape, tuple(stride), tuple(padding), tuple(dilation), int(groups))


def _pool_ok(x, x_shape, kernel, stride, padding, dilation=(1, 1)):
    return (isinstance(x, np.ndarray) and x.dtype in FLOAT_DTYPES and _pair_ok(kernel, stride, padding, dilation)
            and _fits(tuple(x_shape), kernel, stride, padding, dilation))


def max_pool2d(x, kernel, stride, padding, dilation=(1, 1)):
    """numpy_ref.max_pool2d in C++: (out, winner), winner the window offset i*kw + j of the max."""
    if not _pool_ok(x, x.shape, kernel, stride, padding, dilation):
        return numpy_ref.max_pool2d(x, kernel, stride, padding, dilation)
    out, winner = _C.max_pool2d(x, tuple(kernel), tuple(stride), tuple(padding), tuple(dilation))
    return out, winner.astype(np.intp, copy=False)


def max_pool2d_backward(grad, winner, x_shape, kernel, stride, padding, dilation=(1, 1)):
    """numpy_ref.max_pool2d_backward in C++ (winner from either implementation)."""
    x_shape = tuple(int(v) for v in x_shape)
    if not _pool_ok(grad, x_shape, kernel, stride, padding, dilation) or np.asarray(winner).dtype.kind not in "iu":
        return numpy_ref.max_pool2d_backward(grad, winner, x_shape, kernel, stride, padding, dilation)
    return _C.max_pool2d_backward(grad, np.asarray(winner, dtype=np.int64), x_shape, tuple(kernel), tuple(stride),
                                  tuple(padding), tuple(dilation))


def avg_pool2d(x, kernel, stride, padding):
    """numpy_ref.avg_pool2d in C++ (padding counts as zeros)."""
    if not _pool_ok(x, x.shape, kernel, stride, padding):
        return numpy_ref.avg_pool2d(x, kernel, stride, padding)
    return _C.avg_pool2d(x, tuple(kernel), tuple(stride), tuple(padding))


def avg_pool2d_backward(grad, x_shape, kernel, stride, padding):
    """numpy_ref.avg_pool2d_backward in C++."""
    x_shape = tuple(int(v) for v in x_shape)
    if not _pool_ok(grad, x_shape, kernel, stride, padding):
        return numpy_ref.avg_pool2d_backward(grad, x_shape, kernel, stride, padding)
    return _C.avg_pool2d_backward(grad, x_shape, tuple(kernel), tuple(stride), tuple(padding))


def _same_float(*arrays):
    return all(isinstance(a, np.ndarray) for a in arrays) and arrays[0].dtype in FLOAT_DTYPES and all(
        a.dtype == arrays[0].dtype for a in arrays)


def batch_norm(x, weight, bias, eps):
    """numpy_ref.batch_norm in C++ (csrc/cpu/batchnorm.cpp): (y, mean, var, invstd)."""
    if not _same_float(x, weight, bias) or x.ndim < 2 or x.size == 0:
        return numpy_ref.batch_norm(x, weight, bias, eps)
    return _C.batch_norm(x, weight, bias, float(eps))


def batch_norm_backward(grad, x, weight, mean, invstd):
    """numpy_ref.batch_norm_backward in C++: (dx, dweight, dbias)."""
    if not _same_float(grad, x, weight, mean, invstd) or x.ndim < 2 or x.size == 0 or grad.shape != x.shape:
        return numpy_ref.batch_norm_backward(grad, x, weight, mean, invstd)
    return _C.batch_norm_backward(grad, x, weight, mean, invstd)


ACTIVATION_CODES = {None: 0, "relu": 1, "relu6": 2}  # csrc/cpu/kernels.h, enum Activation


def channel_affine(x, scale, shift, activation=None):
    """numpy_ref.channel_affine in C++ (batchnorm.cpp): batch norm in eval mode and its activation, one pass."""
    if not _same_float(x, scale, shift) or x.ndim < 2 or x.size == 0 or activation not in ACTIVATION_CODES:
        return numpy_ref.channel_affine(x, scale, shift, activation)
    return _C.channel_affine(x, scale, shift, ACTIVATION_CODES[activation])


def channel_affine_backward(grad, x, y, scale, activation=None):
    """numpy_ref.channel_affine_backward in C++: (dx, dscale, dshift), one pass."""
    if (not _same_float(grad, x, y, scale) or x.ndim < 2 or x.size == 0 or grad.shape != x.shape
            or y.shape != x.shape or activation not in ACTIVATION_CODES):
        return numpy_ref.channel_affine_backward(grad, x, y, scale, activation)
    return _C.channel_affine_backward(grad, x, y, scale, ACTIVATION_CODES[activation])


def _last_axis(x, axis):
    return (isinstance(x, np.ndarray) and x.dtype in FLOAT_DTYPES and x.ndim >= 1 and x.size > 0
            and isinstance(axis, (int, np.integer)) and axis in (-1, x.ndim - 1))


def softmax(x, axis):
    """numpy_ref.softmax; over the last axis in C++ (csrc/cpu/softmax.cpp), other axes in numpy."""
    if not _last_axis(x, axis):
        return numpy_ref.softmax(x, axis)
    return _C.softmax(x)


def log_softmax(x, axis):
    """numpy_ref.log_softmax; over the last axis in C++, other axes in numpy."""
    if not _last_axis(x, axis):
        return numpy_ref.log_softmax(x, axis)
    return _C.log_softmax(x)


def _class_targets(logits, target):
    return (isinstance(logits, np.ndarray) and logits.dtype in FLOAT_DTYPES and logits.ndim == 2
            and logits.shape[1] > 0 and isinstance(target, np.ndarray) and target.dtype.kind in "iu")


def cross_entropy(logits, target):
    """numpy_ref.cross_entropy in C++ (softmax.cpp): (loss, dlogits), one pass over the logits."""
    if not _class_targets(logits, target):
        return numpy_ref.cross_entropy(logits, target)
    return _C.cross_entropy(logits, target.astype(np.int64, copy=False))


def relu_backward(grad, y):
    """numpy_ref.relu_backward in C++ (csrc/cpu/elementwise.cpp) for same-shape float arrays."""
    if not (_same_float(grad, y) and grad.shape == y.shape):
        return numpy_ref.relu_backward(grad, y)
    return _C.relu_backward(grad, y)


def clamp_backward(grad, x, lo, hi):
    """numpy_ref.clamp_backward in C++ (csrc/cpu/elementwise.cpp): ReLU6's backward in EfficientNet."""
    if not (_same_float(grad, x) and grad.shape == x.shape):
        return numpy_ref.clamp_backward(grad, x, lo, hi)
    return _C.clamp_backward(grad, x, -math.inf if lo is None else lo, math.inf if hi is None else hi)


def set_num_threads(n):
    """Use n threads in the C++ kernels (process-wide)."""
    _C.set_num_threads(n)


def get_num_threads():
    """The number of threads the C++ kernels use (OpenMP)."""
    return _C.get_num_threads()


KERNELS = {
    "matmul": matmul,
    "sgd_step": sgd_step,
    "adam_step": adam_step,
    "embedding": embedding,
    "embedding_backward": embedding_backward,
    "conv2d": conv2d,
    "conv2d_backward_data": conv2d_backward_data,
    "conv2d_backward_weight": conv2d_backward_weight,
    "max_pool2d": max_pool2d,
    "max_pool2d_backward": max_pool2d_backward,
    "avg_pool2d": avg_pool2d,
    "avg_pool2d_backward": avg_pool2d_backward,
    "batch_norm": batch_norm,
    "batch_norm_backward": batch_norm_backward,
    "channel_affine": channel_affine,
    "channel_affine_backward": channel_affine_backward,
    "softmax": softmax,
    "log_softmax": log_softmax,
    "cross_entropy": cross_entropy,
    "relu_backward": relu_backward,
    "clamp_backward": clamp_backward,
}
