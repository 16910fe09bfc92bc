"""Shape ops: reshape, permute, expand, cat, pad, indexing, gather, embedding lookup.

They move values around without changing them, so each backward moves the
gradient back to where the value came from (and adds up where one value went to
many places: expand, repeated indices). ``normalize_dims`` reads the ``dim`` argument
of squeeze here and of every reduction in reduce.py.
"""
import math

from .. import deferred
from ..autograd import Function
from ..backend import get_backend
from ..tensor import Tensor, _raw_index
from .elementwise import broadcast_shape


def normalize_dims(op, dim, ndim):
    """``dim`` (None, an int or a tuple, negatives allowed) as a sorted tuple of axes."""
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
        return tuple(range(ndim))  # PyTorch: dim=() reduces over everything, like None
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    n = ndim or 1  # a 0-d tensor accepts dim 0 and -1, as in PyTorch
    for d in dims:
        if not -n <= d < n:
            raise IndexError(f"{op}: dim {d} is out of range for a tensor with {ndim} dims "
                             f"(valid: {-n} to {n - 1})")
    return tuple(sorted({d % n for d in dims})) if ndim else ()


class Reshape(Function):
    """Same values, new shape;  the gradient is reshaped back."""
    returns_view = True

    @staticmethod
    def forward(ctx, x, shape):
        ctx.in_shape = x.shape
        return ctx.backend.reshape(x, shape)

    @staticmethod
    def backward(ctx, grad):
        return ctx.backend.reshape(grad, ctx.in_shape)


class Permute(Function):
    """Reorder the axes;  the gradient gets the inverse order."""
    returns_view = True

    @staticmethod
    def forward(ctx, x, dims):
        ctx.dims = dims
        return ctx.backend.transpose(x, dims)

    @staticmethod
    def backward(ctx, grad):
        inverse = tuple(sorted(range(len(ctx.dims)), key=ctx.dims.__getitem__))
        return ctx.backend.transpose(grad, inverse)


class Expand(Function):
    """Repeat size-1 axes (a broadcast view);  autograd sums the gradient back."""
    returns_view = True

    @staticmethod
    def forward(ctx, x, shape):
        return ctx.backend.broadcast_to(x, shape)

    @staticmethod
    def backward(ctx, grad):
        return grad


def reshape(x, shape):
    """The same values in a new shape (one size may be -1, inferred); derivative in ``Reshape``."""
    shape = tuple(int(s) for s in shape)
    known = math.prod(s for s in shape if s != -1)
    if shape.count(-1) > 1 or (-1 not in shape and known != x.numel()) or \
            (-1 in shape and (known == 0 or x.numel() % known)):
        raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} ({x.numel()} values) "
                         f"into {shape}; the sizes must multiply to {x.numel()} (one size may be -1)")
    return Reshape.apply(x, shape=shape)


def permute(x, dims):
    """Reorder the axes: output axis i is input axis dims[i]; derivative in ``Permute``."""
    dims = tuple(d % x.ndim for d in dims) if x.ndim else tuple(dims)
    if sorted(dims) != list(range(x.ndim)):
        raise ValueError(f"permute: {dims} is not an ordering of the {x.ndim} dims of a {x.shape} tensor")
    return Permute.apply(x, dims=dims)


def transpose(x, dim0, dim1):
    """Swap axes dim0 and dim1 (a permute)."""
    dim0, dim1 = (_dim("transpose", d, x.ndim) for d in (dim0, dim1))
    dims = list(range(x.ndim))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return permute(x, dims)


def expand(x, shape):
    """Broadcast size-1 axes (and new leading ones) to ``shape`` without copying, -1 keeping a size;
    derivative in ``Expand``."""
    shape = tuple(int(s) for s in shape)
    lead = len(shape) - x.ndim
    if lead < 0:
        raise ValueError(f"expand: {shape} has fewer dims than the tensor's shape {x.shape}")
    if any(s == -1 for s in shape[:lead]):
        raise ValueError(f"expand: -1 (keep the size) is not allowed for the new leading dims of {shape}")
    shape = tuple(x.shape[i - lead] if s == -1 else s for i, s in enumerate(shape))
    if broadcast_shape("expand", x.shape, shape) != shape:
        raise ValueError(f"expand: a {x.shape} tensor cannot expand to {shape}; only size-1 dims can grow")
    return Expand.apply(x, shape=shape)


def squeeze(x, dim=None):
    """Remove size-1 dims (all of them, or those in ``dim``)."""
    axes = normalize_dims("squeeze", dim, x.ndim)
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if not (i in axes and n == 1)))


