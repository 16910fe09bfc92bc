"""Elementwise ops: arithmetic, math functions and activations.

Each op is a Function (forward + backward; the math and its derivative in its docstring,
stated there once) and a lowercase helper that takes tensors or numbers and points to it.
Binary ops broadcast; autograd sums their gradients back to each input's shape, so backward
here ignores shapes.
"""
import math

import numpy as np

from ..autograd import Function
from ..tensor import Tensor, is_float, is_scalar, get_default_dtype


# ---------------------------------------------------------------- turning arguments into tensors

def broadcast_shape(op, *shapes):
    """The shape that broadcasting ``shapes`` gives, or an error that says why they don't fit."""
    ndim = max(len(s) for s in shapes)
    padded = [(1,) * (ndim - len(s)) + tuple(s) for s in shapes]
    out = []
    for axis, sizes in enumerate(zip(*padded)):
        big = {n for n in sizes if n != 1}
        if len(big) > 1:
            shown = " and ".join(str(tuple(s)) for s in shapes)
            raise ValueError(f"{op}: shapes {shown} do not broadcast: dim {axis - ndim} has sizes "
                             f"{' vs '.join(map(str, sizes))}. Shapes are aligned from the right; each "
                             f"dim must be equal or 1 (add a dim of size 1 with .unsqueeze() or reshape)")
        out.append(big.pop() if big else 1)
    return tuple(out)


def as_tensors(op, *args, device="cpu"):
    """Tensors of one dtype and device from tensors, numbers and arrays.

    Numbers and arrays take the tensors' dtype. Mixing float32 and float64 tensors is an
    error, not a silent conversion. Integer (or bool) tensors meeting float values become
    the default float dtype, as in PyTorch; with no tensor at all, the values decide.
    """
    tensors = [a for a in args if isinstance(a, Tensor)]
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        shown = ", ".join(f"{tuple(t.shape)} {t.dtype}" for t in tensors)
        raise TypeError(f"{op}: inputs have different dtypes ({shown}); convert one first, "
                        f"e.g. with .float() or .double()")
    has_floats = any(np.asarray(a).dtype.kind == "f" for a in args if not isinstance(a, Tensor))
    if tensors:
        dtype, device = tensors[0].dtype, tensors[0].device
    else:
        dtype = np.dtype("int64") if not has_floats else get_default_dtype()
    if not is_float(dtype) and has_floats:
        dtype = get_default_dtype()
    return [a.to(dtype) if isinstance(a, Tensor) else Tensor(a, dtype=dtype, device=device) for a in args]


def binary(cls, a, b, op):
    """Apply a two-input Function ``cls`` to a and b, made tensors of one dtype and checked to broadcast."""
    a, b = as_tensors(op, a, b)
    broadcast_shape(op, a.shape, b.shape)
    return cls.apply(a, b)


def unary(cls, x, float_only=False, **params):
    """Apply a one-input op; a math function (float_only) turns integer input into floats first."""
    if not isinstance(x, Tensor):
        x = Tensor(x)
    if float_only and not is_float(x.dtype):
        x = x.to(get_default_dtype())
    elif x.dtype.kind == "b":
        raise TypeError(f"{cls.__name__.lower()}: not defined for bool tensors; convert with .float() or .long()")
    return cls.apply(x, **params)


# ---------------------------------------------------------------- arithmetic

class Add(Function):
    """z = a + b;  dz/da = 1, dz/db = 1."""
    @staticmethod
    def forward(ctx, a, b):
        return ctx.backend.add(a, b)

    @staticmethod
    def backward(ctx, grad):
        return grad, grad


class Sub(Function):
    """z = a - b;  dz/da = 1, dz/db = -1."""
    @staticmethod
    def forward(ctx, a, b):
        return ctx.backend.sub(a, b)

    @staticmethod
    def backward(ctx, grad):
        return grad, ctx.backend.neg(grad) if ctx.needs_input_grad[1] else None


