"""The LSTM: a layer that reads a sequence one step at a time and carries a memory along.

At step t, from the input x_t and the previous hidden state h and cell c:

    i, f, g, o = split(x_t W_ih^T + b_ih + h W_hh^T + b_hh)      four gates of `hidden_size` each
    c' = sigmoid(f) * c + sigmoid(i) * tanh(g)                  forget some memory, write some new
    h' = sigmoid(o) * tanh(c')                                  what the step shows of its memory

The cell c is a sum that the forget gate scales: gradients flow back through many steps
without vanishing as fast as through a plain tanh RNN. The input projections of all steps
are one matrix product (they do not depend on h); only ``h W_hh^T`` runs step by step.
Each layer is one op, ``lstm`` (ops/rnn.py): its kernels run the time loop, and its backward is
backpropagation through time, derived in numpy_ref.lstm_backward.
Parameter names and gate order (i, f, g, o) are PyTorch's, so its state dicts load.
"""
import math

from . import init
from .module import Module, Parameter
from ..ops.rnn import lstm
from ..ops.shape import stack
from ..tensor import zeros

__all__ = ["LSTM"]


class LSTM(Module):
    """``num_layers`` stacked LSTM layers over (batch, time, input_size) inputs (``batch_first``, as fastai uses).

    ``forward(x, state=None)`` -> (outputs (batch, time, hidden_size), (h, c)), h and c of shape
    (num_layers, batch, hidden_size); ``state`` = (h0, c0), zeros when None. A language model
    passes the returned state (detached) with its next batch: the rows of a stream continue.
    Weights start uniform in [-1/sqrt(hidden_size), 1/sqrt(hidden_size)], as PyTorch's.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, batch_first=True, bias=True):
        super().__init__()
        if not batch_first:
            raise ValueError("LSTM: minidl's LSTM takes (batch, time, features) inputs (batch_first=True)")
        self.input_size, self.hidden_size, self.num_layers, self.bias = input_size, hidden_size, num_layers, bias
        bound = 1 / math.sqrt(hidden_size)
        for k in range(num_layers):
            n_in = input_size if k == 0 else hidden_size
            names = [f"weight_ih_l{k}", f"weight_hh_l{k}"] + ([f"bias_ih_l{k}", f"bias_hh_l{k}"] if bias else [])
            shapes = [(4 * hidden_size, n_in), (4 * hidden_size, hidden_size), (4 * hidden_size,), (4 * hidden_size,)]
            for name, shape in zip(names, shapes):
                param = Parameter(zeros(*shape))
                init.uniform_(param, -bound, bound)
                setattr(self, name, param)

    def forward(self, x, state=None):
        """x (batch, time, input_size) -> (outputs (batch, time, hidden_size), (h, c)): the class docstring's steps."""
        n, steps, _ = x.shape
        if state is None:
            h0 = c0 = zeros(self.num_layers, n, self.hidden_size, dtype=x.dtype, device=x.device)
        else:
            h0, c0 = state
        hs, cs = [], []
        for k in range(self.num_layers):
            x, h, c = self._layer(k, x, h0[k], c0[k])
            hs.append(h)
            cs.append(c)
        return x, (stack(hs), stack(cs))

    def _layer(self, k, x, h, c):
        """Layer k, one ``lstm`` op. The weights are looked up at each call: WeightDropout (text/models.py)
        puts a dropped copy of weight_hh in place of the parameter."""
        bias = getattr(self, f"bias_ih_l{k}") + getattr(self, f"bias_hh_l{k}") if self.bias else None
        return lstm(x, h, c, getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}"), bias)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
