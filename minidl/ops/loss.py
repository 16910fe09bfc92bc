"""Loss functions: how wrong the model is, as one number to minimise."""
from .. import deferred
from ..autograd import Function
from ..tensor import Tensor, is_float
from .elementwise import as_tensors, broadcast_shape
from .reduce import log_softmax
from .shape import gather


def reduce_loss(op, losses, reduction):
    """The per-example losses averaged ('mean'), summed ('sum') or left as they are ('none')."""
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    if reduction == "none":
        return losses
    raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', not {reduction!r}")


def _check_targets(op, logits, target):
    if not isinstance(target, Tensor) or target.dtype.kind not in "iu":
        raise TypeError(f"{op}: targets must be an integer tensor of class indices "
                        f"(got {getattr(target, 'dtype', type(target).__name__)}); use target.long()")
    if logits.ndim != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"{op}: needs inputs of shape (N, C) and targets of shape (N,), got "
                         f"{logits.shape} and {target.shape}")
    C = logits.shape[1]
    deferred.index_check(op, target, C, lambda low, high: f"{op}: targets must be class indices in [0, {C - 1}], "
                                                          f"got values in [{low}, {high}]")


def nll_loss(log_probs, target, reduction="mean"):
    """Negative log-likelihood: -log_probs[i, target[i]], the log-probability of the right class."""
    _check_targets("nll_loss", log_probs, target)
    picked = gather(log_probs, 1, target.reshape(-1, 1)).reshape(-1)
    return reduce_loss("nll_loss", -picked, reduction)


class CrossEntropy(Function):
    """l_i = -log softmax(x_i)[t_i] = logsumexp(x_i) - x_i[t_i];  dl_i/dx_ij = softmax(x_i)_j - [j == t_i].

    One op (one kernel each way) instead of log_softmax, gather and neg, so one op's Python
    overhead instead of three (why that matters: benchmarks/NOTES.md).
    """
    @staticmethod
    def forward(ctx, logits, target):
        losses, dlogits = ctx.backend.cross_entropy(logits, target)  # the kernel gives the gradient too
        ctx.save_for_backward(dlogits)
        return losses

    @staticmethod
    def backward(ctx, grad):
        dlogits, = ctx.saved_arrays
        be = ctx.backend
        return be.mul(dlogits, be.reshape(grad, (-1, 1))), None


def cross_entropy(logits, target, reduction="mean", label_smoothing=0.0):
    """-log softmax(logits)[target], from raw scores (N, C) and class indices (N,); derivative in
    ``CrossEntropy`` (with label smoothing, in ``LogSoftmax`` and ``Gather``, which it is made of then).

    With label smoothing e the target is (1 - e) on the right class plus e/C on every
    class: loss = (1 - e) * nll + e * mean over classes of -log_softmax.
    """
    _check_targets("cross_entropy", logits, target)
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    if not label_smoothing and is_float(logits.dtype):
        return reduce_loss("cross_entropy", CrossEntropy.apply(logits, target), reduction)
    log_probs = log_softmax(logits, 1)
    losses = -gather(log_probs, 1, target.reshape(-1, 1)).reshape(-1)
    if label_smoothing:
        losses = (1 - label_smoothing) * losses - label_smoothing * log_probs.mean(1)
    return reduce_loss("cross_entropy", losses, reduction)


def _pair(op, input, target):
    input, target = as_tensors(op, input, target)
    if input.shape != target.shape:
        broadcast_shape(op, input.shape, target.shape)
        raise ValueError(f"{op}: input {input.shape} and target {target.shape} must have the same shape "
                         f"(broadcasting them is usually a bug; reshape the target)")
    return input, target


def mse_loss(input, target, reduction="mean"):
    """Mean squared error: mean((input - target)^2)."""
    input, target = _pair("mse_loss", input, target)
    diff = input - target
    return reduce_loss("mse_loss", diff * diff, reduction)


def l1_loss(input, target, reduction="mean"):
    """Mean absolute error: mean(|input - target|)."""
    input, target = _pair("l1_loss", input, target)
    return reduce_loss("l1_loss", (input - target).abs(), reduction)


class BCEWithLogits(Function):
    """l = -[y log s(x) + (1 - y) log(1 - s(x))], s the sigmoid;  dl/dx = s(x) - y,  dl/dy = -x."""
    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return ctx.backend.bce_with_logits(x, y)

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_arrays
        be = ctx.backend
        dx = be.mul(grad, be.sub(be.sigmoid(x), y)) if ctx.needs_input_grad[0] else None
        dy = be.mul(grad, be.neg(x)) if ctx.needs_input_grad[1] else None
        return dx, dy


def binary_cross_entropy_with_logits(input, target, reduction="mean"):
    """Binary cross-entropy from raw scores, computed stably (never log(0)); derivative in ``BCEWithLogits``."""
    input, target = _pair("binary_cross_entropy_with_logits", input, target)
    return reduce_loss("binary_cross_entropy_with_logits", BCEWithLogits.apply(input, target), reduction)