class Mul(Function):
    """z = a * b;  dz/da = b, dz/db = a."""
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.backend.mul(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_arrays
        mul = ctx.backend.mul
        return (mul(grad, b) if ctx.needs_input_grad[0] else None,
                mul(grad, a) if ctx.needs_input_grad[1] else None)


class Div(Function):
    """z = a / b;  dz/da = 1/b, dz/db = -a/b^2."""
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.backend.div(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_arrays
        be = ctx.backend
        da = be.div(grad, b) if ctx.needs_input_grad[0] else None
        db = be.neg(be.div(be.mul(grad, a), be.mul(b, b))) if ctx.needs_input_grad[1] else None
        return da, db


class Neg(Function):
    """z = -x;  dz/dx = -1."""
    @staticmethod
    def forward(ctx, x):
        return ctx.backend.neg(x)

    @staticmethod
    def backward(ctx, grad):
        return ctx.backend.neg(grad)


class Pow(Function):
    """z = a^b;  dz/da = b a^(b-1), dz/db = a^b ln a."""
    @staticmethod
    def forward(ctx, a, b):
        z = ctx.backend.power(a, b)
        ctx.save_for_backward(a, b, z)
        return z

    @staticmethod
    def backward(ctx, grad):
        a, b, z = ctx.saved_arrays
        be = ctx.backend
        # PyTorch's conventions where the formulas give 0 * inf: d/da a^0 = 0, d/db 0^b = 0 (b >= 0)
        da = db = None
        if ctx.needs_input_grad[0]:
            da = be.where(be.equal(b, 0), 0, be.mul(grad, be.mul(b, be.power(a, be.sub(b, 1)))))
        if ctx.needs_input_grad[1]:
            zero_base = be.logical_and(be.equal(a, 0), be.greater_equal(b, 0))
            db = be.where(zero_base, 0, be.mul(grad, be.mul(z, be.log(be.where(zero_base, 1, a)))))
        return da, db


def add(a, b):
    """a + b elementwise, broadcasting; derivative in ``Add``."""
    return binary(Add, a, b, "add")


def sub(a, b):
    """a - b elementwise, broadcasting; derivative in ``Sub``."""
    return binary(Sub, a, b, "sub")


def mul(a, b):
    """a * b elementwise, broadcasting; derivative in ``Mul``."""
    return binary(Mul, a, b, "mul")


def div(a, b):
    """a / b elementwise, broadcasting, true division: integer inputs give the default float dtype, as in
    PyTorch; derivative in ``Div``."""
    if all(not isinstance(t, Tensor) or not is_float(t.dtype) for t in (a, b)):
        a, b = (t.to(get_default_dtype()) if isinstance(t, Tensor) else float(t) for t in (a, b))
    return binary(Div, a, b, "div")


def neg(x):
    """-x; derivative in ``Neg``."""
    return unary(Neg, x)


def pow(a, b):
    """a^b elementwise, broadcasting; derivative in ``Pow``."""
    return binary(Pow, a, b, "pow")


# ---------------------------------------------------------------- math functions

class Exp(Function):
    """y = e^x;  dy/dx = y."""
    @staticmethod
    def forward(ctx, x):
        y = ctx.backend.exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_arrays
        return ctx.backend.mul(grad, y)


class Log(Function):
    """y = ln x;  dy/dx = 1/x."""
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.backend.log(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_arrays
        return ctx.backend.div(grad, x)


class Sqrt(Function):
    """y = sqrt(x);  dy/dx = 1 / (2 y)."""
    @staticmethod
    def forward(ctx, x):
        y = ctx.backend.sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_arrays
        return ctx.backend.div(grad, ctx.backend.mul(y, 2))


class Abs(Function):
    """y = |x|;  dy/dx = sign(x) (0 at 0, like PyTorch)."""
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.backend.abs(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_arrays
        return ctx.backend.mul(grad, ctx.backend.sign(x))


class Tanh(Function):
    """y = tanh x;  dy/dx = 1 - y^2."""
    @staticmethod
    def forward(ctx, x):
        y = ctx.backend.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_arrays
        be = ctx.backend
        return be.mul(grad, be.sub(1, be.mul(y, y)))


class Sigmoid(Function):
    """y = 1 / (1 + e^-x);  dy/dx = y (1 - y)."""
    @staticmethod
    def forward(ctx, x):
        y = ctx.backend.sigmoid(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_arrays
        be = ctx.backend
        return be.mul(grad, be.mul(y, be.sub(1, y)))


def exp(x):
    """e^x elementwise (integers become floats); derivative in ``Exp``."""
    return unary(Exp, x, float_only=True)


def log(x):
    """ln x elementwise (integers become floats); derivative in ``Log``."""
    return unary(Log, x, float_only=True)


def sqrt(x):
    """sqrt(x) elementwise (integers become floats); derivative in ``Sqrt``."""
    return unary(Sqrt, x, float_only=True)


def abs(x):
    """|x| elementwise; derivative in ``Abs``."""
    return unary(Abs, x)


def tanh(x):
    """tanh x = (e^x - e^-x) / (e^x + e^-x) elementwise (integers become floats); derivative in ``Tanh``."""
    return unary(Tanh, x, float_only=True)


def sigmoid(x):
    """1 / (1 + e^-x) elementwise (integers become floats); derivative in ``Sigmoid``."""
    return unary(Sigmoid, x, float_only=True)


# ---------------------------------------------------------------- activations

class ReLU(Function):
    """y = max(x, 0);  dy/dx = 1 where x > 0, else 0."""
    @staticmethod
    def forward(ctx, x):
        y = ctx.backend.relu(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_arrays
        return ctx.backend.relu_backward(grad, y)  # grad where y > 0, else 0


class LeakyReLU(Function):
    """y = x if x > 0 else slope * x;  dy/dx = 1 or slope."""
    @staticmethod
    def forward(ctx, x, negative_slope):
        ctx.save_for_backward(x)
        ctx.negative_slope = negative_slope
        be = ctx.backend
        return be.where(be.greater(x, 0), x, be.mul(x, negative_slope))

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_arrays
        be = ctx.backend
        return be.where(be.greater(x, 0), grad, be.mul(grad, ctx.negative_slope))


class Clamp(Function):
    """y = min(max(x, lo), hi);  dy/dx = 1 where lo <= x <= hi, else 0."""
    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return ctx.backend.clip(x, lo, hi)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_arrays
        return ctx.backend.clamp_backward(grad, x, ctx.lo, ctx.hi)


class GELU(Function):
    """y = x * Phi(x), Phi the standard normal CDF;  dy/dx = Phi(x) + x * phi(x).

    ``approximate="tanh"`` uses Phi(x) ~ (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2.
    """
    @staticmethod
    def forward(ctx, x, approximate):
        be = ctx.backend
        ctx.save_for_backward(x)
        ctx.approximate = approximate
        if approximate == "tanh":
            ctx.inner = be.tanh(be.mul(math.sqrt(2 / math.pi), be.add(x, be.mul(0.044715, be.power(x, 3)))))
            return be.mul(be.mul(0.5, x), be.add(1, ctx.inner))
        ctx.cdf = be.mul(0.5, be.add(1, be.erf(be.div(x, math.sqrt(2)))))
        return be.mul(x, ctx.cdf)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_arrays
        be = ctx.backend
        if ctx.approximate == "tanh":
            t = ctx.inner
            dinner = be.mul(math.sqrt(2 / math.pi), be.add(1, be.mul(3 * 0.044715, be.mul(x, x))))
            d = be.add(be.mul(0.5, be.add(1, t)), be.mul(be.mul(0.5, x), be.mul(be.sub(1, be.mul(t, t)), dinner)))
        else:
            pdf = be.mul(1 / math.sqrt(2 * math.pi), be.exp(be.mul(-0.5, be.mul(x, x))))
            d = be.add(ctx.cdf, be.mul(x, pdf))
        return be.mul(grad, d)


def relu(x):
    """max(x, 0) elementwise; derivative in ``ReLU``."""
    return unary(ReLU, x)


def relu6(x):
    """min(max(x, 0), 6): the activation of MobileNet and EfficientNet-Lite (a clamp: derivative in ``Clamp``)."""
    return clamp(x, 0, 6)


def leaky_relu(x, negative_slope=0.01):
    """x where x > 0, else negative_slope * x; derivative in ``LeakyReLU``."""
    return unary(LeakyReLU, x, float_only=True, negative_slope=negative_slope)


def gelu(x, approximate="none"):
    """x * Phi(x), Phi the standard normal CDF (``approximate="tanh"``: its tanh approximation);
    derivative in ``GELU``."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', not {approximate!r}")
    return unary(GELU, x, float_only=True, approximate=approximate)


def clamp(x, min=None, max=None):
    """Limit values to [min, max]; derivative in ``Clamp``. Tensor bounds are elementwise (maximum and
    minimum, so they get gradients too)."""
    if min is None and max is None:
        raise ValueError("clamp: give at least one of min and max")
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        x = x if min is None else maximum(x, min)
        return x if max is None else minimum(x, max)
    if not is_float(x.dtype) and any(isinstance(v, (float, np.floating)) for v in (min, max)):
        x = x.to(get_default_dtype())
    return unary(Clamp, x, lo=min, hi=max)


# ---------------------------------------------------------------- choosing between values

class Maximum(Function):
    """z = max(a, b);  the gradient goes to the larger input (half to each on a tie)."""
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.backend.maximum(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_arrays
        return _split_by_winner(ctx.backend, grad, ctx.backend.greater(a, b), ctx.backend.equal(a, b))


class Minimum(Function):
    """z = min(a, b);  the gradient goes to the smaller input (half to each on a tie)."""
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.backend.minimum(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_arrays
        return _split_by_winner(ctx.backend, grad, ctx.backend.less(a, b), ctx.backend.equal(a, b))


def _split_by_winner(be, grad, a_wins, tie):
    half = be.mul(grad, 0.5)
    da = be.where(a_wins, grad, be.where(tie, half, 0))
    db = be.where(a_wins, 0, be.where(tie, half, grad))
    return da, db


class Where(Function):
    """z = a where cond else b;  the gradient goes to whichever input was picked."""
    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.save_for_backward(cond)
        return ctx.backend.where(cond, a, b)

    @staticmethod
    def backward(ctx, grad):
        cond, = ctx.saved_arrays
        be = ctx.backend
        return None, be.where(cond, grad, 0), be.where(cond, 0, grad)


def maximum(a, b):
    """max(a, b) elementwise, broadcasting; derivative in ``Maximum``."""
    return binary(Maximum, a, b, "maximum")


def minimum(a, b):
    """min(a, b) elementwise, broadcasting; derivative in ``Minimum``."""
    return binary(Minimum, a, b, "minimum")


def where(cond, a, b):
    """a where cond else b, elementwise, all three broadcasting; derivative in ``Where``."""
    cond = cond if isinstance(cond, Tensor) else Tensor(cond, dtype=bool)
    if cond.dtype != np.dtype(bool):
        cond = cond.bool()
    a, b = as_tensors("where", a, b, device=cond.device)
    broadcast_shape("where", cond.shape, a.shape, b.shape)
    return Where.apply(cond, a, b)


# ---------------------------------------------------------------- dtypes, copies, comparisons

class Cast(Function):
    """y = x in another dtype;  the gradient is cast back."""
    @staticmethod
    def forward(ctx, x, dtype):
        ctx.in_dtype = x.dtype
        return ctx.backend.astype(x, dtype)

    @staticmethod
    def backward(ctx, grad):
        return ctx.backend.astype(grad, ctx.in_dtype)


class Clone(Function):
    """y = a copy of x;  dy/dx = 1."""
    @staticmethod
    def forward(ctx, x):
        return ctx.backend.copy(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def cast(x, dtype):
    """x converted to ``dtype`` (an integer or bool result is cut from the graph); derivative in ``Cast``."""
    if not is_float(np.dtype(dtype)) and x.requires_grad:
        x = x.detach()  # integer results carry no gradient
    return Cast.apply(x, dtype=np.dtype(dtype))


def clone(x):
    """A copy of x in new memory that stays in the graph; derivative in ``Clone``."""
    return Clone.apply(x)


def compare(kernel, a, b):
    """An elementwise comparison or logical op: a bool tensor, not differentiable."""
    a, b = as_tensors(kernel, *(t.detach() if isinstance(t, Tensor) else t for t in (a, b)))
    broadcast_shape(kernel, a.shape, b.shape)
    return Tensor._make(getattr(a.backend, kernel)(a.data, b.data), a.device)
