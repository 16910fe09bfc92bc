"""The LSTM as one op (minidl/ops/rnn.py): its kernels against numpy_ref (C++ on "cpu", CUDA on "emu" and a GPU),
its gradients against finite differences, its values and gradients against torch.nn.LSTM, and the state
carried from one call to the next."""
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minidl
from minidl import nn
from minidl.backend import cpu, get_backend, numpy_ref
from minidl.backend.cuda import gpu_count
from minidl.ops.rnn import lstm
from minidl.testing import gradcheck
from minidl.text.models import WeightDropout
from test_nn import double, from_torch

cpp_only = pytest.mark.skipif(os.environ.get("MINIDL_KERNELS") == "numpy",
                              reason="MINIDL_KERNELS=numpy: the C++ kernels are not in use")
DEVICES = ["emu", pytest.param("cuda", marks=pytest.mark.skipif(
    gpu_count() == 0, reason="no CUDA device visible (tier 3 runs on a machine with a GPU; 'emu' covers these here)"))]


def layer_arrays(rng, T, B, I, H, dtype=np.float64, bias=True):
    """Time-major kernel inputs x (T, B, I), h0, c0, w_ih, w_hh, bias; weights scaled as nn.LSTM's init."""
    def draw(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dtype)
    w = 1 / np.sqrt(H)
    return (draw(T, B, I), draw(B, H), draw(B, H), draw(4 * H, I, scale=w), draw(4 * H, H, scale=w),
            draw(4 * H, scale=w) if bias else None)


def assert_all_close(got, want, **tol):
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(np.asarray(a, dtype=np.float64), b, err_msg=f"array {k}", **tol)


# ---------------------------------------------------------------- the kernels against numpy_ref

dims = st.tuples(st.integers(1, 6), st.integers(1, 5), st.integers(1, 7), st.integers(1, 9))  # T, B, I, H


def kernel_case(backend, T, B, I, H, dtype, bias, seed, tol, to_device=np.array):
    """backend's lstm_forward and lstm_backward against numpy_ref's on the same inputs (and saved arrays)."""
    rng = np.random.default_rng(seed)
    inputs = layer_arrays(rng, T, B, I, H, dtype, bias)
    ref = numpy_ref.lstm_forward(*inputs)
    got = backend.lstm_forward(*(None if a is None else to_device(a) for a in inputs))
    assert all(a.dtype == dtype for a in got)
    assert_all_close([backend.to_numpy(a) for a in got], ref, **tol)
    d_out, d_cT = rng.standard_normal((T, B, H)).astype(dtype), rng.standard_normal((B, H)).astype(dtype)
    x, _, _, w_ih, w_hh, _ = inputs
    want = numpy_ref.lstm_backward(d_out, d_cT, x, w_ih, w_hh, *ref)
    got = backend.lstm_backward(*(to_device(a) for a in (d_out, d_cT, x, w_ih, w_hh, *ref)))
    assert_all_close([backend.to_numpy(a) for a in got], want, **tol)


