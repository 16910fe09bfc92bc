"""The "cuda" and "emu" devices: minidl's own CUDA kernels (csrc/cuda/*.cu), launched from Python.

``CudaKernels`` holds the host code: it checks shapes and dtypes, allocates outputs, picks
grid and block sizes and launches the kernels by name. It is written once against two
things it is given:

    device  xp (array module)   load_module(name) -> an object with get_function(kernel)
    "cuda"  cupy                cupy.RawModule(code=csrc/cuda/<name>.cu): NVRTC, cached by CuPy
    "emu"   numpy               emu.load_module(name): the same .cu compiled by g++ (emu.py)

so the code that runs on a GPU is exactly the code the CPU-only tests run on "emu".

The host code is grouped as csrc/cuda is: one class per kernel file (ElementwiseHost for
elementwise.cu, ..., OptimHost for optim.cu), each with the op codes of its file's enums above
it, and CudaKernels puts them together. The records shared with the kernels (the conv
geometry, the activation codes) come from kernel_types.py.

The kernels compute in float32, the GPU's working precision. Everything else (float64
for gradient checks, integer and boolean arrays, reshapes, indexing, concatenation)
is "glue": numpy_ref's functions with its ``np`` rebound to ``xp``, so on "cuda" they
run CuPy's library routines on the GPU and on "emu" they are numpy_ref itself.
Kernel arguments are arrays and numpy scalars (np.int32, np.int64, np.float32): the
scalar's type is the C type the kernel receives.
"""
import hashlib
import math
import types
from pathlib import Path

import numpy as np

from . import numpy_ref
from .kernel_types import activation_code, conv_geometry, pool_geometry

CUDA_DIR = Path(__file__).resolve().parents[2] / "csrc" / "cuda"
COMMON_DIR = CUDA_DIR.parent / "common"  # headers the .cu files share with csrc/cpu (#include "../common/...")
F32 = np.dtype(np.float32)
THREADS = 256  # threads per block of the 1-D (grid-stride) kernels


def i32(v):
    """v as a C int32 kernel argument (a numpy scalar, which CuPy and the emulator pass by value)."""
    return np.int32(v)


def i64(v):
    """v as a C int64 kernel argument."""
    return np.int64(v)


def f32(v):
    """v as a C float kernel argument."""
    return np.float32(v)


def reduction_threads(n):
    """Threads for a one-block-per-row reduction: a power of two in [32, 256], no more than the row needs."""
    return int(min(256, max(32, 1 << max(0, math.ceil(math.log2(max(n, 1)))))))


def rebound_reference(xp):
    """numpy_ref's kernels with ``np`` meaning ``xp``: the glue for ops without a CUDA kernel.

    The functions share one new globals dict, so a rebound function that calls a helper
    (conv2d calls _group_cols calls im2col) calls the rebound helper too.
    """
    if xp is np:
        return {k: v for k, v in vars(numpy_ref).items() if not k.startswith("_") and k not in ("np", "math")}
    rebound = dict(vars(numpy_ref), np=xp)
    for name, value in vars(numpy_ref).items():
        if isinstance(value, types.FunctionType):
            rebound[name] = types.FunctionType(value.__code__, rebound, name, value.__defaults__, value.__closure__)
        elif not name.startswith("_") and (isinstance(value, np.ufunc) or getattr(value, "__module__", "") == "numpy"):
            rebound[name] = getattr(xp, value.__name__)  # np.add -> xp.add, np.where -> xp.where
    return {k: v for k, v in rebound.items() if not k.startswith("_") and k not in ("np", "math", "__builtins__")}