def unsqueeze(x, dim):
    """Insert a size-1 dim at ``dim``."""
    axis = _dim("unsqueeze", dim, x.ndim + 1)
    return reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


def flatten(x, start_dim=0, end_dim=-1):
    """Merge axes start_dim..end_dim into one of their product size (a 0-d tensor becomes shape (1,))."""
    if x.ndim == 0:
        return reshape(x, (1,))
    start, end = _dim("flatten", start_dim, x.ndim), _dim("flatten", end_dim, x.ndim)
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    return reshape(x, x.shape[:start] + (-1,) + x.shape[end + 1:])


# ---------------------------------------------------------------- joining and splitting

class Cat(Function):
    """Join tensors along an axis;  each gets back its slice of the gradient."""
    @staticmethod
    def forward(ctx, *arrays, axis):
        ctx.axis, ctx.sizes = axis, [a.shape[axis] for a in arrays]
        return ctx.backend.concatenate(arrays, axis)

    @staticmethod
    def backward(ctx, grad):
        grads, start = [], 0
        for size in ctx.sizes:
            index = (slice(None),) * ctx.axis + (slice(start, start + size),)
            grads.append(ctx.backend.getitem(grad, index))
            start += size
        return tuple(grads)


def cat(tensors, dim=0):
    """Join tensors along an existing dim (the other dims must match); derivative in ``Cat``."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: needs at least one tensor")
    first = tensors[0]
    if first.ndim == 0:
        raise ValueError("cat: 0-d tensors have no dim to join along; use minidl.stack")
    axis = _dim("cat", dim, first.ndim)
    for t in tensors:
        if t.ndim != first.ndim or t.shape[:axis] + t.shape[axis + 1:] != first.shape[:axis] + first.shape[axis + 1:]:
            shown = ", ".join(str(t.shape) for t in tensors)
            raise ValueError(f"cat: shapes {shown} must match in every dim except dim {dim}")
        if t.dtype != first.dtype:
            raise TypeError(f"cat: dtypes differ ({first.dtype} and {t.dtype}); convert with .to(dtype)")
    return Cat.apply(*tensors, axis=axis)


def stack(tensors, dim=0):
    """Join tensors of one shape along a new axis."""
    tensors = list(tensors)
    shapes = {t.shape for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"stack: all tensors must have the same shape, got {sorted(shapes)}")
    return cat([unsqueeze(t, dim) for t in tensors], dim)


def split(x, split_size_or_sections, dim=0):
    """Slices of ``x`` along ``dim``: equal chunks of a size, or the given sizes (PyTorch's rule)."""
    axis = _dim("split", dim, x.ndim)
    n = x.shape[axis]
    if isinstance(split_size_or_sections, int):
        if split_size_or_sections < 1:
            raise ValueError(f"split: the chunk size must be at least 1, got {split_size_or_sections}")
        sizes = [min(split_size_or_sections, n - s) for s in range(0, n, split_size_or_sections)] or [0]
    else:
        sizes = list(split_size_or_sections)
        if any(s < 0 for s in sizes) or sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} add up to {sum(sizes)}, but dim {dim} has size {n}")
    pieces, start = [], 0
    for size in sizes:
        pieces.append(getitem(x, (slice(None),) * axis + (slice(start, start + size),)))
        start += size
    return tuple(pieces)


def chunk(x, chunks, dim=0):
    """Pieces of ceil(n / chunks) along ``dim``; the last may be smaller, and there may be fewer than chunks."""
    n = x.shape[dim]
    return split(x, -(-n // chunks), dim)


class Pad(Function):
    """Surround with a constant;  the gradient is the middle part."""
    @staticmethod
    def forward(ctx, x, widths, value):
        ctx.inside = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, x.shape))
        return ctx.backend.pad(x, widths, value)

    @staticmethod
    def backward(ctx, grad):
        return ctx.backend.getitem(grad, ctx.inside)


def pad(x, pad, value=0.0):
    """PyTorch's F.pad: ``pad`` = (left, right) of the last dim, then (top, bottom) of the one before, ...;
    derivative in ``Pad``."""
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: {pad} must hold (before, after) pairs for at most {x.ndim} dims, last dim first")
    pairs = [tuple(pad[i:i + 2]) for i in range(0, len(pad), 2)]
    widths = [(0, 0)] * (x.ndim - len(pairs)) + pairs[::-1]
    if any(lo < 0 or hi < 0 for lo, hi in widths):
        raise ValueError(f"pad: negative padding {pad} is not supported")
    return Pad.apply(x, widths=tuple(widths), value=value)


# ---------------------------------------------------------------- indexing

