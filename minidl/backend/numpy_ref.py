"""The reference kernels: every computation minidl does, in short, readable numpy.

This file is the ground truth. The C++ kernels (csrc/cpu, bound in cpu.py) and the
CUDA kernels (csrc/cuda) each have a function here under the same name, and the
tests compare them on random shapes. Set ``MINIDL_KERNELS=numpy`` to run every op
with these kernels only.

Kernels take and return plain arrays; they know nothing about autograd. A backend
is a namespace of such functions (see backend/__init__.py): ops call
``ctx.backend.<name>(...)`` and never import numpy themselves.
"""
import math

import numpy as np

name = "numpy"
xp = np  # the array module: numpy here, cupy on the GPU


# ---------------------------------------------------------------- arrays and copies

def asarray(data, dtype=None):
    """``data`` as a numpy array (no copy when it already is one of that dtype)."""
    return np.asarray(data, dtype=dtype)


def to_numpy(a):
    """The array as numpy (the identity on this backend)."""
    return np.asarray(a)


def zeros(shape, dtype):
    """A new array of ``shape`` filled with 0."""
    return np.zeros(shape, dtype=dtype)


def ones(shape, dtype):
    """A new array of ``shape`` filled with 1."""
    return np.ones(shape, dtype=dtype)


def full(shape, value, dtype):
    """A new array of ``shape`` filled with ``value``."""
    return np.full(shape, value, dtype=dtype)


def arange(start, stop, step, dtype):
    """start, start + step, ... below stop, as ``dtype``."""
    return np.arange(start, stop, step, dtype=dtype)


def copy(a):
    """A copy in new memory."""
    return np.array(a, copy=True)


def astype(a, dtype):
    """``a`` converted to ``dtype`` (``a`` itself when it already has it)."""
    return a.astype(dtype, copy=False)


# ---------------------------------------------------------------- elementwise
# numpy broadcasts these for us; undoing the broadcast in backward is autograd's job.

add, sub, mul, div, neg, power = np.add, np.subtract, np.multiply, np.true_divide, np.negative, np.power
exp, log, sqrt, abs, sign, tanh = np.exp, np.log, np.sqrt, np.abs, np.sign, np.tanh
maximum, minimum, where, clip = np.maximum, np.minimum, np.where, np.clip
equal, not_equal, less, less_equal, greater, greater_equal = (
    np.equal, np.not_equal, np.less, np.less_equal, np.greater, np.greater_equal)
logical_and, logical_or, logical_not = np.logical_and, np.logical_or, np.logical_not


