"""Every differentiable op, once: how to draw its inputs and how to call it.

``fn(lib, F, *tensors)`` is written against PyTorch's API, which minidl follows, so
the same line runs with (minidl, minidl.nn.functional) and with (torch,
torch.nn.functional). test_gradcheck.py checks each op's backward against finite
differences, test_torch_parity.py checks values and gradients against PyTorch, and
`python -m tests.op_specs` prints the README's op table from this list.
"""
import pathlib
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
from hypothesis import strategies as st

from tests.strategies import arrays, broadcastable_shapes, int_arrays, shapes


@dataclass
class OpSpec:
    name: str                      # the op as the README lists it
    draw_inputs: Callable          # draw(data) -> list of numpy arrays (float arrays get gradients)
                                   # and ("params", value, ...) entries passed to fn unchanged
    fn: Callable                   # fn(lib, F, *tensors) -> tensor
    group: str = ""
    torch: bool = True             # compared with PyTorch?
    notes: str = ""
    examples: int = 15


SPECS = []


def op(name, group, examples=15, torch=True, notes=""):
    """Decorator: the function below returns (call, draw) for the op ``name``."""
    def register(factory):
        fn, draw = factory()
        SPECS.append(OpSpec(name, draw, fn, group, torch, notes, examples))
        return factory
    return register


def unary(name, group, fn, kind="normal", **kw):
    def draw(data):
        return [data.draw(arrays(data.draw(shapes()), kind))]
    SPECS.append(OpSpec(name, draw, fn, group, **kw))


def binary(name, group, fn, kinds=("normal", "normal"), **kw):
    def draw(data):
        sa, sb = data.draw(broadcastable_shapes())
        return [data.draw(arrays(sa, kinds[0])), data.draw(arrays(sb, kinds[1]))]
    SPECS.append(OpSpec(name, draw, fn, group, **kw))


# ---------------------------------------------------------------- elementwise
E = "elementwise"
binary("add", E, lambda m, F, a, b: a + b)
binary("sub", E, lambda m, F, a, b: a - b)
binary("mul", E, lambda m, F, a, b: a * b)
binary("div", E, lambda m, F, a, b: a / b, kinds=("normal", "nonzero"))
binary("pow", E, lambda m, F, a, b: a ** b, kinds=("positive", "normal"))
unary("pow (scalar exponent)", E, lambda m, F, x: x ** 3)
binary("maximum", E, lambda m, F, a, b: m.maximum(a, b))
binary("minimum", E, lambda m, F, a, b: m.minimum(a, b))
unary("neg", E, lambda m, F, x: -x)
unary("exp", E, lambda m, F, x: x.exp())
unary("log", E, lambda m, F, x: x.log(), kind="positive")
unary("sqrt", E, lambda m, F, x: x.sqrt(), kind="positive")
unary("abs", E, lambda m, F, x: x.abs(), kind="nonzero")
unary("tanh", E, lambda m, F, x: x.tanh())
unary("sigmoid", E, lambda m, F, x: x.sigmoid())
unary("relu", E, lambda m, F, x: F.relu(x), kind="nonzero")
unary("relu6", E, lambda m, F, x: F.relu6(x * 4 + 3), kind="nonzero",
      notes="inputs kept off the kinks at 0 and 6")
unary("leaky_relu", E, lambda m, F, x: F.leaky_relu(x, 0.1), kind="nonzero")
unary("gelu", E, lambda m, F, x: F.gelu(x))
unary("gelu (tanh)", E, lambda m, F, x: F.gelu(x, approximate="tanh"))
unary("clamp", E, lambda m, F, x: x.clamp(-0.5, 0.7))
unary("clamp (min only)", E, lambda m, F, x: x.clamp(min=0.25))


@op("where", E)
def _where():
    def draw(data):
        sc, sa, sb = data.draw(broadcastable_shapes(count=3))
        cond = data.draw(arrays(sc)) > 0
        return [cond, data.draw(arrays(sa)), data.draw(arrays(sb))]
    return (lambda m, F, c, a, b: m.where(c, a, b)), draw


# ---------------------------------------------------------------- reductions
R = "reduce"


def _dims(data, ndim):
    return data.draw(st.one_of(st.none(), st.integers(-ndim, ndim - 1),
                               st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple)))