@cpp_only
@settings(max_examples=30, deadline=None)
@given(dims=dims, dtype=st.sampled_from([np.float32, np.float64]), bias=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_cpp_kernels_equal_the_reference(dims, dtype, bias, seed):
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    kernel_case(get_backend("cpu"), *dims, dtype, bias, seed, tol)


@cpp_only
@pytest.mark.parametrize("dims", [(9, 40, 33, 150), (2, 3, 5, 1030)], ids=["threads", "blocks"])
def test_cpp_kernels_at_sizes_that_use_threads_and_several_blocks(dims):
    """The per-step products big enough for threads (each takes a share of W_hh's columns), and W_hh wide and
    deep enough for several of the GEMM's blocks (4H > 4096 columns, H > 256 rows per slice)."""
    kernel_case(get_backend("cpu"), *dims, np.float32, True, 0, dict(rtol=1e-4, atol=2e-5))


@pytest.mark.timeout(300, method="thread")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dims", [(1, 1, 1, 1), (3, 2, 3, 5), (4, 3, 2, 7)])
def test_cuda_kernels_equal_the_reference(device, dims):
    be = get_backend(device)
    kernel_case(be, *dims, np.float32, dims[0] != 1, 1, dict(rtol=1e-4, atol=1e-5),
                to_device=lambda a: be.asarray(np.array(a, order="C")))


@pytest.mark.timeout(300, method="thread")
@pytest.mark.parametrize("device", DEVICES)
def test_the_module_on_a_cuda_device_equals_it_on_the_cpu(device):
    """nn.LSTM through the op on "emu" (or a GPU): LSTMLayer's layout changes around the host code of cuda.py."""
    minidl.set_seed(0)
    lstm_cpu = nn.LSTM(3, 4, num_layers=2)
    x = np.random.default_rng(7).standard_normal((2, 3, 3)).astype(np.float32)
    results = []
    for model, dev in ((lstm_cpu, "cpu"), (nn.LSTM(3, 4, num_layers=2).to(device), device)):
        model.load_state_dict(lstm_cpu.state_dict())
        xd = minidl.tensor(x, device=dev, requires_grad=True)
        out, (h, c) = model(xd)
        (out.sum() + 2 * c.sum()).backward()
        results.append([out.numpy(), h.numpy(), xd.grad.numpy()] + [p.grad.numpy() for p in model.parameters()])
    assert_all_close(results[1], results[0], rtol=1e-4, atol=1e-5)


@cpp_only
def test_cpu_kernels_name_the_op_and_the_shapes():
    x, h0, c0, w_ih, w_hh, b = layer_arrays(np.random.default_rng(0), 3, 2, 4, 5)
    with pytest.raises(ValueError, match=r"lstm_forward: w_ih \(20, 3\) should be \(20, 4\)"):
        cpu.lstm_forward(x, h0, c0, w_ih[:, :3], w_hh, b)
    with pytest.raises(ValueError, match=r"lstm_forward: needs x \(T, B, I\) and w_hh \(4H, H\)"):
        cpu.lstm_forward(x, h0, c0, w_ih, w_hh[:-1], b)
    hs, cs, gates = cpu.lstm_forward(x, h0, c0, w_ih, w_hh, b)
    with pytest.raises(ValueError, match=r"lstm_backward: gates \(2, 2, 20\) should be \(3, 2, 20\)"):
        cpu.lstm_backward(hs[1:], cs[-1], x, w_ih, w_hh, hs, cs, gates[1:])


# ---------------------------------------------------------------- the op: gradients, errors

def op_inputs(rng, B, T, I, H, bias=True):
    """Batch-first float64 tensors x, h0, c0, w_ih, w_hh (and bias), all requiring gradients."""
    x, h0, c0, w_ih, w_hh, b = layer_arrays(rng, T, B, I, H, bias=bias)
    arrays = [x.transpose(1, 0, 2), h0, c0, w_ih, w_hh] + ([b] if bias else [])
    return [minidl.tensor(a, requires_grad=True) for a in arrays]


@settings(max_examples=10, deadline=None)
@given(dims=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3)), bias=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_gradcheck_every_input_through_every_output(dims, bias, seed):
    inputs = op_inputs(np.random.default_rng(seed), *dims, bias=bias)
    gradcheck(lambda *ts: lstm(*ts), *inputs)


@pytest.mark.parametrize("output", ["h_T", "c_T"])
def test_gradcheck_with_the_gradient_arriving_only_through_the_last_state(output):
    inputs = op_inputs(np.random.default_rng(3), 2, 4, 3, 3)
    gradcheck(lambda *ts: lstm(*ts)[1 if output == "h_T" else 2], *inputs)


def test_errors_name_the_op_and_the_expected_shape():
    x, h0, c0, w_ih, w_hh, b = op_inputs(np.random.default_rng(0), 2, 3, 4, 5)
    with pytest.raises(ValueError, match=r"lstm: w_hh has shape \(20, 4\).*need \(20, 5\)"):
        lstm(x, h0, c0, w_ih, w_hh[:, :4], b)
    with pytest.raises(ValueError, match=r"lstm: c0 has shape \(3, 5\).*need \(2, 5\)"):
        lstm(x, h0, minidl.zeros(3, 5, dtype=minidl.float64), w_ih, w_hh, b)
    with pytest.raises(ValueError, match="time >= 1"):
        lstm(x[:, :0], h0, c0, w_ih, w_hh, b)
    with pytest.raises(TypeError, match="lstm: inputs have different dtypes"):
        lstm(x.float(), h0, c0, w_ih, w_hh, b)


# ---------------------------------------------------------------- torch.nn.LSTM, the state carried on