def sigmoid(x):
    """1 / (1 + e^-x), computed without overflow for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def relu(x):
    """max(x, 0) elementwise."""
    return np.maximum(x, 0)


def relu_backward(grad, y):
    """dL/dx of y = relu(x): the gradient where y > 0, else 0 (also where x is NaN)."""
    return np.where(y > 0, grad, 0).astype(grad.dtype, copy=False)


def clamp_backward(grad, x, lo, hi):
    """dL/dx of y = clamp(x, lo, hi): the gradient where lo <= x <= hi, else 0 (None: no bound)."""
    inside = np.ones(x.shape, bool) if lo is None else x >= lo
    if hi is not None:
        inside &= x <= hi
    return np.where(inside, grad, 0).astype(grad.dtype, copy=False)


def dropout_mask(shape, p, seed, dtype=np.float32):
    """An array of ``shape`` and ``dtype``: 1 / (1 - p) where an element is kept, 0 where it is dropped.
    Element i is kept when u_i >= p, u_i in [0, 1) the top 24 bits of SplitMix64's output for
    seed + (i + 1) * 0x9E3779B97F4A7C15, over 2**24: a counter-based generator, so every element's
    number is its own (a GPU thread makes it from (seed, i) alone) and one seed gives the same mask
    on every device. p is compared in float32, as the CUDA kernel does."""
    n = math.prod(shape)
    # uint64 arrays wrap around on overflow, as C's unsigned integers do (and numpy says nothing)
    z = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed % 2 ** 64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    u = (z >> np.uint64(40)).astype(np.float32) * np.float32(1 / 2 ** 24)
    return np.where(u >= np.float32(p), 1 / (1 - p), 0.0).astype(dtype).reshape(shape)


_erf = np.frompyfunc(math.erf, 1, 1)


def erf(x):
    """The error function, elementwise (numpy has none; math.erf is exact)."""
    return np.asarray(_erf(x), dtype=x.dtype)


# ---------------------------------------------------------------- reductions

def sum(x, axis=None, keepdims=False):
    """Sum over ``axis`` (an int, a tuple, or None for all)."""
    return np.sum(x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False):
    """The largest value over ``axis``."""
    return np.max(x, axis=axis, keepdims=keepdims)


def min(x, axis=None, keepdims=False):
    """The smallest value over ``axis``."""
    return np.min(x, axis=axis, keepdims=keepdims)


def argmax(x, axis=None, keepdims=False):
    """The index of the largest value along ``axis`` (the first on a tie; of the flattened array for None)."""
    return np.argmax(x, axis=axis, keepdims=keepdims)


def argmin(x, axis=None, keepdims=False):
    """The index of the smallest value along ``axis`` (the first on a tie; of the flattened array for None)."""
    return np.argmin(x, axis=axis, keepdims=keepdims)


def softmax(x, axis):
    """e^(x - max) / sum e^(x - max): subtracting the max keeps exp from overflowing."""
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def logsumexp(x, axis, keepdims=False):
    """log sum e^x = m + log sum e^(x - m), with m the max (finite even for huge x)."""
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    out = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def log_softmax(x, axis):
    """x_i - log sum_j exp(x_j) along ``axis``, computed stably through logsumexp."""
    return x - logsumexp(x, axis, keepdims=True)


# ---------------------------------------------------------------- shapes and indexing

def reshape(x, shape):
    """The same values in a new shape (a view where numpy can)."""
    return np.reshape(x, shape)


def transpose(x, axes):
    """The axes reordered: output axis i is input axis axes[i] (a view)."""
    return np.transpose(x, axes)


def broadcast_to(x, shape):
    """A read-only view of ``x`` repeated along size-1 axes to ``shape``."""
    return np.broadcast_to(x, shape)


def concatenate(arrays, axis):
    """The arrays joined along ``axis``."""
    return np.concatenate(arrays, axis=axis)


def pad(x, widths, value=0):
    """widths: one (before, after) pair per axis."""
    return np.pad(x, widths, constant_values=value)


def getitem(x, index):
    """x[index] with numpy's indexing rules (basic indices give a view)."""
    return x[index]


def index_add(out, index, values):
    """out[index] += values, adding repeated indices once each (a scatter-add), in place.

    An index made only of slices and integers names each element once, so a plain ``+=`` does
    (np.add.at, which allows repeats, is 10-50x slower)."""
    parts = index if isinstance(index, tuple) else (index,)
    if all(isinstance(p, (slice, int, type(None), type(Ellipsis))) for p in parts):
        out[index] += values
    else:
        np.add.at(out, index, values)
    return out


def gather(x, axis, index):
    """out[i][j] = x[i][index[i][j]] for axis=1 (torch.gather)."""
    return np.take_along_axis(x, index, axis=axis)


def scatter_add(shape, axis, index, values):
    """The backward of gather: zeros(shape), then out[i][index[i][j]] += values[i][j]."""
    out = np.zeros(shape, dtype=values.dtype)
    where = list(np.indices(index.shape, sparse=True))
    where[axis] = index
    np.add.at(out, tuple(where), values)
    return out


def embedding(weight, ids):
    """Row lookup: out[...] = weight[ids[...]]."""
    return weight[ids]


def embedding_backward(grad, ids, num_embeddings):
    """Scatter-add each output row's gradient into the row it was read from."""
    dweight = np.zeros((num_embeddings, grad.shape[-1]), dtype=grad.dtype)
    np.add.at(dweight, ids.reshape(-1), grad.reshape(-1, grad.shape[-1]))
    return dweight


# ---------------------------------------------------------------- matmul

def matmul(a, b):
    """(..., M, K) @ (..., K, N) -> (..., M, N); batch dims broadcast. 2*M*N*K FLOPs per batch."""
    return np.matmul(a, b)