class GetItem(Function):
    """y = x[index] (ints, slices, None, int arrays, bool masks);
    the gradient is scattered back with += so repeated indices add up."""

    @staticmethod
    def forward(ctx, x, index):
        ctx.index, ctx.shape = index, x.shape
        ctx.returns_view = _is_basic(index)  # only ints, slices, None and ... give a view
        return ctx.backend.getitem(x, index)

    @staticmethod
    def backward(ctx, grad):
        be = ctx.backend
        return be.index_add(be.zeros(ctx.shape, grad.dtype), ctx.index, grad)


def _dim(op, dim, ndim):
    """A dim in [-ndim, ndim) as a non-negative axis, or an IndexError naming the op."""
    if not -ndim <= dim < ndim:
        raise IndexError(f"{op}: dim {dim} is out of range for {ndim} dims (valid: {-ndim} to {ndim - 1})")
    return dim % ndim


def _is_basic(index):
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, slice)) or i is None or i is Ellipsis for i in parts)


def getitem(x, index):
    """x[index] for ints, slices, None, ..., int tensors and bool masks; derivative in ``GetItem``."""
    index = _raw_index(index)
    try:
        return GetItem.apply(x, index=index)
    except IndexError as e:
        raise IndexError(f"getitem: index {index!r} does not fit a tensor of shape {x.shape}: {e}") from None


class Gather(Function):
    """y[i][j] = x[i][index[i][j]] (along ``axis``);  the gradient is scatter-added back.

    As in PyTorch the index may be smaller than x in the other dims: only the leading
    part of x that the index covers is read."""
    @staticmethod
    def forward(ctx, x, index, axis):
        ctx.save_for_backward(index)
        ctx.axis, ctx.shape = axis, x.shape
        covered = tuple(slice(None) if d == axis else slice(0, n) for d, n in enumerate(index.shape))
        return ctx.backend.gather(ctx.backend.getitem(x, covered), axis, index)

    @staticmethod
    def backward(ctx, grad):
        index, = ctx.saved_arrays
        return ctx.backend.scatter_add(ctx.shape, ctx.axis, index, grad), None


def gather(x, dim, index):
    """y[i][j] = x[i][index[i][j]] along ``dim`` (index: integers, same ndim, no larger than x elsewhere);
    derivative in ``Gather``."""
    if index.dtype.kind not in "iu":
        raise TypeError(f"gather: index must be an integer tensor, not {index.dtype}")
    if index.ndim != x.ndim:
        raise ValueError(f"gather: index {index.shape} must have as many dims as the input {x.shape}")
    axis = _dim("gather", dim, x.ndim)
    if any(i > n for d, (i, n) in enumerate(zip(index.shape, x.shape)) if d != axis):
        raise ValueError(f"gather: index {index.shape} is larger than the input {x.shape} outside dim {dim}")
    deferred.index_check("gather", index, x.shape[axis], lambda low, high: f"gather: index values must be in "
                         f"[0, {x.shape[axis] - 1}] for dim {dim} of {x.shape}, got values in [{low}, {high}]")
    return Gather.apply(x, index, axis=axis)


class Embedding(Function):
    """y[...] = weight[ids[...]]: a table lookup, one row per id;
    the gradient of each output row is added to the row it came from."""
    @staticmethod
    def forward(ctx, weight, ids):
        ctx.save_for_backward(ids)
        ctx.num_embeddings = weight.shape[0]
        return ctx.backend.embedding(weight, ids)

    @staticmethod
    def backward(ctx, grad):
        ids, = ctx.saved_arrays
        return ctx.backend.embedding_backward(grad, ids, ctx.num_embeddings), None


def embedding(ids, weight):
    """PyTorch's F.embedding(input, weight): rows of ``weight`` picked by the integer ``ids``;
    derivative in ``Embedding``."""
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be an integer tensor, not {ids.dtype}; use ids.long()")
    n = weight.shape[0]
    deferred.index_check("embedding", ids, n, lambda low, high: f"embedding: ids range over [{low}, {high}], but the "
                                                               f"table has {n} rows (valid ids: 0 to {n - 1})")
    return Embedding.apply(weight, ids)


# ---------------------------------------------------------------- devices

class ToDevice(Function):
    """The same values on another device;  the gradient goes back to the first one."""
    @staticmethod
    def forward(ctx, x, device):
        ctx.device = device
        return get_backend(device).asarray(ctx.backend.to_numpy(x))

    @staticmethod
    def backward(ctx, grad):
        return ctx.backend.asarray(get_backend(ctx.device).to_numpy(grad))


def to_device(x, device):
    """The same values on another device; derivative in ``ToDevice``."""
    get_backend(device)  # an unknown device fails here, with the list of known ones
    return ToDevice.apply(x, device=device)