def _reduce_spec(name, call, kind="normal", one_dim=False, min_side=1, **kw):
    """call(x, dim, keepdim) on the tensor; dim and keepdim are drawn."""
    def draw(data):
        shape = data.draw(shapes(min_dims=1, min_side=min_side))
        dim = data.draw(st.integers(-len(shape), len(shape) - 1)) if one_dim else _dims(data, len(shape))
        keepdim = data.draw(st.booleans())
        x = data.draw(arrays(shape, kind))
        return [x, ("params", dim, keepdim)]
    SPECS.append(OpSpec(name, draw, call, R, **kw))


_reduce_spec("sum", lambda m, F, x, dim, keep: x.sum() if dim is None else x.sum(dim, keepdim=keep))
_reduce_spec("mean", lambda m, F, x, dim, keep: x.mean() if dim is None else x.mean(dim, keepdim=keep))
_reduce_spec("var", lambda m, F, x, dim, keep: x.var() if dim is None else x.var(dim, keepdim=keep),
             min_side=2, notes="unbiased (correction=1), like PyTorch")
_reduce_spec("max", lambda m, F, x, dim, keep: x.max() if dim is None else x.max(dim, keepdim=keep).values,
             kind="wide", one_dim=True)
_reduce_spec("min", lambda m, F, x, dim, keep: x.min() if dim is None else x.min(dim, keepdim=keep).values,
             kind="wide", one_dim=True)
_reduce_spec("amax", lambda m, F, x, dim, keep: x.amax(dim, keepdim=keep) if dim is not None else x.amax(),
             kind="wide")
_reduce_spec("softmax", lambda m, F, x, dim, keep: F.softmax(x, dim), one_dim=True)
_reduce_spec("log_softmax", lambda m, F, x, dim, keep: F.log_softmax(x, dim), one_dim=True)
_reduce_spec("logsumexp", lambda m, F, x, dim, keep: x.logsumexp(dim, keepdim=keep), one_dim=True)

# ---------------------------------------------------------------- matmul
M = "matmul"


@op("matmul", M)
def _matmul():
    def draw(data):
        m, k, n = (data.draw(st.integers(1, 6)) for _ in range(3))
        batch_a, batch_b = data.draw(broadcastable_shapes(max_dims=2))
        return [data.draw(arrays(batch_a + (m, k))), data.draw(arrays(batch_b + (k, n)))]
    return (lambda m, F, a, b: a @ b), draw


@op("matmul (1-D operands)", M)
def _matmul_1d():
    def draw(data):
        k, n = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
        case = data.draw(st.sampled_from(["vv", "vm", "mv"]))
        a = (k,) if case[0] == "v" else (n, k)
        b = (k,) if case[1] == "v" else (k, n)
        return [data.draw(arrays(a)), data.draw(arrays(b))]
    return (lambda m, F, a, b: m.matmul(a, b)), draw


@op("linear", M)
def _linear():
    def draw(data):
        batch = data.draw(shapes(min_dims=1, max_dims=2))
        i, o = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
        return [data.draw(arrays(batch + (i,))), data.draw(arrays((o, i))), data.draw(arrays((o,)))]
    return (lambda m, F, x, w, b: F.linear(x, w, b)), draw


# ---------------------------------------------------------------- shapes and indexing
S = "shape"


@op("reshape", S)
def _reshape():
    def draw(data):
        shape = data.draw(shapes(min_dims=1))
        return [data.draw(arrays(shape))]
    return (lambda m, F, x: x.reshape(-1, 1) * 2), draw


@op("permute / transpose", S)
def _permute():
    def draw(data):
        shape = data.draw(shapes(min_dims=2))
        return [data.draw(arrays(shape)), ("params", data.draw(st.permutations(range(len(shape)))))]
    return (lambda m, F, x, perm: x.permute(*perm).transpose(0, -1) * 2), draw


@op("expand", S)
def _expand():
    def draw(data):
        a, _ = data.draw(broadcastable_shapes())
        full = tuple(n if n > 1 else data.draw(st.integers(1, 3)) for n in a)
        return [data.draw(arrays(a)), ("params", (2,) + full)]
    return (lambda m, F, x, shape: x.expand(*shape) * 1.5), draw


@op("squeeze / unsqueeze", S)
def _squeeze():
    def draw(data):
        shape = data.draw(shapes(min_dims=1, min_side=1, max_side=2))
        return [data.draw(arrays(shape))]
    return (lambda m, F, x: x.unsqueeze(0).squeeze() * 3), draw


@op("flatten", S)
def _flatten():
    def draw(data):
        return [data.draw(arrays(data.draw(shapes(min_dims=2))))]
    return (lambda m, F, x: x.flatten(1) * 2), draw