# ---------------------------------------------------------------- convolution via im2col
# A convolution is a matmul in disguise: gather every input patch that a kernel
# window covers into a column (im2col), and the convolution becomes
# weight (O, C*kh*kw) @ columns (C*kh*kw, OH*OW). The backward passes are two more
# matmuls, and col2im adds the patch gradients back where the patches came from.

def conv_out_size(size, kernel, stride, padding, dilation):
    """floor((size + 2 padding - dilation (kernel - 1) - 1) / stride) + 1: a conv's or pool's output length."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def im2col(x, kernel, stride, padding, dilation, pad_value=0):
    """(N, C, H, W) -> (N, C, kh*kw, OH*OW): [n, c, window offset, output pixel]."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    N, C, H, W = x.shape
    OH, OW = conv_out_size(H, kh, sh, ph, dh), conv_out_size(W, kw, sw, pw, dw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad_value)
    cols = np.empty((N, C, kh, kw, OH, OW), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            top, left = i * dh, j * dw
            cols[:, :, i, j] = xp[:, :, top:top + sh * (OH - 1) + 1:sh, left:left + sw * (OW - 1) + 1:sw]
    return cols.reshape(N, C, kh * kw, OH * OW)


def col2im(cols, x_shape, kernel, stride, padding, dilation):
    """The adjoint of im2col: add every column entry back onto the pixel it was copied from."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    N, C, H, W = x_shape
    OH, OW = conv_out_size(H, kh, sh, ph, dh), conv_out_size(W, kw, sw, pw, dw)
    cols = cols.reshape(N, C, kh, kw, OH, OW)
    xp = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            top, left = i * dh, j * dw
            xp[:, :, top:top + sh * (OH - 1) + 1:sh, left:left + sw * (OW - 1) + 1:sw] += cols[:, :, i, j]
    return xp[:, :, ph:ph + H, pw:pw + W]


def _group_cols(x, kernel, stride, padding, dilation, groups):
    """im2col, split by group: (N, G, C/G*kh*kw, OH*OW)."""
    cols = im2col(x, kernel, stride, padding, dilation)
    N, C, KK, L = cols.shape
    return cols.reshape(N, groups, C // groups * KK, L)


def conv2d(x, w, stride, padding, dilation, groups):
    """out[n, o] = sum over c, i, j of w[o, c, i, j] * x[n, c, s*y + d*i - p, s*x + d*j - p].

    x: (N, C, H, W), w: (O, C/groups, kh, kw) -> (N, O, OH, OW).
    FLOPs: 2 * N * O * OH * OW * (C/groups) * kh * kw.
    """
    N, O = x.shape[0], w.shape[0]
    kernel = w.shape[2:]
    cols = _group_cols(x, kernel, stride, padding, dilation, groups)       # (N, G, CKK, L)
    wg = w.reshape(groups, O // groups, -1)                                # (G, O/G, CKK)
    out = np.matmul(wg, cols)                                              # (N, G, O/G, L)
    OH = conv_out_size(x.shape[2], kernel[0], stride[0], padding[0], dilation[0])
    return out.reshape(N, O, OH, -1)


def conv2d_backward_data(grad, w, x_shape, stride, padding, dilation, groups):
    """dL/dx: columns = w^T @ grad, then col2im."""
    N, O = grad.shape[:2]
    wg = w.reshape(groups, O // groups, -1)                                # (G, O/G, CKK)
    g = grad.reshape(N, groups, O // groups, -1)                           # (N, G, O/G, L)
    cols = np.matmul(wg.transpose(0, 2, 1), g)                             # (N, G, CKK, L)
    C = x_shape[1]
    cols = cols.reshape(N, C, -1, g.shape[-1])
    return col2im(cols, x_shape, w.shape[2:], stride, padding, dilation)


def conv2d_backward_weight(grad, x, w_shape, stride, padding, dilation, groups):
    """dL/dw: grad @ columns^T, summed over the batch."""
    N, O = grad.shape[:2]
    cols = _group_cols(x, w_shape[2:], stride, padding, dilation, groups)  # (N, G, CKK, L)
    g = grad.reshape(N, groups, O // groups, -1)                           # (N, G, O/G, L)
    dw = np.matmul(g, cols.transpose(0, 1, 3, 2)).sum(axis=0)              # (G, O/G, CKK)
    return dw.reshape(w_shape)


# ---------------------------------------------------------------- pooling (im2col again)

def max_pool2d(x, kernel, stride, padding, dilation=(1, 1)):
    """Max over each window; also returns which window offset won (for backward)."""
    cols = im2col(x, kernel, stride, padding, dilation, pad_value=-np.inf)  # (N, C, K, L)
    winner = np.argmax(cols, axis=2)                                         # (N, C, L)
    out = np.take_along_axis(cols, winner[:, :, None], axis=2)[:, :, 0]
    OH = conv_out_size(x.shape[2], kernel[0], stride[0], padding[0], dilation[0])
    return out.reshape(x.shape[0], x.shape[1], OH, -1), winner


def max_pool2d_backward(grad, winner, x_shape, kernel, stride, padding, dilation=(1, 1)):
    """Each output's gradient goes to the one input that won its window."""
    N, C = x_shape[:2]
    cols = np.zeros((N, C, kernel[0] * kernel[1], winner.shape[-1]), dtype=grad.dtype)
    np.put_along_axis(cols, winner[:, :, None], grad.reshape(N, C, 1, -1), axis=2)
    return col2im(cols, x_shape, kernel, stride, padding, dilation)


def avg_pool2d(x, kernel, stride, padding):
    """Mean over each window; padding counts as zeros (PyTorch's count_include_pad=True)."""
    cols = im2col(x, kernel, stride, padding, (1, 1))
    OH = conv_out_size(x.shape[2], kernel[0], stride[0], padding[0], 1)
    return cols.mean(axis=2).reshape(x.shape[0], x.shape[1], OH, -1)


def avg_pool2d_backward(grad, x_shape, kernel, stride, padding):
    """Each input in a window gets 1/(kh*kw) of the window's gradient."""
    N, C = x_shape[:2]
    k = kernel[0] * kernel[1]
    cols = np.broadcast_to(grad.reshape(N, C, 1, -1) / k, (N, C, k, grad.shape[2] * grad.shape[3]))
    return col2im(cols, x_shape, kernel, stride, padding, (1, 1))


def adaptive_bins(size, out_size):
    """PyTorch's adaptive pooling windows: bin i covers [floor(i*size/out), ceil((i+1)*size/out))."""
    return [(i * size // out_size, -(-(i + 1) * size // out_size)) for i in range(out_size)]


def adaptive_avg_pool2d(x, out_size):
    """(N, C, H, W) -> (N, C, OH, OW): each output cell is the mean of its adaptive_bins window."""
    N, C, H, W = x.shape
    out = np.empty((N, C) + tuple(out_size), dtype=x.dtype)
    for i, (h0, h1) in enumerate(adaptive_bins(H, out_size[0])):
        for j, (w0, w1) in enumerate(adaptive_bins(W, out_size[1])):
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return out


def adaptive_avg_pool2d_backward(grad, x_shape):
    """Each input in an output cell's window gets the cell's gradient / (window height * width)."""
    H, W = x_shape[2:]
    dx = np.zeros(x_shape, dtype=grad.dtype)
    for i, (h0, h1) in enumerate(adaptive_bins(H, grad.shape[2])):
        for j, (w0, w1) in enumerate(adaptive_bins(W, grad.shape[3])):
            dx[:, :, h0:h1, w0:w1] += grad[:, :, i:i + 1, j:j + 1] / ((h1 - h0) * (w1 - w0))
    return dx


# ---------------------------------------------------------------- resizing (interpolate)
# A resize reads each output row from one or two input rows and each output column from one
# or two input columns: the axes are independent. The maps (which rows, with what weights) are
# computed here once per axis, with PyTorch's arithmetic (float32 for "nearest"), so that every
# implementation picks the same pixels; the C++ and CUDA kernels take them as arrays.
# ``scales``: the scale factor the user gave for each axis, or None where a size was given.

def nearest_source_index(in_size, out_size, scale=None):
    """PyTorch's "nearest": output i reads input min(floor(i * s), in - 1) in float32, with
    s = 1/scale when a scale factor was given, else in/out; out == in reads i and out == 2 in
    reads i // 2 (PyTorch's shortcuts, which differ from the formula for some scale factors)."""
    i = np.arange(out_size)
    if out_size == in_size:
        return i
    if out_size == 2 * in_size:
        return i // 2
    s = np.float32(1.0 / scale) if scale else np.float32(in_size) / np.float32(out_size)
    return np.minimum(np.floor(i.astype(np.float32) * s).astype(np.int64), in_size - 1)


def linear_source_index(in_size, out_size, scale, align_corners, dtype):
    """(i0, i1, w1): output i = (1 - w1[i]) * input[i0[i]] + w1[i] * input[i1[i]] (PyTorch's "linear").

    Output i lies at input position src = i (in - 1)/(out - 1) with align_corners (the corner
    pixels' centres meet), else src = max((i + 1/2) s - 1/2, 0), pixel centres scaled by s as
    in nearest_source_index; i0 = floor(src), i1 = i0 + 1 (i0 itself at the last pixel),
    w1 = src - i0. Computed in x's ``dtype``, as PyTorch does; out == in is the identity.
    """
    i = np.arange(out_size)
    if out_size == in_size:
        return i, i, np.zeros(out_size, dtype)
    t = np.dtype(dtype).type
    if align_corners:
        src = i.astype(t) * (t(in_size - 1) / t(out_size - 1) if out_size > 1 else t(0))
    else:
        s = t(1.0 / scale) if scale else t(in_size) / t(out_size)
        src = np.maximum((i.astype(t) + t(0.5)) * s - t(0.5), t(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    w1 = np.clip(src - i0.astype(t), t(0), t(1))
    return i0, np.minimum(i0 + 1, in_size - 1), w1


def _scatter_add_axis(values, index, size, axis):
    """The transpose of ``values = out.take(index, axis)``: out (``size`` along axis) with
    out[..., index[k], ...] += values[..., k, ...], one slice k at a time."""
    out = np.zeros(values.shape[:axis] + (size,) + values.shape[axis + 1:], values.dtype)
    source, target = np.moveaxis(values, axis, 0), np.moveaxis(out, axis, 0)  # views: axis first
    for k, i in enumerate(index):
        target[i] += source[k]
    return out


def upsample_nearest2d(x, size, scales=(None, None)):
    """(N, C, H, W) -> (N, C, h, w) = size: out[n, c, i, j] = x[n, c, rows[i], cols[j]]
    (rows and cols: nearest_source_index of each axis)."""
    rows, cols = (nearest_source_index(x.shape[2 + a], size[a], scales[a]) for a in (0, 1))
    return x[:, :, rows[:, None], cols]


def upsample_nearest2d_backward(grad, x_shape, scales=(None, None)):
    """dx: every output's gradient added onto the input pixel it copied (a scatter-add, one axis
    at a time); a pixel copied k times gets k gradients, one never read gets 0."""
    H, W = x_shape[2:]
    rows, cols = (nearest_source_index(x_shape[2 + a], grad.shape[2 + a], scales[a]) for a in (0, 1))
    return _scatter_add_axis(_scatter_add_axis(grad, rows, H, 2), cols, W, 3)


def upsample_bilinear2d(x, size, align_corners, scales=(None, None)):
    """(N, C, H, W) -> (N, C, h, w) = size: each output a weighted mean of its 2x2 input neighbours,
    interpolated along the columns, then the rows (linear_source_index's maps; PyTorch's order)."""
    (y0, y1, wy), (x0, x1, wx) = (linear_source_index(x.shape[2 + a], size[a], scales[a], align_corners, x.dtype)
                                  for a in (0, 1))
    cols = x[..., x0] * (1 - wx) + x[..., x1] * wx                # (N, C, H, w)
    wy = wy[:, None]
    return cols[:, :, y0] * (1 - wy) + cols[:, :, y1] * wy         # (N, C, h, w)


def upsample_bilinear2d_backward(grad, x_shape, align_corners, scales=(None, None)):
    """dx: the forward's weights transposed, its steps in reverse: each output's gradient shared
    between its two source rows, then each of those between its two source columns."""
    H, W = x_shape[2:]
    (y0, y1, wy), (x0, x1, wx) = (linear_source_index(x_shape[2 + a], grad.shape[2 + a], scales[a], align_corners,
                                                      grad.dtype) for a in (0, 1))
    wy = wy[:, None]
    dcols = _scatter_add_axis(grad * (1 - wy), y0, H, 2) + _scatter_add_axis(grad * wy, y1, H, 2)  # (N, C, H, w)
    return _scatter_add_axis(dcols * (1 - wx), x0, W, 3) + _scatter_add_axis(dcols * wx, x1, W, 3)


# ---------------------------------------------------------------- batch norm
# Statistics are per channel (axis 1), over the batch and every spatial position.

def _channel_view(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def batch_norm(x, weight, bias, eps):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, with the batch's biased statistics.

    Returns y and the (mean, biased var, invstd) per channel, which backward and the
    running averages need.
    """
    axes = (0,) + tuple(range(2, x.ndim))
    mean = x.mean(axis=axes)
    var = x.var(axis=axes)
    invstd = 1 / np.sqrt(var + eps)
    xhat = (x - _channel_view(mean, x.ndim)) * _channel_view(invstd, x.ndim)
    y = xhat * _channel_view(weight, x.ndim) + _channel_view(bias, x.ndim)
    return y, mean, var, invstd


def batch_norm_backward(grad, x, weight, mean, invstd):
    """dx = weight * invstd / M * (M * g - sum(g) - xhat * sum(g * xhat)), per channel (M values each)."""
    axes = (0,) + tuple(range(2, x.ndim))
    M = x.size // x.shape[1]
    xhat = (x - _channel_view(mean, x.ndim)) * _channel_view(invstd, x.ndim)
    dbias = grad.sum(axis=axes)
    dweight = (grad * xhat).sum(axis=axes)
    scale = _channel_view(weight * invstd / M, x.ndim)
    dx = scale * (M * grad - _channel_view(dbias, x.ndim) - xhat * _channel_view(dweight, x.ndim))
    return dx, dweight, dbias


# In evaluation mode batch norm uses fixed statistics, and is then a per-channel affine map
# y = x * scale + shift (scale = weight / sqrt(running_var + eps), shift = bias - running_mean
# * scale). The activation that follows it (ReLU, ReLU6) goes into the same pass:
# a "bias + activation" kernel with a per-channel scale.


def channel_affine(x, scale, shift, activation=None):
    """y = act(x * scale[c] + shift[c]) over channel axis 1; act: None, "relu" (max(v, 0)) or "relu6" (clip(v, 0, 6))."""
    y = x * _channel_view(scale, x.ndim) + _channel_view(shift, x.ndim)
    if activation == "relu":
        np.maximum(y, 0, out=y)
    elif activation == "relu6":
        np.clip(y, 0, 6, out=y)
    return y


def channel_affine_backward(grad, x, y, scale, activation=None):
    """(dx, dscale, dshift) of y = channel_affine(x, scale, shift, activation).

    The activation passes the gradient where its output y is strictly inside its linear
    range (y > 0; 0 < y < 6 for ReLU6), as PyTorch's relu and hardtanh do; then
    dshift = sum g, dscale = sum g * x (per channel) and dx = g * scale.
    """
    if activation == "relu":
        grad = np.where(y > 0, grad, 0)
    elif activation == "relu6":
        grad = np.where((y > 0) & (y < 6), grad, 0)
    axes = (0,) + tuple(range(2, x.ndim))
    return grad * _channel_view(scale, x.ndim), (grad * x).sum(axis=axes), grad.sum(axis=axes)


# ---------------------------------------------------------------- losses

def cross_entropy(logits, target):
    """Per row i: loss_i = logsumexp(logits_i) - logits_i[target_i] = -log softmax(logits_i)[target_i].

    logits (N, C), target (N,) integer class indices. Returns (loss, dlogits) with the
    gradient dloss_i/dlogits_ij = softmax(logits_i)_j - [j == target_i], computed here
    because the softmax is at hand: the op's backward only scales it by dL/dloss_i.
    """
    lse = logsumexp(logits, 1, keepdims=True)
    rows = np.arange(len(target))
    loss = lse[:, 0] - logits[rows, target]
    dlogits = np.exp(logits - lse)
    dlogits[rows, target] -= 1
    return loss, dlogits


def bce_with_logits(x, y):
    """-[y log s(x) + (1-y) log(1-s(x))] = max(x, 0) - x*y + log(1 + e^-|x|), stable for any x."""
    return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))


# ---------------------------------------------------------------- the LSTM
# One layer over a whole sequence, time-major: step t's batch is the block x[t], so every
# step reads and writes whole (B, ...) blocks, and all steps together are one matrix.

def lstm_forward(x, h0, c0, w_ih, w_hh, bias):
    """One LSTM layer: x (T, B, I), h0 and c0 (B, H), w_ih (4H, I), w_hh (4H, H), bias (4H,) or None.

    At step t, with s the sigmoid and the four gates in PyTorch's order i, f, g, o:
        z = x_t W_ih^T + bias + h_{t-1} W_hh^T              (B, 4H) = [z_i, z_f, z_g, z_o]
        i, f, g, o = s(z_i), s(z_f), tanh(z_g), s(z_o)
        c_t = f * c_{t-1} + i * g                           forget some memory, write some new
        h_t = o * tanh(c_t)                                 what the step shows of it
    x_t W_ih^T does not depend on h: all T steps are one product. Only h_{t-1} W_hh^T waits.
    Returns hs (T+1, B, H) = h_0..h_T, cs (T+1, B, H) = c_0..c_T and gates (T, B, 4H) = [i, f, g, o]
    of every step: the outputs are hs[1:], and lstm_backward needs all three.
    """
    T, B, _ = x.shape
    H = h0.shape[1]
    hs, cs = np.empty((T + 1, B, H), x.dtype), np.empty((T + 1, B, H), x.dtype)
    hs[0], cs[0] = h0, c0
    gates = np.matmul(x, w_ih.T)                     # (T, B, 4H): every step's input projection at once
    if bias is not None:
        gates += bias
    for t in range(T):
        z = gates[t] + hs[t] @ w_hh.T
        i, f, o = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H]), sigmoid(z[:, 3 * H:])
        g = np.tanh(z[:, 2 * H:3 * H])
        cs[t + 1] = f * cs[t] + i * g
        hs[t + 1] = o * np.tanh(cs[t + 1])
        gates[t] = np.concatenate([i, f, g, o], axis=1)
    return hs, cs, gates


def lstm_backward(d_out, d_cT, x, w_ih, w_hh, hs, cs, gates):
    """Backpropagation through time: the gradients of lstm_forward from those of its outputs.

    d_out (T, B, H): dL/dh_t from each step's output (dL/dh_T included in d_out[T-1]); d_cT (B, H): dL/dc_T.
    Walking back from t = T-1, with dh and dc what reaches h_t and c_t from step t+1 (0 and d_cT at first):
        dh = d_out[t] + dh
        dc = dc + dh * o * (1 - tanh(c_t)^2)                      h_t = o * tanh(c_t)
        dz = [dc * g * i(1-i),  dc * c_{t-1} * f(1-f),  dc * i * (1-g^2),  dh * tanh(c_t) * o(1-o)]
        dh = dz W_hh,  dc = dc * f                                what reaches h_{t-1} and c_{t-1}
    dz (B, 4H) is dL/dz for the step's pre-activations z = [z_i, z_f, z_g, z_o] (s' = s(1-s), tanh' = 1-tanh^2).
    The weights serve every step, so their gradients add up over the steps; with all the dz at hand,
    each is one product over all steps: dx = dZ W_ih, dW_ih = sum_t dz_t^T x_t, dW_hh = sum_t dz_t^T h_{t-1},
    dbias = sum of dZ. Returns dx (T, B, I), dh0 and dc0 (B, H) (what reaches h_0, c_0), dw_ih, dw_hh, dbias.
    """
    T, B, I = x.shape
    H = hs.shape[2]
    dZ = np.empty((T, B, 4 * H), x.dtype)
    dh, dc = np.zeros((B, H), x.dtype), np.array(d_cT, dtype=x.dtype)
    for t in reversed(range(T)):
        i, f, g, o = (gates[t][:, k * H:(k + 1) * H] for k in range(4))
        tanh_c = np.tanh(cs[t + 1])
        dh = d_out[t] + dh
        dc = dc + dh * o * (1 - tanh_c ** 2)
        dZ[t] = np.concatenate([dc * g * i * (1 - i), dc * cs[t] * f * (1 - f), dc * i * (1 - g ** 2),
                                dh * tanh_c * o * (1 - o)], axis=1)
        dh, dc = dZ[t] @ w_hh, dc * f
    dZ2 = dZ.reshape(T * B, 4 * H)                   # the steps' rows one after another
    dx = (dZ2 @ w_ih).reshape(T, B, I)
    dw_ih = dZ2.T @ x.reshape(T * B, I)
    dw_hh = dZ2.T @ hs[:T].reshape(T * B, H)
    return dx, dh, dc, dw_ih, dw_hh, dZ2.sum(axis=0)


# ---------------------------------------------------------------- optimizer updates
# One call updates one parameter in place: ``param`` and the optimizer's state
# arrays change, ``grad`` does not. The fused C++/CUDA versions keep these names and
# arguments (arrays and numbers only). Hyper-parameters become Python floats first:
# a numpy float64 scalar would silently turn a float32 update into a float64 one.

def sgd_step(param, grad, momentum_buf, lr, momentum, weight_decay, nesterov, dampening=0.0):
    """One step of SGD on one parameter, in place (torch.optim.SGD's semantics).

        g      = grad + wd * param                         (L2 weight decay; grad itself is left alone)
        buf    = g                                         on the first step (momentum_buf is None)
        buf    = momentum * buf + (1 - dampening) * g      on later steps (in place)
        update = g + momentum * buf    with nesterov,  buf without,  g when momentum == 0
        param -= lr * update

    Returns the momentum buffer for the optimizer to keep: a new array on the first
    step, the same (updated) array afterwards, and ``momentum_buf`` untouched (None)
    when momentum == 0.
    """
    lr, momentum, weight_decay, dampening = float(lr), float(momentum), float(weight_decay), float(dampening)
    g = grad
    if weight_decay != 0:
        g = grad + weight_decay * param
    if momentum == 0:
        update = g
    else:
        if momentum_buf is None:
            momentum_buf = np.array(g, copy=True)
        else:
            momentum_buf *= momentum
            momentum_buf += (1 - dampening) * g
        update = g + momentum * momentum_buf if nesterov else momentum_buf
    param -= lr * update
    return momentum_buf


def adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """One step of Adam (decoupled=False) or AdamW (decoupled=True) on one parameter, in place.

        AdamW:  param *= 1 - lr * wd               (decoupled weight decay, before the update)
        Adam:   g = grad + wd * param              (L2 weight decay, added to the gradient)
        m = beta1 * m + (1 - beta1) * g            exp_avg, the running mean of the gradient
        v = beta2 * v + (1 - beta2) * g^2          exp_avg_sq, the running mean of its square
        param -= lr * m_hat / (sqrt(v_hat) + eps)  with the bias corrections
                                                   m_hat = m / (1 - beta1^step), v_hat = v / (1 - beta2^step)

    ``step`` counts this parameter's updates, starting at 1 (the first call). Computed
    as PyTorch does: param -= (lr / (1 - beta1^step)) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps).
    """
    lr, beta1, beta2, eps, weight_decay = float(lr), float(beta1), float(beta2), float(eps), float(weight_decay)
    step = int(step)
    if step < 1:
        raise ValueError(f"adam_step: step={step}, but steps count from 1 (the first update is step 1)")
    g = grad
    if weight_decay != 0:
        if decoupled:
            param *= 1 - lr * weight_decay
        else:
            g = grad + weight_decay * param
    exp_avg *= beta1
    exp_avg += (1 - beta1) * g
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * (g * g)
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    # One scratch array holds sqrt(v_hat) + eps, then the update itself.
    scratch = np.sqrt(exp_avg_sq, out=np.empty_like(exp_avg_sq))
    scratch /= math.sqrt(bias_correction2)
    scratch += eps
    np.divide(exp_avg, scratch, out=scratch)
    scratch *= lr / bias_correction1
    param -= scratch
