"""The LSTM layer as one op: the time loop and backpropagation through time inside the kernels.

Composed of ops (a matmul, four activations and a few products per step), an LSTM layer over 70
steps records about 900 ops, each paying Python's overhead and a trip through memory. As one op,
the kernel runs the loop (numpy_ref.lstm_forward, csrc/cpu/lstm.cpp, csrc/cuda/lstm.cu): one
product for the input projections of all steps, then per step one product h W_hh^T and one
fused pass over the gates; backward walks the steps back the same way (numpy_ref.lstm_backward).

The kernels work time-major, (T, B, ...): a step's batch is one block of memory. The op takes and
gives batch-first tensors, (B, T, ...), as nn.LSTM does.
"""
from ..autograd import Function
from .elementwise import as_tensors


class LSTMLayer(Function):
    """(outputs, h_T, c_T) of one LSTM layer, as one array y (B, T+1, H): y[:, :T] the outputs h_1..h_T
    (so y[:, T-1] is h_T) and y[:, T] the last cell state c_T. (A Function has one output: the three
    travel together, and autograd hands backward one gradient holding all of theirs.)

    forward: numpy_ref.lstm_forward's steps;  backward: numpy_ref.lstm_backward, backpropagation
    through time, which also gives dh0 and dc0, so a state passed in (not detached) gets its gradient.
    """
    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, bias=None):
        be = ctx.backend
        xt = be.transpose(x, (1, 0, 2))                               # (T, B, I): time-major
        hs, cs, gates = be.lstm_forward(xt, h0, c0, w_ih, w_hh, bias)
        ctx.save_for_backward(xt, w_ih, w_hh, hs, cs, gates)
        ctx.has_bias = bias is not None
        T = x.shape[1]
        outputs = be.transpose(be.getitem(hs, slice(1, None)), (1, 0, 2))     # h_1..h_T: (B, T, H)
        c_T = be.transpose(be.getitem(cs, slice(T, None)), (1, 0, 2))         # (B, 1, H)
        return be.concatenate([outputs, c_T], 1)

    @staticmethod
    def backward(ctx, grad):
        xt, w_ih, w_hh, hs, cs, gates = ctx.saved_arrays
        be = ctx.backend
        T = xt.shape[0]
        d_out = be.transpose(be.getitem(grad, (slice(None), slice(0, T))), (1, 0, 2))   # (T, B, H)
        d_cT = be.getitem(grad, (slice(None), T))
        dx, dh0, dc0, dw_ih, dw_hh, dbias = be.lstm_backward(d_out, d_cT, xt, w_ih, w_hh, hs, cs, gates)
        grads = (be.transpose(dx, (1, 0, 2)), dh0, dc0, dw_ih, dw_hh)
        return grads + (dbias,) if ctx.has_bias else grads


def lstm(x, h0, c0, w_ih, w_hh, bias=None):
    """One LSTM layer over x (B, T, I) from the state h0, c0 (B, H): returns (outputs (B, T, H), h_T, c_T).

    w_ih (4H, I), w_hh (4H, H) and bias (4H,) hold the gates i, f, g, o in PyTorch's order; PyTorch's
    two biases enter as one, bias_ih + bias_hh (autograd gives both its gradient). The step's math
    is numpy_ref.lstm_forward's; the derivative is in ``LSTMLayer``.
    """
    tensors = as_tensors("lstm", x, h0, c0, w_ih, w_hh, *(() if bias is None else (bias,)))  # one dtype
    x, h0 = tensors[:2]
    if x.ndim != 3 or h0.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"lstm: needs x of shape (batch, time, input_size), time >= 1, and h0, c0 of shape "
                         f"(batch, hidden_size), got x {x.shape} and h0 {h0.shape}")
    (B, T, I), H = x.shape, h0.shape[1]
    expected = {"h0": (B, H), "c0": (B, H), "w_ih": (4 * H, I), "w_hh": (4 * H, H), "bias": (4 * H,)}
    for name, t in zip(expected, tensors[1:]):
        if t.shape != expected[name]:
            raise ValueError(f"lstm: {name} has shape {t.shape}, but x {x.shape} and h0 {h0.shape} "
                             f"(batch {B}, input_size {I}, hidden_size {H}) need {expected[name]}")
    y = LSTMLayer.apply(*tensors)
    return y[:, :T], y[:, T - 1], y[:, T]
