"""nn.LSTM: the same outputs, states and gradients as torch.nn.LSTM (weights from its state dict) in float64,
a gradcheck through time, and the state carried from one batch to the next."""
import numpy as np
import pytest

import minidl
from minidl import nn
from minidl.testing import gradcheck
from test_nn import double, from_torch


def test_lstm_equals_torch_in_float64_outputs_states_and_gradients():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ref = torch.nn.LSTM(5, 7, num_layers=2, batch_first=True).double()
    ours = from_torch(double(nn.LSTM(5, 7, num_layers=2)), ref)
    rng = np.random.default_rng(0)
    x, h0, c0 = rng.standard_normal((3, 6, 5)), rng.standard_normal((2, 3, 7)), rng.standard_normal((2, 3, 7))
    xm = minidl.tensor(x, requires_grad=True)
    out, (h, c) = ours(xm, (minidl.tensor(h0), minidl.tensor(c0)))
    xt = torch.tensor(x, requires_grad=True)
    tout, (th, tc) = ref(xt, (torch.tensor(h0), torch.tensor(c0)))
    for a, b in ((out, tout), (h, th), (c, tc)):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-12)
    upstream = rng.standard_normal(out.shape)
    (out * minidl.tensor(upstream)).sum().backward()
    (tout * torch.tensor(upstream)).sum().backward()
    np.testing.assert_allclose(xm.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), grads[name].grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_lstm_gradcheck_through_time():
    minidl.set_seed(0)
    lstm = double(nn.LSTM(3, 4, num_layers=2))
    x = minidl.tensor(np.random.default_rng(1).standard_normal((2, 5, 3)), requires_grad=True)
    gradcheck(lambda x: lstm(x)[0], x)
    x.requires_grad_(False)
    for weight in (lstm.weight_hh_l0, lstm.weight_ih_l1, lstm.bias_hh_l1):   # perturbed in place by gradcheck
        gradcheck(lambda w: lstm(x)[0], weight)


def test_a_stream_read_in_two_halves_with_the_state_carried_equals_one_read():
    minidl.set_seed(0)
    lstm = double(nn.LSTM(3, 4))
    x = minidl.tensor(np.random.default_rng(2).standard_normal((2, 8, 3)))
    whole, (h, c) = lstm(x)
    first, state = lstm(x[:, :5])
    second, (h2, c2) = lstm(x[:, 5:], (state[0].detach(), state[1].detach()))
    np.testing.assert_allclose(np.concatenate([first.numpy(), second.numpy()], 1), whole.numpy(), rtol=1e-12)
    np.testing.assert_allclose(h2.numpy(), h.numpy(), rtol=1e-12)