class Launcher:
    """What every host class uses: loading and launching kernels, and the checks on their arguments."""

    def __init__(self, name, xp, load_module, max_blocks):
        self.name, self.xp, self.load_module = name, xp, load_module
        self.max_blocks = max_blocks  # grid cap for grid-stride kernels (the emulator runs blocks one by one)
        self._functions = {}
        self.glue = rebound_reference(xp)

    def function(self, module, kernel):
        """The compiled kernel ``kernel`` of csrc/cuda/<module>.cu, loaded once and cached."""
        key = (module, kernel)
        fn = self._functions.get(key)
        if fn is None:
            fn = self._functions[key] = self.load_module(module).get_function(kernel)
        return fn

    def launch(self, module, kernel, grid, block, args, shared_mem=0):
        """Run ``kernel`` on ``grid`` blocks of ``block`` threads, with ``shared_mem`` bytes of dynamic shared memory."""
        self.function(module, kernel)(grid, block, tuple(args), shared_mem=shared_mem)

    def launch_1d(self, module, kernel, n, args):
        """A grid-stride kernel over n elements: ceil(n / THREADS) blocks, at most max_blocks."""
        blocks = max(1, min(self.max_blocks, -(-n // THREADS)))
        self.launch(module, kernel, (blocks,), (THREADS,), args)

    def launch_rows(self, module, kernel, rows, row_length, args):
        """One block per row, with a shared-memory tree of reduction_threads(row_length) floats."""
        threads = reduction_threads(row_length)
        self.launch(module, kernel, (rows,), (threads,), args, shared_mem=threads * 4)

    def is_f32(self, *arrays):
        """True if every argument is a float32 array of this device: the case the CUDA kernels handle."""
        return all(isinstance(a, self.xp.ndarray) and a.dtype == F32 for a in arrays)

    def contiguous(self, a):
        """``a`` as a C-contiguous array of the same shape (the layout every kernel indexes)."""
        return self.xp.ascontiguousarray(a).reshape(a.shape)  # ascontiguousarray makes a 0-d array 1-d

    def _f32_operand(self, v):
        """A float32 array, or None when v would not keep a float32 result (a float64 or int array, say)."""
        if isinstance(v, self.xp.ndarray):
            return self.contiguous(v) if v.dtype == F32 else None
        if isinstance(v, (bool, int, float, np.float32)) and not isinstance(v, np.float64):
            return self.xp.asarray(v, dtype=F32)  # a Python number is "weak": float32 wins (numpy's rule)
        return None

    def geometry_array(self, g):
        """A kernel_types.ConvGeometry as conv.cu and pool.cu read it: an int32 array of its fields, in order."""
        return self.xp.asarray(g, dtype=np.int32)


# ---------------------------------------------------------------- elementwise.cu

# Op codes: elementwise.cu's enums, in order (tests/test_cuda_compile.py checks).
UNARY = {name: i for i, name in enumerate(
    ["neg", "exp", "log", "sqrt", "abs", "sign", "tanh", "sigmoid", "relu", "erf"])}
BINARY = {name: i for i, name in enumerate(["add", "sub", "mul", "div", "maximum", "minimum", "power",
                                            "relu_backward"])}


class ElementwiseHost:
    """csrc/cuda/elementwise.cu: unary math and broadcasting binary arithmetic, one kernel each with an op code."""
    KERNELS = ()  # (every op of UNARY and BINARY: see CudaKernels.namespace)

    def unary(self, op, x):
        """y = op(x) elementwise (elementwise.cu unary_f32) for float32; other dtypes use the reference glue."""
        if not self.is_f32(x):
            if op == "erf" and self.xp is not np:  # numpy_ref's erf is math.erf per element, on the host
                return self.xp.asarray(numpy_ref.erf(self.xp.asnumpy(x)))
            return self.glue[op](x)
        x = self.contiguous(x)
        out = self.xp.empty(x.shape, F32)
        if x.size:
            self.launch_1d("elementwise", "unary_f32", x.size, (i32(UNARY[op]), x, out, i64(x.size)))
        return out

    def binary(self, op, a, b):
        """out = op(a, b) elementwise (elementwise.cu); broadcasting reads each operand with stride 0 on broadcast axes."""
        a32, b32 = self._f32_operand(a), self._f32_operand(b)
        if a32 is None or b32 is None or not (isinstance(a, self.xp.ndarray) or isinstance(b, self.xp.ndarray)):
            if op == "relu_backward":  # a = grad, b = relu's output y
                return self.xp.where(b > 0, a, 0).astype(a.dtype, copy=False)
            return self.glue[op](a, b)
        shape = np.broadcast_shapes(a32.shape, b32.shape)
        out = self.xp.empty(shape, F32)
        if out.size == 0:
            return out
        ndim = max(len(shape), 1)
        meta = [*(shape or (1,)), *self._broadcast_strides(a32.shape, shape), *self._broadcast_strides(b32.shape, shape)]
        self.launch_1d("elementwise", "binary_f32", out.size,
                       (i32(BINARY[op]), a32, b32, out, i64(out.size), i32(ndim), self.xp.asarray(meta, dtype=np.int64)))
        return out

    @staticmethod
    def _broadcast_strides(shape, out_shape):
        """Element strides of a contiguous array of ``shape`` read as ``out_shape``: 0 on broadcast axes."""
        shape = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
        strides, step = [], 1
        for n in reversed(shape):
            strides.append(step if n != 1 else 0)
            step *= n
        return list(reversed(strides)) or [0]


# ---------------------------------------------------------------- reduce.cu

REDUCE = {"sum": 0, "max": 1, "min": 2, "mean": 3}  # block_reduce.cuh's enum


class ReduceHost:
    """csrc/cuda/reduce.cu: sum, max, min, mean over any axes, one block per output row."""
    KERNELS = ()  # (every op of REDUCE: see CudaKernels.namespace)

    def reduce(self, op, x, axis, keepdims):
        """op (sum, max, min, mean) over ``axis``: the reduced axes are moved last, one block reduces each row."""
        axes = tuple(range(x.ndim)) if axis is None else tuple(
            a % x.ndim for a in (axis if isinstance(axis, (tuple, list)) else (axis,)))
        kept = [d for d in range(x.ndim) if d not in axes]
        rows = math.prod(x.shape[d] for d in kept)
        R = math.prod(x.shape[d] for d in axes)
        if not self.is_f32(x) or not axes or rows == 0 or R == 0:
            return self.glue[op](x, axis=axis, keepdims=keepdims) if op != "mean" else \
                self.xp.mean(x, axis=axis, keepdims=keepdims)
        xt = self.contiguous(self.xp.transpose(x, kept + list(axes)))  # the reduced axes last: rows of R
        out = self.xp.empty(rows, F32)
        self.launch_rows("reduce", "reduce_rows", rows, R, (i32(REDUCE[op]), xt, out, i64(rows), i64(R)))
        shape = tuple(1 if d in axes else x.shape[d] for d in range(x.ndim)) if keepdims else \
            tuple(x.shape[d] for d in kept)
        return out.reshape(shape)


# ---------------------------------------------------------------- softmax.cu

SOFTMAX, LOG_SOFTMAX, LOGSUMEXP = 0, 1, 2  # softmax.cu's enum


class SoftmaxHost:
    """csrc/cuda/softmax.cu: softmax, log-softmax, logsumexp and fused cross-entropy, one block per row."""
    KERNELS = ("softmax", "log_softmax", "logsumexp", "cross_entropy")

    def _rows_last(self, x, axis):
        axis %= x.ndim
        xt = self.contiguous(self.xp.moveaxis(x, axis, -1))
        return axis, xt, xt.size // max(x.shape[axis], 1), x.shape[axis]

    def softmax_like(self, mode, x, axis):
        """softmax, log_softmax or logsumexp (``mode``) along ``axis``: the axis moved last, one block per row."""
        axis, xt, rows, C = self._rows_last(x, axis)
        out = self.xp.empty(xt.shape[:-1] if mode == LOGSUMEXP else xt.shape, F32)
        self.launch_rows("softmax", "softmax_rows", rows, C, (i32(mode), xt, out, i64(rows), i64(C)))
        return out if mode == LOGSUMEXP else self.xp.moveaxis(out, -1, axis)

    def softmax(self, x, axis):
        """e^(x - max) / sum e^(x - max) along ``axis`` (softmax.cu for float32)."""
        if not self.is_f32(x) or x.size == 0:
            return self.glue["softmax"](x, axis)
        return self.softmax_like(SOFTMAX, x, axis)

    def log_softmax(self, x, axis):
        """x - logsumexp(x) along ``axis`` (softmax.cu for float32)."""
        if not self.is_f32(x) or x.size == 0:
            return self.glue["log_softmax"](x, axis)
        return self.softmax_like(LOG_SOFTMAX, x, axis)

    def logsumexp(self, x, axis, keepdims=False):
        """max + log sum e^(x - max) along ``axis`` (softmax.cu for float32)."""
        if not self.is_f32(x) or x.size == 0:
            return self.glue["logsumexp"](x, axis, keepdims)
        out = self.softmax_like(LOGSUMEXP, x, axis)
        return self.xp.expand_dims(out, axis) if keepdims else out

    def cross_entropy(self, logits, target):
        """Per row: loss = logsumexp(logits) - logits[target] and its gradient softmax(logits) - onehot(target).

        logits (N, C) float32, target (N,) integer class indices -> (loss (N,), dlogits (N, C)),
        both from one fused kernel (numpy_ref.cross_entropy's contract).
        """
        if not self.is_f32(logits) or logits.ndim != 2:
            return self.glue["cross_entropy"](logits, target)
        logits = self.contiguous(logits)
        target = self.contiguous(target.astype(np.int64, copy=False))
        N, C = logits.shape
        loss, dlogits = self.xp.empty(N, F32), self.xp.empty((N, C), F32)
        if N and C:
            self.launch_rows("softmax", "cross_entropy_rows", N, C, (logits, target, loss, dlogits, i64(N), i64(C)))
        return loss, dlogits


# ---------------------------------------------------------------- matmul.cu


class MatmulHost:
    """csrc/cuda/matmul.cu: batched matmul (a naive and a tiled kernel); the GEMM of the convolutions too."""
    KERNELS = ("matmul",)

    def _operand(self, a):
        """(contiguous array, transposed?): a transposed view is read in place, not copied."""
        if a.flags.c_contiguous:
            return a, 0
        swapped = self.xp.swapaxes(a, -1, -2)
        if swapped.flags.c_contiguous:
            return swapped, 1
        return self.contiguous(a), 0

    def gemm(self, A, transA, B, transB, out, M, N, K, batch, strides, version="tiled"):
        """out[b] = op(A[b]) @ op(B[b]) for b < batch; strides = (A's, B's, out's) batch strides."""
        if version == "tiled":
            grid, block = (-(-N // 64), -(-M // 64), batch), (256,)
        else:
            grid, block = (-(-N // 16), -(-M // 16), batch), (16, 16)
        self.launch("matmul", f"matmul_{version}", grid, block,
                    (A, B, out, i32(M), i32(N), i32(K), i32(transA), i32(transB), *(i64(s) for s in strides)))

    def matmul(self, a, b, version="tiled"):
        """(..., M, K) @ (..., K, N) with broadcast batch dims, as numpy.matmul; float32 runs matmul.cu."""
        if not self.is_f32(a, b) or a.ndim < 2 or b.ndim < 2:
            return self.glue["matmul"](a, b)
        (M, K), (K2, N) = a.shape[-2:], b.shape[-2:]
        if K != K2:
            raise ValueError(f"matmul: {a.shape} @ {b.shape}: inner dims {K} and {K2} differ")
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        nb = math.prod(batch)
        out = self.xp.empty(batch + (M, N), F32)
        if out.size == 0:
            return out
        if K == 0:
            out[...] = 0
            return out
        operands = []
        for x, rows, cols in ((a, M, K), (b, K, N)):
            if math.prod(x.shape[:-2]) == 1:  # one matrix for the whole batch (a layer's weight): stride 0
                x, stride = x.reshape(rows, cols), 0
            else:  # a view when x already has the full batch shape, else a broadcast copy
                x, stride = self.xp.broadcast_to(x, batch + (rows, cols)).reshape(nb, rows, cols), rows * cols
            x, trans = self._operand(x)
            operands.append((x, trans, stride))
        (A, tA, sA), (B, tB, sB) = operands
        self.gemm(A, tA, B, tB, out, M, N, K, nb, (sA, sB, M * N), version)
        return out


# ---------------------------------------------------------------- conv.cu (with matmul.cu's GEMM)


class ConvHost:
    """csrc/cuda/conv.cu: im2col / col2im around MatmulHost.gemm, and the direct depthwise kernels."""
    KERNELS = ("conv2d", "conv2d_backward_data", "conv2d_backward_weight")

    def im2col(self, x, g):
        """x (N, C, H, W) -> cols (N, C*kh*kw, OH*OW): every input patch as a column (conv.cu im2col)."""
        cols = self.xp.empty((g.N, g.C * g.kh * g.kw, g.OH * g.OW), F32)
        self.launch_1d("conv", "im2col", cols.size, (x, cols, self.geometry_array(g)))
        return cols

    def _conv_ok(self, x, w, *pairs):
        return (self.is_f32(x, w) and x.ndim == 4 and w.ndim == 4 and x.size and w.size
                and all(len(p) == 2 for p in pairs))

    @staticmethod
    def _depthwise(g):
        """One input channel per output channel: conv.cu's direct kernels, no C tiny matmuls."""
        return g.groups == g.C and g.O == g.C

    def conv2d(self, x, w, stride, padding, dilation, groups):
        """im2col, then one batched matmul per group (depthwise: a direct kernel). See conv.cu."""
        if not self._conv_ok(x, w, stride, padding, dilation):
            return self.glue["conv2d"](x, w, stride, padding, dilation, groups)
        x, w = self.contiguous(x), self.contiguous(w)
        g = conv_geometry(x.shape, w.shape, stride, padding, dilation, groups)
        if self._depthwise(g):
            out = self.xp.empty((g.N, g.O, g.OH, g.OW), F32)
            self.launch_1d("conv", "depthwise_conv2d", out.size, (x, w, out, self.geometry_array(g)))
            return out
        G, Og, L = g.groups, g.O // g.groups, g.OH * g.OW
        CgKK = g.C // G * g.kh * g.kw
        cols = self.im2col(x, g).reshape(g.N, G, CgKK, L)
        cols_g = self.contiguous(cols.transpose(1, 0, 2, 3))      # (G, N, CgKK, L)
        w_g = w.reshape(G, Og, CgKK)
        out_g = self.xp.empty((G, g.N, Og, L), F32)
        for k in range(G):  # out[n, k] = w[k] @ cols[n, k], batched over n (w's batch stride 0)
            self.gemm(w_g[k], 0, cols_g[k], 0, out_g[k], Og, L, CgKK, g.N, (0, CgKK * L, Og * L))
        return self.contiguous(out_g.transpose(1, 0, 2, 3)).reshape(g.N, g.O, g.OH, g.OW)

    def conv2d_backward_data(self, grad, w, x_shape, stride, padding, dilation, groups):
        """dcols[n, g] = w[g]^T @ grad[n, g] (matmul with transA), then col2im gathers them back."""
        if not self._conv_ok(grad, w, stride, padding, dilation):
            return self.glue["conv2d_backward_data"](grad, w, x_shape, stride, padding, dilation, groups)
        w = self.contiguous(w)
        g = conv_geometry(x_shape, w.shape, stride, padding, dilation, groups)
        dx = self.xp.empty(tuple(x_shape), F32)
        if self._depthwise(g):  # a direct gather, no C tiny matmuls
            self.launch_1d("conv", "depthwise_conv2d_backward_data", dx.size,
                           (self.contiguous(grad), w, dx, self.geometry_array(g)))
            return dx
        G, Og, L = g.groups, g.O // g.groups, g.OH * g.OW
        CgKK = g.C // G * g.kh * g.kw
        grad_g = self.contiguous(grad.reshape(g.N, G, Og, L).transpose(1, 0, 2, 3))   # (G, N, Og, L)
        w_g = w.reshape(G, Og, CgKK)
        dcols_g = self.xp.empty((G, g.N, CgKK, L), F32)
        for k in range(G):
            self.gemm(w_g[k], 1, grad_g[k], 0, dcols_g[k], CgKK, L, Og, g.N, (0, Og * L, CgKK * L))
        dcols = self.contiguous(dcols_g.transpose(1, 0, 2, 3))
        self.launch_1d("conv", "col2im", dx.size, (dcols, dx, self.geometry_array(g)))
        return dx

    def conv2d_backward_weight(self, grad, x, w_shape, stride, padding, dilation, groups):
        """dw[g] = grad[g] (Og, N*L) @ cols[g]^T (N*L, CgKK): one matmul (transB) per group, batched."""
        if not self._conv_ok(grad, x, stride, padding, dilation):
            return self.glue["conv2d_backward_weight"](grad, x, w_shape, stride, padding, dilation, groups)
        x = self.contiguous(x)
        g = conv_geometry(x.shape, w_shape, stride, padding, dilation, groups)
        L = g.OH * g.OW
        if self._depthwise(g):  # one block per weight element
            dw = self.xp.empty(tuple(w_shape), F32)
            self.launch_rows("conv", "depthwise_conv2d_backward_weight", dw.size, g.N * L,
                             (self.contiguous(grad), x, dw, self.geometry_array(g)))
            return dw
        G, Og = g.groups, g.O // g.groups
        CgKK = g.C // G * g.kh * g.kw
        cols = self.im2col(x, g).reshape(g.N, G, CgKK, L)
        cols_k = self.contiguous(cols.transpose(1, 2, 0, 3))                         # (G, CgKK, N, L)
        grad_k = self.contiguous(grad.reshape(g.N, G, Og, L).transpose(1, 2, 0, 3))  # (G, Og, N, L)
        dw = self.xp.empty((G, Og, CgKK), F32)
        NL = g.N * L
        self.gemm(grad_k, 0, cols_k, 1, dw, Og, CgKK, NL, G, (Og * NL, CgKK * NL, Og * CgKK))
        return dw.reshape(w_shape)


# ---------------------------------------------------------------- pool.cu


class PoolHost:
    """csrc/cuda/pool.cu: max and average pooling, forward and backward."""
    KERNELS = ("max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward")

    def max_pool2d(self, x, kernel, stride, padding, dilation=(1, 1)):
        """(y, winner): the max over each window, and which window offset gave it (pool.cu)."""
        if not self.is_f32(x) or x.ndim != 4 or x.size == 0:
            return self.glue["max_pool2d"](x, kernel, stride, padding, dilation)
        x = self.contiguous(x)
        g = pool_geometry(x.shape, kernel, stride, padding, dilation)
        out = self.xp.empty((g.N, g.C, g.OH, g.OW), F32)
        winner = self.xp.empty((g.N, g.C, g.OH * g.OW), np.int64)
        self.launch_1d("pool", "max_pool2d_forward", out.size, (x, out, winner, self.geometry_array(g)))
        return out, winner

    def max_pool2d_backward(self, grad, winner, x_shape, kernel, stride, padding, dilation=(1, 1)):
        """dx: each output's gradient added to the input its window's winner came from (pool.cu)."""
        if not self.is_f32(grad) or len(x_shape) != 4:
            return self.glue["max_pool2d_backward"](grad, winner, x_shape, kernel, stride, padding, dilation)
        g = pool_geometry(x_shape, kernel, stride, padding, dilation)
        dx = self.xp.zeros(tuple(x_shape), F32)
        self.launch_1d("pool", "max_pool2d_backward", grad.size,
                       (self.contiguous(grad), self.contiguous(winner.astype(np.int64, copy=False)), dx,
                        self.geometry_array(g)))
        return dx

    def avg_pool2d(self, x, kernel, stride, padding):
        """The mean over each window, zero padding counted (pool.cu)."""
        if not self.is_f32(x) or x.ndim != 4 or x.size == 0:
            return self.glue["avg_pool2d"](x, kernel, stride, padding)
        x = self.contiguous(x)
        g = pool_geometry(x.shape, kernel, stride, padding)
        out = self.xp.empty((g.N, g.C, g.OH, g.OW), F32)
        self.launch_1d("pool", "avg_pool2d_forward", out.size, (x, out, self.geometry_array(g)))
        return out

    def avg_pool2d_backward(self, grad, x_shape, kernel, stride, padding):
        """dx: each input gets 1/(kh kw) of the gradient of every window covering it (pool.cu)."""
        if not self.is_f32(grad) or len(x_shape) != 4:
            return self.glue["avg_pool2d_backward"](grad, x_shape, kernel, stride, padding)
        g = pool_geometry(x_shape, kernel, stride, padding)
        dx = self.xp.zeros(tuple(x_shape), F32)
        self.launch_1d("pool", "avg_pool2d_backward", grad.size, (self.contiguous(grad), dx, self.geometry_array(g)))
        return dx


# ---------------------------------------------------------------- resize.cu


class ResizeHost:
    """csrc/cuda/resize.cu: nearest and bilinear resizing, forward and backward, through numpy_ref's maps."""
    KERNELS = ("upsample_nearest2d", "upsample_nearest2d_backward", "upsample_bilinear2d",
               "upsample_bilinear2d_backward")

    @staticmethod
    def _resize_sizes(x_shape, out_shape):
        """planes, H, W, h, w as the kernels take them (long long, then ints)."""
        N, C, H, W = x_shape
        return i64(N * C), i32(H), i32(W), i32(out_shape[2]), i32(out_shape[3])

    def _nearest_maps(self, x_shape, out_shape, scales):
        """rows (h,) and cols (w,): numpy_ref.nearest_source_index, computed on the host, as int64 device arrays."""
        return [self.xp.asarray(numpy_ref.nearest_source_index(n, m, s).astype(np.int64))
                for n, m, s in zip(x_shape[2:], out_shape[2:], scales)]

    def _linear_maps(self, x_shape, out_shape, align_corners, scales):
        """rows [y0; y1] (2, h), wy (h,), cols [x0; x1] (2, w), wx (w,): numpy_ref.linear_source_index in float32."""
        maps = []
        for n, m, s in zip(x_shape[2:], out_shape[2:], scales):
            i0, i1, w1 = numpy_ref.linear_source_index(n, m, s, align_corners, np.float32)
            maps += [self.xp.asarray(np.stack([i0, i1]).astype(np.int64)), self.xp.asarray(w1)]
        return maps

    def upsample_nearest2d(self, x, size, scales=(None, None)):
        """out[p, i, j] = x[p, rows[i], cols[j]] (resize.cu) for float32; other dtypes use the reference glue."""
        if not self.is_f32(x) or x.ndim != 4 or x.size == 0:
            return self.glue["upsample_nearest2d"](x, size, scales)
        x = self.contiguous(x)
        out = self.xp.empty((*x.shape[:2], *size), F32)
        self.launch_1d("resize", "upsample_nearest2d_forward", out.size,
                       (x, out, *self._nearest_maps(x.shape, out.shape, scales),
                        *self._resize_sizes(x.shape, out.shape)))
        return out

    def upsample_nearest2d_backward(self, grad, x_shape, scales=(None, None)):
        """dx: each output's gradient added onto the pixel it copied (resize.cu, atomic adds)."""
        if not self.is_f32(grad) or len(x_shape) != 4 or grad.size == 0:
            return self.glue["upsample_nearest2d_backward"](grad, x_shape, scales)
        dx = self.xp.zeros(tuple(x_shape), F32)
        self.launch_1d("resize", "upsample_nearest2d_backward", grad.size,
                       (self.contiguous(grad), dx, *self._nearest_maps(x_shape, grad.shape, scales),
                        *self._resize_sizes(x_shape, grad.shape)))
        return dx

    def upsample_bilinear2d(self, x, size, align_corners, scales=(None, None)):
        """Each output the weighted mean of its 2x2 input neighbours (resize.cu) for float32."""
        if not self.is_f32(x) or x.ndim != 4 or x.size == 0:
            return self.glue["upsample_bilinear2d"](x, size, align_corners, scales)
        x = self.contiguous(x)
        out = self.xp.empty((*x.shape[:2], *size), F32)
        self.launch_1d("resize", "upsample_bilinear2d_forward", out.size,
                       (x, out, *self._linear_maps(x.shape, out.shape, align_corners, scales),
                        *self._resize_sizes(x.shape, out.shape)))
        return out

    def upsample_bilinear2d_backward(self, grad, x_shape, align_corners, scales=(None, None)):
        """dx: each output's gradient shared among its 2x2 input neighbours by their weights (resize.cu)."""
        if not self.is_f32(grad) or len(x_shape) != 4 or grad.size == 0:
            return self.glue["upsample_bilinear2d_backward"](grad, x_shape, align_corners, scales)
        dx = self.xp.zeros(tuple(x_shape), F32)
        self.launch_1d("resize", "upsample_bilinear2d_backward", grad.size,
                       (self.contiguous(grad), dx, *self._linear_maps(x_shape, grad.shape, align_corners, scales),
                        *self._resize_sizes(x_shape, grad.shape)))
        return dx


# ---------------------------------------------------------------- batchnorm.cu


class BatchNormHost:
    """csrc/cuda/batchnorm.cu: batch norm with the batch's statistics, and channel_affine (eval mode + activation)."""
    KERNELS = ("batch_norm", "batch_norm_backward", "channel_affine", "channel_affine_backward")

    def batch_norm(self, x, weight, bias, eps):
        """y = (x - mean) * invstd * weight + bias with per-channel (axis 1) batch statistics;
        returns (y, mean, biased var, invstd = 1 / sqrt(var + eps)) (batchnorm.cu).
        """
        if not self.is_f32(x, weight, bias) or x.ndim < 2 or x.size == 0:
            return self.glue["batch_norm"](x, weight, bias, eps)
        x, weight, bias = self.contiguous(x), self.contiguous(weight), self.contiguous(bias)
        N, C = x.shape[:2]
        S = x.size // (N * C)
        mean, var, invstd = (self.xp.empty(C, F32) for _ in range(3))
        self.launch_rows("batchnorm", "batch_norm_stats", C, N * S,
                         (x, mean, var, invstd, i32(N), i32(C), i64(S), f32(eps)))
        y = self.xp.empty(x.shape, F32)
        self.launch_1d("batchnorm", "batch_norm_apply", x.size,
                       (x, weight, bias, mean, invstd, y, i64(x.size), i32(C), i64(S)))
        return y, mean, var, invstd

    def batch_norm_backward(self, grad, x, weight, mean, invstd):
        """(dx, dweight, dbias) of batch_norm: dbias = sum g, dweight = sum g xhat,
        dx = weight invstd (g - dbias/n - xhat dweight/n), sums per channel (batchnorm.cu).
        """
        if not self.is_f32(grad, x, weight, mean, invstd) or x.ndim < 2 or x.size == 0:
            return self.glue["batch_norm_backward"](grad, x, weight, mean, invstd)
        grad, x = self.contiguous(grad), self.contiguous(x)
        weight, mean, invstd = self.contiguous(weight), self.contiguous(mean), self.contiguous(invstd)
        N, C = x.shape[:2]
        S = x.size // (N * C)
        dweight, dbias = self.xp.empty(C, F32), self.xp.empty(C, F32)
        self.launch_rows("batchnorm", "batch_norm_backward_reduce", C, N * S,
                         (grad, x, mean, invstd, dweight, dbias, i32(N), i32(C), i64(S)))
        dx = self.xp.empty(x.shape, F32)
        self.launch_1d("batchnorm", "batch_norm_backward_apply", x.size,
                       (grad, x, weight, mean, invstd, dweight, dbias, dx, i64(x.size), i32(C), i64(S), i64(N * S)))
        return dx, dweight, dbias

    def channel_affine(self, x, scale, shift, activation=None):
        """y = act(x * scale[c] + shift[c]) over channel axis 1: batch norm in eval mode and its activation
        (None, "relu" or "relu6") in one pass (batchnorm.cu)."""
        act = activation_code("channel_affine", activation)
        if not self.is_f32(x, scale, shift) or x.ndim < 2 or x.size == 0:
            return self.glue["channel_affine"](x, scale, shift, activation)
        x, scale, shift = self.contiguous(x), self.contiguous(scale), self.contiguous(shift)
        N, C = x.shape[:2]
        y = self.xp.empty(x.shape, F32)
        self.launch_1d("batchnorm", "channel_affine", x.size,
                       (x, scale, shift, y, i64(x.size), i32(C), i64(x.size // (N * C)), i32(act)))
        return y

    def channel_affine_backward(self, grad, x, y, scale, activation=None):
        """(dx, dscale, dshift) of channel_affine, y its output; one block per channel (batchnorm.cu)."""
        act = activation_code("channel_affine_backward", activation)
        if (not self.is_f32(grad, x, y, scale) or x.ndim < 2 or x.size == 0 or grad.shape != x.shape
                or y.shape != x.shape):
            return self.glue["channel_affine_backward"](grad, x, y, scale, activation)
        grad, x, y, scale = (self.contiguous(a) for a in (grad, x, y, scale))
        N, C = x.shape[:2]
        S = x.size // (N * C)
        dx, dscale, dshift = self.xp.empty(x.shape, F32), self.xp.empty(C, F32), self.xp.empty(C, F32)
        self.launch_rows("batchnorm", "channel_affine_backward", C, N * S,
                         (grad, x, y, scale, dx, dscale, dshift, i32(N), i32(C), i64(S),
                          i32(act)))
        return dx, dscale, dshift


# ---------------------------------------------------------------- embedding.cu


class EmbeddingHost:
    """csrc/cuda/embedding.cu: row gather and its atomic scatter-add (and gather's scatter_add, from CuPy)."""
    KERNELS = ("embedding", "embedding_backward", "scatter_add")

    def _ids(self, ids, num_embeddings):
        ids = self.contiguous(self.xp.asarray(ids).astype(np.int64, copy=False))
        # A GPU reads out of bounds without a word; check first (one small device-to-host sync).
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= num_embeddings):
            raise IndexError(f"embedding: ids must be in [0, {num_embeddings - 1}], got values in "
                             f"[{int(ids.min())}, {int(ids.max())}]")
        return ids

    def embedding(self, weight, ids):
        """out[..., :] = weight[ids[...], :]: one row per id (embedding.cu gather)."""
        if not self.is_f32(weight) or weight.ndim != 2 or self.xp.asarray(ids).dtype.kind not in "iu":
            return self.glue["embedding"](weight, ids)
        weight = self.contiguous(weight)
        ids = self._ids(ids, weight.shape[0])
        D = weight.shape[1]
        out = self.xp.empty(ids.shape + (D,), F32)
        if out.size:
            self.launch_1d("embedding", "embedding_gather", out.size, (weight, ids, out, i64(ids.size), i64(D)))
        return out

    def embedding_backward(self, grad, ids, num_embeddings):
        """dweight (num_embeddings, D): each grad row added to its id's row (embedding.cu, an atomic scatter-add)."""
        if not self.is_f32(grad) or grad.ndim < 1 or self.xp.asarray(ids).dtype.kind not in "iu":
            return self.glue["embedding_backward"](grad, ids, num_embeddings)
        ids = self._ids(ids, num_embeddings)
        D = grad.shape[-1]
        grad = self.contiguous(grad)
        dweight = self.xp.zeros((num_embeddings, D), F32)
        if grad.size:
            self.launch_1d("embedding", "embedding_scatter_add", grad.size, (grad, ids, dweight, i64(ids.size), i64(D)))
        return dweight

    def scatter_add(self, shape, axis, index, values):
        """numpy_ref.scatter_add (gather's backward), built from what CuPy has (no np.indices(sparse=True))."""
        out = self.xp.zeros(shape, dtype=values.dtype)
        where = [self.xp.arange(n).reshape((-1,) + (1,) * (index.ndim - 1 - d)) for d, n in enumerate(index.shape)]
        where[axis] = index
        self.xp.add.at(out, tuple(where), values)
        return out


# ---------------------------------------------------------------- optim.cu


class OptimHost:
    """csrc/cuda/optim.cu: the fused SGD and Adam/AdamW updates, in place."""
    KERNELS = ("sgd_step", "adam_step")

    def _updatable(self, param, *others):
        return (self.is_f32(param, *others) and param.flags.c_contiguous
                and all(o.shape == param.shape and o.flags.c_contiguous for o in others))

    def sgd_step(self, param, grad, momentum_buf, lr, momentum, weight_decay, nesterov, dampening=0.0):
        """numpy_ref.sgd_step, fused into one kernel (optim.cu); same in-place semantics and return."""
        momentum = float(momentum)
        state = () if momentum == 0 or momentum_buf is None else (momentum_buf,)
        if not self._updatable(param, *state) or not self.is_f32(grad) or grad.shape != param.shape:
            return self.glue["sgd_step"](param, grad, momentum_buf, lr, momentum, weight_decay, nesterov, dampening)
        first = momentum != 0 and momentum_buf is None
        if first:
            momentum_buf = self.xp.empty_like(param)
        buf = momentum_buf if momentum != 0 else param  # never written when momentum == 0
        self.launch_1d("optim", "sgd_step", param.size,
                       (param, self.contiguous(grad), buf, i64(param.size), f32(lr), f32(momentum),
                        f32(weight_decay), i32(bool(nesterov)), f32(dampening), i32(first)))
        return momentum_buf

    def adam_step(self, param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled):
        """numpy_ref.adam_step (Adam / AdamW), fused into one kernel (optim.cu), in place."""
        step = int(step)
        if step < 1:
            raise ValueError(f"adam_step: step={step}, but steps count from 1 (the first update is step 1)")
        if not self._updatable(param, exp_avg, exp_avg_sq) or not self.is_f32(grad) or grad.shape != param.shape:
            return self.glue["adam_step"](param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps,
                                          weight_decay, decoupled)
        lr, beta1, beta2 = float(lr), float(beta1), float(beta2)
        step_size = lr / (1 - beta1 ** step)
        sqrt_bias_correction2 = math.sqrt(1 - beta2 ** step)
        self.launch_1d("optim", "adam_step", param.size,
                       (param, self.contiguous(grad), exp_avg, exp_avg_sq, i64(param.size), f32(lr), f32(beta1),
                        f32(beta2), f32(eps), f32(weight_decay), i32(bool(decoupled)), f32(step_size),
                        f32(sqrt_bias_correction2)))


# ---------------------------------------------------------------- lstm.cu (with matmul.cu's GEMM)


class LSTMHost:
    """csrc/cuda/lstm.cu: the LSTM's time loop, here on the host: per step one GEMM (matmul.cu) and one fused
    gate kernel; the products that do not wait for h are one GEMM each, over all steps."""
    KERNELS = ("lstm_forward", "lstm_backward")

    def lstm_forward(self, x, h0, c0, w_ih, w_hh, bias):
        """numpy_ref.lstm_forward: (hs, cs, gates) of one layer over x (T, B, I), time-major."""
        if not self.is_f32(x, h0, c0, w_ih, w_hh, *(() if bias is None else (bias,))) or 0 in x.shape + h0.shape:
            return self.glue["lstm_forward"](x, h0, c0, w_ih, w_hh, bias)
        (T, B, I), H = x.shape, h0.shape[1]
        bias = self.xp.zeros(4 * H, F32) if bias is None else self.contiguous(bias)
        w_hh_t = self.contiguous(w_hh).T                  # read in place by the GEMM (its transB flag)
        gates = self.matmul(self.contiguous(x).reshape(T * B, I), w_ih.T).reshape(T, B, 4 * H)  # x_t W_ih^T, all t
        hs, cs = self.xp.empty((T + 1, B, H), F32), self.xp.empty((T + 1, B, H), F32)
        hs[0], cs[0] = h0, c0
        for t in range(T):
            hproj = self.matmul(hs[t], w_hh_t)
            self.launch_1d("lstm", "lstm_gates_forward", B * H,
                           (gates[t], hproj, bias, cs[t], cs[t + 1], hs[t + 1], i32(B), i32(H)))
        return hs, cs, gates

    def lstm_backward(self, d_out, d_cT, x, w_ih, w_hh, hs, cs, gates):
        """numpy_ref.lstm_backward: (dx, dh0, dc0, dw_ih, dw_hh, dbias), backpropagation through time."""
        if not self.is_f32(d_out, d_cT, x, w_ih, w_hh, hs, cs, gates) or 0 in x.shape + hs.shape:
            return self.glue["lstm_backward"](d_out, d_cT, x, w_ih, w_hh, hs, cs, gates)
        (T, B, I), H = x.shape, hs.shape[2]
        d_out, w_ih, w_hh, hs, cs, gates = (self.contiguous(a) for a in (d_out, w_ih, w_hh, hs, cs, gates))
        dh, dc = self.xp.zeros((B, H), F32), self.xp.array(d_cT, dtype=F32, order="C")  # dc: updated in place
        dZ = self.xp.empty((T, B, 4 * H), F32)
        for t in reversed(range(T)):
            self.launch_1d("lstm", "lstm_gates_backward", B * H,
                           (gates[t], cs[t], cs[t + 1], d_out[t], dh, dc, dZ[t], i32(B), i32(H)))
            dh = self.matmul(dZ[t], w_hh)
        dZ2 = dZ.reshape(T * B, 4 * H)
        x2 = self.contiguous(x).reshape(T * B, I)
        dx = self.matmul(dZ2, w_ih).reshape(T, B, I)
        dw_ih, dw_hh = self.matmul(dZ2.T, x2), self.matmul(dZ2.T, hs[:T].reshape(T * B, H))
        return dx, dh, dc, dw_ih, dw_hh, self.reduce("sum", dZ2, 0, False)


# ---------------------------------------------------------------- all of them

HOSTS = (ElementwiseHost, ReduceHost, SoftmaxHost, MatmulHost, ConvHost, PoolHost, ResizeHost, BatchNormHost,
         EmbeddingHost, OptimHost, LSTMHost)


class CudaKernels(Launcher, *HOSTS):
    """The host code of every CUDA kernel, for one device (see the module docstring)."""

    def namespace(self):
        """The backend: numpy_ref's names, each bound to a kernel here or to the glue."""
        kernels = dict(self.glue)
        xp = self.xp
        kernels.update(
            name=self.name, xp=xp,
            to_numpy=getattr(xp, "asnumpy", np.asarray),
            **{op: (lambda x, op=op: self.unary(op, x)) for op in UNARY},
            **{op: (lambda a, b, op=op: self.binary(op, a, b)) for op in BINARY},
            **{op: (lambda x, axis=None, keepdims=False, op=op: self.reduce(op, x, axis, keepdims))
               for op in REDUCE},
        )
        for host in HOSTS:
            for name in host.KERNELS:
                kernels[name] = getattr(self, name)
        kernels["kernels"] = self
        return types.SimpleNamespace(**kernels)


# ---------------------------------------------------------------- compiling without a GPU

def kernel_headers():
    """The headers a .cu file may include, by the name it includes them with: "block_reduce.cuh"
    (csrc/cuda), "../common/conv_geometry.h" (csrc/common, shared with the C++ kernels)."""
    headers = {h.name: h for h in sorted(CUDA_DIR.glob("*.cuh"))}
    headers.update({f"../common/{h.name}": h for h in sorted(COMMON_DIR.glob("*.h"))})
    return headers


def nvrtc_compile(path, arch="sm_80"):
    """Compile one .cu file to a cubin for ``arch`` with NVRTC: no GPU and no driver needed.

    CuPy's RawModule.compile() asks the driver which GPU it is compiling for; the
    low-level cupy.cuda.nvrtc API does not, so CI checks every kernel file this way.
    """
    from cupy.cuda import nvrtc
    path = Path(path)
    headers = kernel_headers()  # the files a .cu may #include, given to NVRTC by the name it includes
    program = nvrtc.createProgram(path.read_text(), path.name, [h.read_bytes() for h in headers.values()],
                                  [name.encode() for name in headers])
    try:
        try:
            nvrtc.compileProgram(program, [f"--gpu-architecture={arch}", "-std=c++17"])
        except nvrtc.NVRTCError as e:
            raise RuntimeError(f"NVRTC could not compile {path.name} for {arch}:\n"
                               f"{nvrtc.getProgramLog(program)}") from e
        return nvrtc.getCUBIN(program)
    finally:
        nvrtc.destroyProgram(program)


# ---------------------------------------------------------------- the two devices

def emu_backend():
    """The "emu" device: numpy arrays, the CUDA kernels run by the CPU emulator (emu.py)."""
    from . import emu
    emu.compile_all()  # fill the cache in parallel now rather than one kernel file at a time later
    return CudaKernels("emu", np, emu.load_module, max_blocks=2).namespace()


def import_cupy():
    """The cupy module, or an ImportError that says how to install it (or to use device='emu')."""
    try:
        import cupy
    except ImportError as e:
        raise ImportError("the 'cuda' device needs CuPy: install with `pip install -e .[cuda]` "
                          "(or use device='emu' to run the CUDA kernels on the CPU)") from e
    return cupy


def gpu_count():
    """How many CUDA devices CuPy sees (0 without CuPy, a driver or a GPU)."""
    try:
        cupy = import_cupy()
        return cupy.cuda.runtime.getDeviceCount()
    except Exception:
        return 0


def cuda_backend():
    """The "cuda" device: CuPy arrays on the current GPU, the kernels compiled by NVRTC."""
    cupy = import_cupy()
    if gpu_count() == 0:
        raise RuntimeError("no CUDA device found (CuPy sees no GPU, or no NVIDIA driver is installed); "
                           "use device='cpu', or device='emu' to run the CUDA kernels on the CPU")
    modules = {}

    def load_module(name):
        if name not in modules:
            source = (CUDA_DIR / f"{name}.cu").read_text()
            # CuPy caches compiled modules by their source: name the headers' contents in it too, so
            # that a changed header is a new module.
            digest = hashlib.sha256(b"".join(h.read_bytes() for h in kernel_headers().values())).hexdigest()[:16]
            modules[name] = cupy.RawModule(code=f"{source}\n// headers {digest}\n",
                                           options=("-std=c++17", f"-I{CUDA_DIR}"))
        return modules[name]

    sm_count = cupy.cuda.Device().attributes["MultiProcessorCount"]
    return CudaKernels("cuda", cupy, load_module, max_blocks=32 * sm_count).namespace()