@op("cat", S)
def _cat():
    def draw(data):
        shape = list(data.draw(shapes(min_dims=1)))
        axis = data.draw(st.integers(0, len(shape) - 1))
        parts = []
        for _ in range(data.draw(st.integers(1, 3))):
            shape[axis] = data.draw(st.integers(1, 3))
            parts.append(data.draw(arrays(tuple(shape))))
        return parts + [("params", axis)]
    return (lambda m, F, *xs: m.cat(xs[:-1], dim=xs[-1])), draw


@op("stack", S)
def _stack():
    def draw(data):
        shape = data.draw(shapes())
        return [data.draw(arrays(shape)), data.draw(arrays(shape)), ("params", data.draw(st.integers(0, len(shape))))]
    return (lambda m, F, a, b, dim: m.stack([a, b], dim=dim)), draw


@op("split", S)
def _split():
    def draw(data):
        shape = data.draw(shapes(min_dims=1, min_side=2))
        return [data.draw(arrays(shape)), ("params", data.draw(st.integers(1, 3)))]
    return (lambda m, F, x, size: tuple(p * (i + 1) for i, p in enumerate(x.split(size, dim=-1)))), draw


@op("pad", S)
def _pad():
    def draw(data):
        shape = data.draw(shapes(min_dims=1, max_dims=3))
        widths = tuple(data.draw(st.integers(0, 2)) for _ in range(2 * data.draw(st.integers(1, len(shape)))))
        return [data.draw(arrays(shape)), ("params", widths)]
    return (lambda m, F, x, widths: F.pad(x, widths, value=0.5) * 2), draw


@op("getitem (ints, slices, None)", S)
def _getitem_basic():
    def draw(data):
        shape = data.draw(shapes(min_dims=2, min_side=2))
        return [data.draw(arrays(shape))]
    return (lambda m, F, x: x[1, ::2, None] * 2 + x[-1:, 1:][..., :1]), draw


@op("getitem (int arrays, repeats)", S)
def _getitem_ints():
    def draw(data):
        shape = data.draw(shapes(min_dims=1))
        idx = data.draw(int_arrays((data.draw(st.integers(1, 6)),), 0, shape[0]))
        return [data.draw(arrays(shape)), idx]
    return (lambda m, F, x, idx: x[idx] * 2), draw


@op("getitem (bool mask)", S)
def _getitem_mask():
    def draw(data):
        shape = data.draw(shapes(min_dims=1))
        x = data.draw(arrays(shape))
        return [x, data.draw(arrays(shape)) > 0]
    return (lambda m, F, x, mask: x[mask] * 2), draw


@op("gather", S)
def _gather():
    def draw(data):
        shape = data.draw(shapes(min_dims=2, max_dims=3))
        axis = data.draw(st.integers(0, len(shape) - 1))
        ishape = list(shape)
        ishape[axis] = data.draw(st.integers(1, 4))
        return [data.draw(arrays(shape)), data.draw(int_arrays(tuple(ishape), 0, shape[axis])), ("params", axis)]
    return (lambda m, F, x, idx, axis: x.gather(axis, idx)), draw


@op("embedding", S)
def _embedding():
    def draw(data):
        n, d = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 4))
        ids = data.draw(int_arrays(data.draw(shapes(min_dims=1, max_dims=2)), 0, n))
        return [ids, data.draw(arrays((n, d)))]
    return (lambda m, F, ids, w: F.embedding(ids, w)), draw


# ---------------------------------------------------------------- losses
L = "loss"


def _class_problem(data):
    n, c = data.draw(st.integers(1, 6)), data.draw(st.integers(2, 5))
    return [data.draw(arrays((n, c))), data.draw(int_arrays((n,), 0, c))]


@op("cross_entropy", L)
def _ce():
    def draw(data):
        return _class_problem(data) + [("params", data.draw(st.sampled_from(["mean", "sum", "none"])))]
    return (lambda m, F, x, y, red: F.cross_entropy(x, y, reduction=red)), draw


@op("cross_entropy (label smoothing)", L)
def _ce_smooth():
    def draw(data):
        return _class_problem(data) + [("params", data.draw(st.sampled_from([0.1, 0.3])))]
    return (lambda m, F, x, y, eps: F.cross_entropy(x, y, label_smoothing=eps)), draw


@op("nll_loss", L)
def _nll():
    def draw(data):
        return _class_problem(data)
    return (lambda m, F, x, y: F.nll_loss(F.log_softmax(x, 1), y)), draw