@settings(max_examples=6, deadline=None)
@given(dims=st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 5), st.integers(1, 6)),
       layers=st.integers(1, 3), bias=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_module_equals_torch_in_float64(dims, layers, bias, seed):
    """Outputs, final states and the gradients of every weight, of the input and of the initial state."""
    torch = pytest.importorskip("torch")
    B, T, I, H = dims
    torch.manual_seed(seed % 2**31)
    ref = torch.nn.LSTM(I, H, num_layers=layers, bias=bias, batch_first=True).double()
    ours = from_torch(double(nn.LSTM(I, H, num_layers=layers, bias=bias)), ref)
    rng = np.random.default_rng(seed)
    x, h0, c0 = rng.standard_normal((B, T, I)), rng.standard_normal((layers, B, H)), rng.standard_normal((layers, B, H))
    m_in = [minidl.tensor(a, requires_grad=True) for a in (x, h0, c0)]
    t_in = [torch.tensor(a, requires_grad=True) for a in (x, h0, c0)]
    out, (h, c) = ours(m_in[0], (m_in[1], m_in[2]))
    tout, (th, tc) = ref(t_in[0], (t_in[1], t_in[2]))
    tol = dict(rtol=1e-5, atol=1e-8)
    assert_all_close([out.numpy(), h.numpy(), c.numpy()], [t.detach().numpy() for t in (tout, th, tc)], **tol)
    weights = [rng.standard_normal(t.shape) for t in (tout, th, tc)]
    sum((o * minidl.tensor(w)).sum() for o, w in zip((out, h, c), weights)).backward()
    sum((o * torch.tensor(w)).sum() for o, w in zip((tout, th, tc), weights)).backward()
    assert_all_close([t.grad.numpy() for t in m_in], [t.grad.numpy() for t in t_in], **tol)
    grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), grads[name].grad.numpy(), err_msg=name, **tol)


def test_the_state_carried_across_two_calls_equals_one_call_over_both():
    """Values and gradients: BPTT through the carried (not detached) state reaches the first call's inputs
    as in one call over the whole sequence; detached, as a language model carries it, the values still agree."""
    x, h0, c0, w_ih, w_hh, b = op_inputs(np.random.default_rng(4), 3, 7, 4, 5)
    upstream = minidl.tensor(np.random.default_rng(5).standard_normal((3, 7, 5)))

    def grads_of(loss):
        for t in (x, h0, c0, w_ih, w_hh, b):
            t.grad = None
        loss.backward()
        return [t.grad.numpy() for t in (x, h0, c0, w_ih, w_hh, b)]

    whole, h, c = lstm(x, h0, c0, w_ih, w_hh, b)
    expected = grads_of((whole * upstream).sum() + h.sum() + c.sum())
    first, h1, c1 = lstm(x[:, :3], h0, c0, w_ih, w_hh, b)
    second, h2, c2 = lstm(x[:, 3:], h1, c1, w_ih, w_hh, b)
    np.testing.assert_allclose(np.concatenate([first.numpy(), second.numpy()], 1), whole.numpy(), rtol=1e-12)
    np.testing.assert_allclose(c2.numpy(), c.numpy(), rtol=1e-12)
    loss = (first * upstream[:, :3]).sum() + (second * upstream[:, 3:]).sum() + h2.sum() + c2.sum()
    assert_all_close(grads_of(loss), expected, rtol=1e-10, atol=1e-12)
    second, h2, c2 = lstm(x[:, 3:], h1.detach(), c1.detach(), w_ih, w_hh, b)
    np.testing.assert_allclose(h2.numpy(), h.numpy(), rtol=1e-12)


def test_weight_dropout_drops_the_weight_the_op_reads():
    """AWD-LSTM's WeightDropout puts a dropped copy of weight_hh_l0 into the LSTM: the op multiplies with it,
    and the raw weight's gradient is zero exactly where the dropout mask is."""
    minidl.set_seed(0)
    wd = double(WeightDropout(nn.LSTM(3, 4), 0.5))
    wd.train()
    x = minidl.tensor(np.random.default_rng(6).standard_normal((2, 5, 3)))
    out, _ = wd(x)
    dropped = wd.module.weight_hh_l0
    plain = double(nn.LSTM(3, 4))
    plain.load_state_dict({**wd.module.state_dict(), "weight_hh_l0": dropped.detach().numpy()})
    np.testing.assert_allclose(out.numpy(), plain(x)[0].numpy(), rtol=1e-12)
    out.sum().backward()
    kept = dropped.detach().numpy() != 0
    assert (wd.weight_hh_l0_raw.grad.numpy()[~kept] == 0).all() and (wd.weight_hh_l0_raw.grad.numpy()[kept] != 0).any()
