"""The "cuda" and "emu" devices: minidl's own CUDA kernels (csrc/cuda/*.cu), launched from Python.

``CudaKernels`` holds the host code: it checks shapes and dtypes, allocates outputs, picks
grid and block sizes and launches the kernels by name. It is written once against two
things it is given:

    device  xp (array module)   load_module(name) -> an object with get_function(kernel)
    "cuda"  cupy                cupy.RawModule(code=module_source(name)): NVRTC, cached by CuPy
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
import math
import re
import types
from pathlib import Path

import numpy as np

from .. import deferred
from . import numpy_ref
from .kernel_types import activation_code, conv_geometry, pool_geometry

CUDA_DIR = Path(__file__).resolve().parents[2] / "csrc" / "cuda"
COMMON_DIR = CUDA_DIR.parent / "common"  # headers the .cu files share with csrc/cpu (#include "../common/...")
F32 = np.dtype(np.float32)
THREADS = 256  # threads per block of the 1-D (grid-stride) kernels
# How many blocks a launch needs to keep a GPU busy, assumed in one place: an H100 has 132
# SMs (an A100 108), and a few resident blocks per SM hide each other's memory waits. The
# launches that choose how finely to cut their work (split-K GEMMs, reductions in parts) aim
# for FULL_GRID blocks; those that cannot be cut keep their natural grid.
SMS = 132
FULL_GRID = 2 * SMS
MIN_PART = 4096       # the fewest values a block of a parted reduction sums (16 per thread of 256)
MIN_SPLIT_K = 512     # the shortest slice of K a split-K GEMM block multiplies (64 steps of its 8-deep tiles)
MAX_GRID_YZ = 65535   # CUDA's limit on grid.y and grid.z (grid.x may reach 2**31 - 1)
METADATA_CACHE = 1024  # small device arrays kept by key (broadcast strides, conv geometries)


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


def parts_for(rows, length):
    """(P, chunk): cut each of ``rows`` rows of ``length`` values into P parts of ``chunk`` values
    (the last may be shorter), so that rows * P blocks come near FULL_GRID, each part at least MIN_PART."""
    P = max(1, min(-(-FULL_GRID // max(rows, 1)), length // MIN_PART))
    chunk = -(-length // P)
    return -(-length // chunk), chunk  # no empty last part


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
        self.max_grid_yz = MAX_GRID_YZ  # the GEMM folds its grid below this (a test lowers it to see that done)
        self._functions = {}
        self._metadata = {}  # key -> a small device array, made once: no host-to-device copy per launch
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
        grid = tuple(int(d) for d in (grid if isinstance(grid, (tuple, list)) else (grid,)))
        if grid[0] > 2 ** 31 - 1 or any(d > self.max_grid_yz for d in grid[1:]):
            # A GPU refuses such a launch (cudaErrorInvalidConfiguration); say so here, on "emu" too.
            raise ValueError(f"{module}.cu {kernel}: grid {grid} exceeds CUDA's limits (x < 2**31, y and z "
                             f"<= {self.max_grid_yz}): the host code must fold it")
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

    def launch_parts(self, module, kernel, rows, P, chunk, args):
        """A reduction in parts: rows * P blocks, each summing ``chunk`` values with a block_reduce tree."""
        threads = reduction_threads(chunk)
        self.launch(module, kernel, (rows * P,), (threads,), args, shared_mem=threads * 4)

    def metadata(self, key, values, dtype):
        """A small constant device array (a kernel's shapes and strides), made on the first call with this
        key and kept: a launch does not copy it from the host again (which would wait for the GPU).
        ``values`` may be a function that makes them, called only the first time."""
        array = self._metadata.get(key)
        if array is None:
            if len(self._metadata) >= METADATA_CACHE:
                self._metadata.clear()  # a model uses few shapes; a sweep over shapes must not grow this forever
            array = self._metadata[key] = self.xp.asarray(np.asarray(values() if callable(values) else values,
                                                                     dtype=dtype))
        return array

    def geometry_array(self, g):
        """A kernel_types.ConvGeometry as conv.cu and pool.cu read it: an int32 array of its fields, in order
        (made once per geometry)."""
        return self.metadata(("geometry", tuple(g)), tuple(g), np.int32)


# ---------------------------------------------------------------- elementwise.cu

# Op codes: elementwise.cu's enums, in order (tests/test_cuda_compile.py checks).
UNARY = {name: i for i, name in enumerate(
    ["neg", "exp", "log", "sqrt", "abs", "sign", "tanh", "sigmoid", "relu", "erf"])}
BINARY = {name: i for i, name in enumerate(["add", "sub", "mul", "div", "maximum", "minimum", "power",
                                            "relu_backward"])}


class ElementwiseHost:
    """csrc/cuda/elementwise.cu: unary math and broadcasting binary arithmetic, one kernel each with an op code."""
    KERNELS = ("dropout_mask",)  # (and every op of UNARY and BINARY: see CudaKernels.namespace)

    def dropout_mask(self, shape, p, seed, dtype=F32):
        """An array of ``shape``: 1 / (1 - p) where kept, 0 where dropped; element i is kept when u_i >= p,
        u_i the uniform number SplitMix64 gives for (seed, i) (elementwise.cu dropout_mask_f32; numpy_ref's
        dropout_mask is the same, bit for bit). Made on the device: no random numbers drawn on the host and
        copied over. 0 <= p < 1; float64 (the glue: numpy_ref's on the device) drops the same elements."""
        if np.dtype(dtype) != F32:
            return self.glue["dropout_mask"](shape, p, seed, dtype)
        out = self.xp.empty(tuple(shape), F32)
        if out.size:
            self.launch_1d("elementwise", "dropout_mask_f32", out.size,
                           (out, i64(out.size), np.uint64(int(seed) % 2 ** 64), f32(p), f32(1 / (1 - p))))
        return out

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
        """out = op(a, b) elementwise (elementwise.cu): equal shapes index both alike, a Python number is
        passed by value, broadcasting reads each operand with stride 0 on broadcast axes."""
        a_is_array, b_is_array = isinstance(a, self.xp.ndarray), isinstance(b, self.xp.ndarray)
        if a_is_array != b_is_array:  # array op number: the number goes to the kernel by value
            x, s = (a, b) if a_is_array else (b, a)
            if self.is_f32(x) and isinstance(s, (bool, int, float, np.float32)) and not isinstance(s, np.float64):
                x = self.contiguous(x)
                out = self.xp.empty(x.shape, F32)
                if out.size:
                    self.launch_1d("elementwise", "binary_scalar_f32", out.size,
                                   (i32(BINARY[op]), x, f32(s), i32(not a_is_array), out, i64(out.size)))
                return out
        a32, b32 = self._f32_operand(a), self._f32_operand(b)
        if a32 is None or b32 is None or not (a_is_array or b_is_array):
            if op == "relu_backward":  # a = grad, b = relu's output y
                return self.xp.where(b > 0, a, 0).astype(a.dtype, copy=False)
            return self.glue[op](a, b)
        if a32.shape == b32.shape:
            out = self.xp.empty(a32.shape, F32)
            if out.size:
                self.launch_1d("elementwise", "binary_same_f32", out.size, (i32(BINARY[op]), a32, b32, out, i64(out.size)))
            return out
        shape = np.broadcast_shapes(a32.shape, b32.shape)
        out = self.xp.empty(shape, F32)
        if out.size == 0:
            return out
        ndim = max(len(shape), 1)
        meta = self.metadata(("broadcast", a32.shape, b32.shape), [
            *(shape or (1,)), *self._broadcast_strides(a32.shape, shape), *self._broadcast_strides(b32.shape, shape)],
            np.int64)
        self.launch_1d("elementwise", "binary_f32", out.size,
                       (i32(BINARY[op]), a32, b32, out, i64(out.size), i32(ndim), meta))
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
        P, chunk = parts_for(rows, R)
        if P > 1:  # few long rows (a full-tensor sum is one): P blocks per row, then a row of P partials each
            partial = self.xp.empty(rows * P, F32)
            self.launch_parts("partials", "reduce_row_parts", rows, P, chunk,
                              (i32(REDUCE[op]), xt, partial, i64(R), i32(P), i64(chunk)))
            xt, R, op = partial, P, "sum" if op == "mean" else op  # (a mean's parts are already divided by R)
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
        """out[b] = op(A[b]) @ op(B[b]) for b < batch; strides = (A's, B's, out's) batch strides.

        Few output tiles over a long K (a weight gradient: K = N*OH*OW, C small) would leave most SMs
        idle, so K is split (split-K) when A and B are stored K-major, (K, M) and (K, N): there a slice
        of K is a block of whole rows, one more batch entry of the same kernel.
        """
        # (split per batch entry, so only for a few: a conv's groups; a big batch fills the GPU anyway)
        splits = self.k_splits(M, N, K, batch) if version == "tiled" and transA and not transB and batch <= 8 else 1
        if splits > 1:
            self._gemm_split_k(A, B, out, M, N, K, batch, strides, splits)
        else:
            self._gemm_launch(A, transA, B, transB, out, M, N, K, batch, strides, version)

    def _gemm_launch(self, A, transA, B, transB, out, M, N, K, batch, strides, version="tiled"):
        """One launch of matmul.cu's v7 (or v1) on the folded grid (ceil(N/T) * batch, min(ceil(M/T), 65535)),
        which reaches any batch and any M (tile_of_block in matmul.cu)."""
        T, block = (64, (256,)) if version == "tiled" else (16, (16, 16))
        tiles_n, tiles_m = -(-N // T), -(-M // T)
        self.launch("matmul", f"matmul_{version}", (tiles_n * batch, min(tiles_m, self.max_grid_yz)), block,
                    (A, B, out, i32(M), i32(N), i32(K), i32(transA), i32(transB), *(i64(s) for s in strides)))

    @staticmethod
    def k_splits(M, N, K, batch):
        """How many slices of K: enough that the output tiles times the slices come near FULL_GRID blocks,
        each slice at least MIN_SPLIT_K long (1: no split)."""
        tiles = -(-M // 64) * -(-N // 64) * batch
        return max(1, min(-(-FULL_GRID // tiles), K // MIN_SPLIT_K))

    def _gemm_split_k(self, A, B, out, M, N, K, batch, strides, splits):
        """out[b] = sum over slices s of A[b][s]^T @ B[b][s]: the slices' products as one batched GEMM
        (a shorter last slice as one more launch), added by partials.cu's sum_parts."""
        Kc = -(-K // splits)
        full, rest = divmod(K, Kc)
        parts = self.xp.empty((full + (rest > 0), M, N), F32)
        flat_a, flat_b, flat_out = A.reshape(-1), B.reshape(-1), out.reshape(-1)
        (sA, sB, sC), MN = strides, M * N
        for b in range(batch):  # (a conv with groups: one per group; a matmul: one)
            Ab, Bb = flat_a[b * sA:], flat_b[b * sB:]
            self._gemm_launch(Ab, 1, Bb, 0, parts, M, N, Kc, full, (Kc * M, Kc * N, MN))
            if rest:
                self._gemm_launch(Ab[full * Kc * M:], 1, Bb[full * Kc * N:], 0, parts[full], M, N, rest, 1, (0, 0, 0))
            self.launch_1d("partials", "sum_parts", MN, (parts, flat_out[b * sC:b * sC + MN], i64(MN), i32(len(parts))))

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
        NL = g.N * L
        # K-major copies, K = (n, y, x) down the rows: a slice of K is whole rows, so gemm can split K
        # (EfficientNet's stem at batch 32: K = 401,408 for a 32 x 27 output, one tile without the split).
        cols = self.im2col(x, g).reshape(g.N, G, CgKK, L)
        cols_k = self.contiguous(cols.transpose(1, 0, 3, 2)).reshape(G, NL, CgKK)
        grad_k = self.contiguous(grad.reshape(g.N, G, Og, L).transpose(1, 0, 3, 2)).reshape(G, NL, Og)
        dw = self.xp.empty((G, Og, CgKK), F32)
        self.gemm(grad_k, 1, cols_k, 0, dw, Og, CgKK, NL, G, (NL * Og, NL * CgKK, Og * CgKK))
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
        """rows (h,) and cols (w,): numpy_ref.nearest_source_index, computed on the host once per size, as
        int64 device arrays."""
        return [self.metadata(("nearest", n, m, s), lambda n=n, m=m, s=s: numpy_ref.nearest_source_index(n, m, s),
                              np.int64) for n, m, s in zip(x_shape[2:], out_shape[2:], scales)]

    def _linear_maps(self, x_shape, out_shape, align_corners, scales):
        """rows [y0; y1] (2, h), wy (h,), cols [x0; x1] (2, w), wx (w,): numpy_ref.linear_source_index in float32,
        computed on the host once per size."""
        maps = []
        for n, m, s in zip(x_shape[2:], out_shape[2:], scales):
            def source(n=n, m=m, s=s):
                return numpy_ref.linear_source_index(n, m, s, align_corners, np.float32)
            key = ("linear", n, m, s, bool(align_corners))
            maps += [self.metadata(key + ("index",), lambda: np.stack(source()[:2]), np.int64),
                     self.metadata(key + ("weight",), lambda: source()[2], np.float32)]
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
        P, chunk = parts_for(C, N * S)
        part_mean, part_m2 = self.xp.empty((C, P), F32), self.xp.empty((C, P), F32)
        self.launch_parts("batchnorm", "batch_norm_stats_parts", C, P, chunk,
                          (x, part_mean, part_m2, i32(N), i32(C), i64(S), i32(P), i64(chunk)))
        self.launch_1d("batchnorm", "batch_norm_stats_combine", C,
                       (part_mean, part_m2, mean, var, invstd, i32(N), i32(C), i64(S), i32(P), i64(chunk), f32(eps)))
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
        dbias, dweight = self._channel_sums("batch_norm_backward_parts", N, C, S,
                                            (grad, x, mean, invstd))  # sum g, sum g xhat
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
        """(dx, dscale, dshift) of channel_affine, y its output; C*P blocks, P parts per channel (batchnorm.cu)."""
        act = activation_code("channel_affine_backward", activation)
        if (not self.is_f32(grad, x, y, scale) or x.ndim < 2 or x.size == 0 or grad.shape != x.shape
                or y.shape != x.shape):
            return self.glue["channel_affine_backward"](grad, x, y, scale, activation)
        grad, x, y, scale = (self.contiguous(a) for a in (grad, x, y, scale))
        N, C = x.shape[:2]
        S = x.size // (N * C)
        dx = self.xp.empty(x.shape, F32)
        dshift, dscale = self._channel_sums("channel_affine_backward_parts", N, C, S,
                                            (grad, x, y, scale, dx), (i32(act),))  # sum gm, sum gm x
        return dx, dscale, dshift

    def _channel_sums(self, kernel, N, C, S, arrays, extra=()):
        """Two sums per channel over its N*S values, by C*P blocks (batchnorm.cu's *_parts kernels),
        then partials.cu's sum_parts over the P parts: (first sums (C,), second sums (C,))."""
        P, chunk = parts_for(C, N * S)
        parts, sums = self.xp.empty((P, 2, C), F32), self.xp.empty(2 * C, F32)
        self.launch_parts("batchnorm", kernel, C, P, chunk, (*arrays, parts, i32(N), i32(C), i64(S), i32(P),
                                                             i64(chunk), *extra))
        self.launch_1d("partials", "sum_parts", 2 * C, (parts, sums, i64(2 * C), i32(P)))
        return sums[:C], sums[C:]


# ---------------------------------------------------------------- embedding.cu


class EmbeddingHost:
    """csrc/cuda/embedding.cu: row gather and its atomic scatter-add (and gather's scatter_add, from CuPy)."""
    KERNELS = ("embedding", "embedding_backward", "scatter_add")

    def _ids(self, ids):
        # An id out of range is never followed out of the table: the kernels write NaN or skip it, and
        # ops.shape.embedding queued the readable error (minidl.deferred: no wait for the GPU here).
        return self.contiguous(self.xp.asarray(ids).astype(np.int64, copy=False))

    def embedding(self, weight, ids):
        """out[..., :] = weight[ids[...], :]: one row per id (embedding.cu gather)."""
        if not self.is_f32(weight) or weight.ndim != 2 or self.xp.asarray(ids).dtype.kind not in "iu":
            return self.glue["embedding"](weight, ids)
        weight = self.contiguous(weight)
        ids = self._ids(ids)
        D = weight.shape[1]
        out = self.xp.empty(ids.shape + (D,), F32)
        if out.size:
            self.launch_1d("embedding", "embedding_gather", out.size,
                           (weight, ids, out, i64(ids.size), i64(D), i64(weight.shape[0])))
        return out

    def embedding_backward(self, grad, ids, num_embeddings):
        """dweight (num_embeddings, D): each grad row added to its id's row (embedding.cu, an atomic scatter-add)."""
        if not self.is_f32(grad) or grad.ndim < 1 or self.xp.asarray(ids).dtype.kind not in "iu":
            return self.glue["embedding_backward"](grad, ids, num_embeddings)
        ids = self._ids(ids)
        D = grad.shape[-1]
        grad = self.contiguous(grad)
        dweight = self.xp.zeros((num_embeddings, D), F32)
        if grad.size:
            self.launch_1d("embedding", "embedding_scatter_add", grad.size,
                           (grad, ids, dweight, i64(ids.size), i64(D), i64(num_embeddings)))
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

    def to_numpy(self, a):
        """A device array's values on the host (waiting for the kernels queued before). The index checks still
        queued (minidl/deferred.py) are read first, so their error comes before any number it would explain."""
        deferred.run_pending()
        return self.xp.asnumpy(a) if hasattr(self.xp, "asnumpy") else np.asarray(a)

    def namespace(self):
        """The backend: numpy_ref's names, each bound to a kernel here or to the glue."""
        kernels = dict(self.glue)
        xp = self.xp
        kernels.update(
            name=self.name, xp=xp,
            to_numpy=self.to_numpy,
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


INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[^\n]*$', re.M)


def module_source(name):
    """csrc/cuda/<name>.cu with its local headers pasted in place of their #include lines: the source
    the "cuda" device gives cupy.RawModule.

    CuPy caches a compiled module by a hash of its source string and options, not of the files
    that source includes; pasted in, an edited block_reduce.cuh is a new source and so a new
    compile, never a stale cubin. Each header is pasted once (they are #pragma once).
    """
    headers = kernel_headers()
    pasted = set()

    def paste(match):
        header = match[1]
        if header not in headers:  # not ours (NVRTC's own headers): leave the line alone
            return match[0]
        if header in pasted:
            return f"// {header}: pasted above"
        pasted.add(header)
        body = INCLUDE.sub(paste, headers[header].read_text().replace("#pragma once", ""))
        return f"// ---- {header} (pasted by module_source)\n{body}\n// ---- end of {header}"

    return INCLUDE.sub(paste, (CUDA_DIR / f"{name}.cu").read_text())


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


# The extras of pyproject.toml, by the CUDA major version CuPy was built for, and the oldest driver
# branch that runs that major version (CUDA's minor-version compatibility: any 12.x on R525+).
CUDA_EXTRAS = {12: ("cuda12", "cupy-cuda12x", 525), 13: ("cuda13", "cupy-cuda13x", 580)}
INSTALL_HINT = ("pip install -e \".[cuda12]\" (NVIDIA driver R525 or newer) or "
                "pip install -e \".[cuda13]\" (driver R580 or newer); `nvidia-smi` shows the driver")


def import_cupy():
    """The cupy module, or an ImportError that says how to install it (or to use device='emu')."""
    try:
        import cupy
    except ImportError as e:
        raise ImportError(f"the 'cuda' device needs CuPy: {INSTALL_HINT}; the plain `pip install -e .[cuda]` "
                          f"is the cuda13 one (or use device='emu' to run the CUDA kernels on the CPU)") from e
    return cupy


def _cuda_version(v):
    """CUDA's integer version (12040) as "12.4"."""
    return f"{v // 1000}.{v % 1000 // 10}"


_launch_checked = set()   # the devices on which the probe kernel below has run once


def cuda_unavailable_reason():
    """Why the "cuda" device cannot run here, in one sentence with the fix; None when it can.

    Checked in the order things break on a learner's machine: CuPy importable; an NVIDIA
    driver (libcuda) loaded; the driver new enough for the CUDA major version CuPy was built
    for; NVRTC present and of that major version; a GPU visible; a tiny NVRTC-compiled kernel
    launching on it (this catches a driver too old for NVRTC's output). gpu_count() is 0
    exactly when this is not None; MINIDL_REQUIRE_GPU=1 makes the tests fail with it.
    """
    try:
        cupy = import_cupy()
    except ImportError as e:
        return f"CuPy is not importable ({e.__cause__ or e}): {INSTALL_HINT}"
    runtime = cupy.cuda.runtime
    try:
        toolkit = runtime.runtimeGetVersion()          # the CUDA CuPy was built for (its wheel: cupy-cuda12x/13x)
    except Exception as e:                              # noqa: BLE001 - any failure here is the reason
        return f"CuPy {cupy.__version__} cannot load the CUDA runtime ({type(e).__name__}: {e}): {INSTALL_HINT}"
    major = toolkit // 1000
    extra, wheel, branch = CUDA_EXTRAS.get(major, (f"cuda{major}", f"cupy-cuda{major}x", None))
    try:
        driver = runtime.driverGetVersion()            # the newest CUDA the driver runs; 0 without libcuda
    except Exception:                                   # noqa: BLE001
        driver = 0
    if driver == 0:
        return (f"no NVIDIA driver found (libcuda.so is not loaded; `nvidia-smi` fails on a machine without one), "
                f"so no GPU can run; CuPy {cupy.__version__} ({wheel}) is built for CUDA {_cuda_version(toolkit)}")
    if driver // 1000 < major:
        newer = next((e for m, (e, _, b) in sorted(CUDA_EXTRAS.items()) if m <= driver // 1000), None)
        fix = (f"pip install -e \".[{newer}]\" (CuPy for CUDA {driver // 1000}), or update the driver" if newer
               else "update the NVIDIA driver (R525 or newer runs the cuda12 extra)")
        return (f"the NVIDIA driver runs CUDA up to {_cuda_version(driver)}, but CuPy {cupy.__version__} ({wheel}) is "
                f"built for CUDA {_cuda_version(toolkit)}, which needs driver R{branch or '?'} or newer: {fix}")
    try:
        from cupy.cuda import nvrtc
        nvrtc_major, nvrtc_minor = nvrtc.getVersion()
    except Exception as e:                              # noqa: BLE001
        return (f"NVRTC (CUDA's run-time compiler, which builds csrc/cuda/*.cu) is not loadable ({type(e).__name__}: "
                f"{e}): pip install -e \".[{extra}]\" installs it")
    if nvrtc_major != major:
        return (f"NVRTC {nvrtc_major}.{nvrtc_minor} does not match CuPy's CUDA {_cuda_version(toolkit)} ({wheel}): "
                f"pip install -e \".[{extra}]\" installs the matching one")
    try:
        count = runtime.getDeviceCount()
    except Exception as e:                              # noqa: BLE001
        return f"the CUDA runtime finds no usable GPU ({type(e).__name__}: {e})"
    if count == 0:
        import os
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return ("the NVIDIA driver sees no GPU" +
                (f" (CUDA_VISIBLE_DEVICES={visible!r} hides them)" if visible is not None else ""))
    device = runtime.getDevice()
    if device not in _launch_checked:
        try:
            probe = cupy.RawKernel(r'extern "C" __global__ void minidl_probe(float* x) { x[threadIdx.x] += 1.0f; }',
                                   "minidl_probe")
            x = cupy.zeros(32, dtype=cupy.float32)
            probe((1,), (32,), (x,))
            if float(x.sum()) != 32.0:
                return "a probe kernel compiled by NVRTC ran on the GPU but computed a wrong result"
        except Exception as e:                          # noqa: BLE001
            return (f"a probe kernel compiled by NVRTC {nvrtc_major}.{nvrtc_minor} does not run on GPU {device} "
                    f"(driver for CUDA {_cuda_version(driver)}): {type(e).__name__}: {e}")
        _launch_checked.add(device)
    return None


def gpu_count():
    """How many CUDA devices the "cuda" device can use: 0 without CuPy, a driver, NVRTC or a GPU
    (``cuda_unavailable_reason()`` says which)."""
    if cuda_unavailable_reason() is not None:
        return 0
    return import_cupy().cuda.runtime.getDeviceCount()


def cuda_backend():
    """The "cuda" device: CuPy arrays on the current GPU, the kernels compiled by NVRTC."""
    cupy = import_cupy()
    reason = cuda_unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"no CUDA device found: {reason}. Use device='cpu', or device='emu' to run the CUDA "
                           f"kernels on the CPU")
    import os
    if os.environ.get("MINIDL_CUPY_POOL", "1") == "0":
        # every array its own cudaMalloc: compute-sanitizer's memcheck then sees each one's bounds
        # (a pool hands out slices of big blocks, where reading past an array's end goes unnoticed)
        cupy.cuda.set_allocator(None)
        cupy.cuda.set_pinned_memory_allocator(None)
    modules = {}

    def load_module(name):
        if name not in modules:
            # the headers pasted in: CuPy's cache keys on this string, so an edited header is a new module
            modules[name] = cupy.RawModule(code=module_source(name), options=("-std=c++17", f"-I{CUDA_DIR}"))
        return modules[name]

    sm_count = cupy.cuda.Device().attributes["MultiProcessorCount"]
    return CudaKernels("cuda", cupy, load_module, max_blocks=32 * sm_count).namespace()