def _regression(data, kinds=("normal", "normal")):
    shape = data.draw(shapes(min_dims=1))
    return [data.draw(arrays(shape, kinds[0])), data.draw(arrays(shape, kinds[1]))]


@op("mse_loss", L)
def _mse():
    return (lambda m, F, x, y: F.mse_loss(x, y)), _regression


@op("l1_loss", L)
def _l1():
    def draw(data):
        x, y = _regression(data)
        return [x, x + np.sign(y - x + 1e-9) * (np.abs(y - x) + 0.1)]  # keep |x - y| off the kink
    return (lambda m, F, x, y: F.l1_loss(x, y)), draw


@op("binary_cross_entropy_with_logits", L)
def _bce():
    def draw(data):
        x, y = _regression(data)
        return [x * 3, 1 / (1 + np.exp(-y))]
    return (lambda m, F, x, y: F.binary_cross_entropy_with_logits(x, y)), draw


# ---------------------------------------------------------------- convolution, pooling, normalisation
C = "conv"


@op("conv2d", C, examples=12)
def _conv2d():
    def draw(data):
        groups = data.draw(st.integers(1, 2))
        cin, cout = groups * data.draw(st.integers(1, 2)), groups * data.draw(st.integers(1, 2))
        k = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
        stride, padding, dilation = (data.draw(st.integers(1, 2)) for _ in range(3))
        need = [dilation * (kk - 1) + 1 - 2 * padding for kk in k]
        hw = tuple(data.draw(st.integers(max(n, 1), max(n, 1) + 3)) for n in need)
        x = data.draw(arrays((data.draw(st.integers(1, 2)), cin) + hw))
        w = data.draw(arrays((cout, cin // groups) + k))
        b = data.draw(arrays((cout,)))
        return [x, w, b, ("params", dict(stride=stride, padding=padding, dilation=dilation, groups=groups))]
    return (lambda m, F, x, w, b, kw: F.conv2d(x, w, b, **kw)), draw


@op("conv2d (depthwise)", C, examples=10)
def _depthwise():
    def draw(data):
        c = data.draw(st.integers(1, 4))
        k = data.draw(st.sampled_from([3, 5]))
        stride = data.draw(st.integers(1, 2))
        hw = (data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6)))
        return [data.draw(arrays((2, c) + hw)), data.draw(arrays((c, 1, k, k))),
                ("params", dict(stride=stride, padding=k // 2, groups=c))]
    return (lambda m, F, x, w, kw: F.conv2d(x, w, **kw)), draw


def _pool_input(data, k_max=3):
    k = data.draw(st.integers(1, k_max))
    stride = data.draw(st.integers(1, 3))
    padding = data.draw(st.integers(0, k // 2))
    hw = (data.draw(st.integers(k, k + 4)), data.draw(st.integers(k, k + 4)))
    return k, stride, padding, hw


@op("max_pool2d", C)
def _maxpool():
    def draw(data):
        k, stride, padding, hw = _pool_input(data)
        x = data.draw(arrays((2, 2) + hw, kind="wide"))
        return [x, ("params", dict(kernel_size=k, stride=stride, padding=padding))]
    return (lambda m, F, x, kw: F.max_pool2d(x, **kw)), draw


@op("avg_pool2d", C)
def _avgpool():
    def draw(data):
        k, stride, padding, hw = _pool_input(data)
        return [data.draw(arrays((2, 2) + hw)), ("params", dict(kernel_size=k, stride=stride, padding=padding))]
    return (lambda m, F, x, kw: F.avg_pool2d(x, **kw)), draw


@op("adaptive_avg_pool2d", C)
def _adaptive():
    def draw(data):
        hw = (data.draw(st.integers(1, 7)), data.draw(st.integers(1, 7)))
        out = (data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)))
        return [data.draw(arrays((2, 3) + hw)), ("params", out)]
    return (lambda m, F, x, out: F.adaptive_avg_pool2d(x, out)), draw


def _resize_input(data):
    """An (N, C, H, W) input and interpolate's size or scale_factor (up or down; factors keep h, w >= 1)."""
    x = data.draw(arrays((2, 2, data.draw(st.integers(2, 6)), data.draw(st.integers(2, 6)))))
    if data.draw(st.booleans()):
        return x, dict(size=(data.draw(st.integers(1, 9)), data.draw(st.integers(1, 9))))
    return x, dict(scale_factor=data.draw(st.sampled_from([0.75, 1.5, 2, 2.7])))


@op("interpolate (nearest)", C)
def _interpolate_nearest():
    def draw(data):
        x, kw = _resize_input(data)
        return [x, ("params", kw)]
    return (lambda m, F, x, kw: F.interpolate(x, mode="nearest", **kw)), draw


@op("interpolate (bilinear)", C, notes="align_corners False and True")
def _interpolate_bilinear():
    def draw(data):
        x, kw = _resize_input(data)
        return [x, ("params", dict(kw, align_corners=data.draw(st.booleans())))]
    return (lambda m, F, x, kw: F.interpolate(x, mode="bilinear", **kw)), draw


@op("pixel_shuffle", C)
def _pixel_shuffle():
    def draw(data):
        r = data.draw(st.integers(1, 3))
        return [data.draw(arrays((2, data.draw(st.integers(1, 2)) * r * r, data.draw(st.integers(1, 3)),
                                  data.draw(st.integers(1, 3))))), ("params", r)]
    return (lambda m, F, x, r: F.pixel_shuffle(x, r)), draw


@op("pixel_unshuffle", C)
def _pixel_unshuffle():
    def draw(data):
        r = data.draw(st.integers(1, 3))
        return [data.draw(arrays((2, data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3)) * r,
                                  data.draw(st.integers(1, 3)) * r))), ("params", r)]
    return (lambda m, F, x, r: F.pixel_unshuffle(x, r)), draw


def batch_norm_then(m, F, activation, *args, **kwargs):
    """F.batch_norm followed by ``activation``: minidl's argument (fused in eval mode), PyTorch's own op."""
    if m.__name__ == "torch":
        y = F.batch_norm(*args, **kwargs)
        return {None: y, "relu": F.relu(y), "relu6": F.relu6(y)}[activation] if activation else y
    return F.batch_norm(*args, activation=activation, **kwargs)


ACTIVATION = st.sampled_from([None, "relu", "relu6"])
# weight * 4 and bias * 4 + 3 spread the output over both of ReLU6's kinks (0 and 6)


@op("batch_norm (training)", C)
def _bn_train():
    def draw(data):
        shape = data.draw(st.sampled_from([(4, 3), (2, 3, 2, 2), (3, 2, 1, 3)]))
        c = shape[1]
        return [data.draw(arrays(shape)), data.draw(arrays((c,))), data.draw(arrays((c,))),
                ("params", data.draw(ACTIVATION))]

    def call(m, F, x, w, b, activation):
        return batch_norm_then(m, F, activation, x, None, None, w * 4, b * 4 + 3, training=True)
    return call, draw


@op("batch_norm (eval)", C, notes="with activation None, relu, relu6: one fused pass (ChannelAffine)")
def _bn_eval():
    def draw(data):
        shape = data.draw(st.sampled_from([(4, 3), (2, 3, 2, 2), (3, 5, 7)]))
        c = shape[1]
        stats = [data.draw(arrays((c,))), data.draw(arrays((c,), "positive"))]
        return [data.draw(arrays(shape)), data.draw(arrays((c,))), data.draw(arrays((c,))), ("params", stats),
                ("params", data.draw(ACTIVATION))]

    def call(m, F, x, w, b, stats, activation):
        rm, rv = (m.tensor(s, dtype=x.dtype, device=x.device) for s in stats)
        return batch_norm_then(m, F, activation, x, rm, rv, w * 4, b * 4 + 3, training=False)
    return call, draw


@op("dropout", C, torch=False, notes="same seed, same mask; statistics and PyTorch's scaling in test_ops_behaviour.py")
def _dropout():
    def draw(data):
        return [data.draw(arrays(data.draw(shapes(min_dims=1))))]

    def call(m, F, x):
        m.manual_seed(0)  # the same mask on every call, so finite differences see one function
        return F.dropout(x, 0.3, training=True)
    return call, draw


# ---------------------------------------------------------------- recurrent
RNN = "rnn"


def lstm_layer(m, F, x, h0, c0, w_ih, w_hh, bias):
    """One LSTM layer -> (outputs, h_T, c_T): minidl's op ``lstm``; PyTorch's ``torch.lstm``, the function
    under nn.LSTM (state with a layer axis, its two biases given as bias and zeros)."""
    if m.__name__ == "torch":
        out, h, c = m.lstm(x, (h0[None], c0[None]), [w_ih, w_hh, bias, m.zeros_like(bias)], True, 1, 0.0, False,
                           False, True)
        return out, h[0], c[0]
    return m.ops.rnn.lstm(x, h0, c0, w_ih, w_hh, bias)


@op("lstm", RNN, examples=8, notes="one layer as one op, backpropagation through time in its kernels")
def _lstm():
    def draw(data):
        B, T, I, H = (data.draw(st.integers(1, 3)) for _ in range(4))
        shapes_ = [(B, T, I), (B, H), (B, H), (4 * H, I), (4 * H, H), (4 * H,)]
        return [data.draw(arrays(s)) for s in shapes_]
    return lstm_layer, draw


SPECS_BY_NAME = {s.name: s for s in SPECS}

# Which csrc/cuda files' kernels each op launches in float32 on "cuda" and "emu", forward and backward
# ("reduce" stands for reduce.cu and partials.cu, its two-pass form for long rows); () = glue only:
# numpy_ref's function run by the device's array module (CuPy on "cuda"). float64 is glue for every
# op (the kernels are float32). tests/test_device_ops.py checks this against the kernels each op
# launches, and the README's op table shows it.
EW, RED = "elementwise", "reduce"
DEVICE_KERNELS = {
    **{name: (EW, RED) for name in ("add", "sub", "mul", "div", "pow", "maximum", "minimum")},  # RED: broadcast grads
    **{name: (EW,) for name in ("pow (scalar exponent)", "neg", "exp", "log", "sqrt", "abs", "tanh", "sigmoid",
                                "relu", "relu6", "leaky_relu", "gelu", "gelu (tanh)")},
    "clamp": (), "clamp (min only)": (),
    "where": (RED,),
    "sum": (RED,), "mean": (EW, RED), "var": (EW, RED), "amax": (EW, RED),
    "max": (), "min": (),  # the glue's argmax / argmin, then a gather
    "softmax": (EW, RED, "softmax"), "log_softmax": (EW, RED, "softmax"), "logsumexp": (EW, "softmax"),
    "matmul": ("matmul", RED), "matmul (1-D operands)": ("matmul",), "linear": (EW, "matmul", RED),
    # shapes and indexing: glue (the elementwise and reduce kernels their specs' `* 2` and `+` run are not
    # theirs); expand's backward sums over the expanded axes
    **{name: () for name in ("reshape", "permute / transpose", "squeeze / unsqueeze", "flatten", "split", "pad",
                             "getitem (int arrays, repeats)", "getitem (bool mask)", "getitem (ints, slices, None)",
                             "cat", "stack", "gather")},
    "expand": (RED,),
    "embedding": ("embedding",),
    **{name: (EW, RED, "softmax") for name in ("cross_entropy", "cross_entropy (label smoothing)", "nll_loss")},
    **{name: (EW, RED) for name in ("mse_loss", "l1_loss", "binary_cross_entropy_with_logits")},
    "conv2d": ("conv", EW, "matmul", RED), "conv2d (depthwise)": ("conv",),
    "max_pool2d": ("pool",), "avg_pool2d": ("pool",), "adaptive_avg_pool2d": (),
    "interpolate (nearest)": ("resize",), "interpolate (bilinear)": ("resize",),
    "pixel_shuffle": (), "pixel_unshuffle": (),
    "batch_norm (training)": ("batchnorm", EW, RED), "batch_norm (eval)": ("batchnorm", EW, RED),
    "dropout": (EW,),
    "lstm": ("lstm", EW, "matmul", RED),
}


def markdown_table():
    """The README's op table."""
    lines = ["| op | group | gradcheck (float64, hypothesis) | PyTorch parity "
             "| cuda / emu in float32: csrc/cuda kernels (glue: CuPy's / numpy's routines; float64: glue) "
             "| notes |",
             "| --- | --- | --- | --- | --- | --- |"]
    for s in SPECS:
        kernels = ", ".join(f"{k}.cu" for k in DEVICE_KERNELS[s.name]) or "glue"
        lines.append(f"| `{s.name}` | {s.group} | yes | {'yes' if s.torch else 'n/a'} | {kernels} | {s.notes} |")
    return "\n".join(lines)


README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- op-table:start -->", "<!-- op-table:end -->"


def readme_table():
    text = README.read_text()
    return text[text.index(START) + len(START):text.index(END)].strip()


if __name__ == "__main__":
    # python -m tests.op_specs            print the table
    # python -m tests.op_specs --update   write it into README.md
    if sys.argv[1:] == ["--update"]:
        text = README.read_text()
        head, rest = text.split(START)
        README.write_text(head + START + "\n" + markdown_table() + "\n" + END + rest.split(END)[1])
    else:
        print(markdown_table())
