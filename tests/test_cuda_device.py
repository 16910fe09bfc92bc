"""The "cuda" and "emu" devices from the user's side: moving tensors, models and batches; clear errors."""
import sys

import numpy as np
import pytest

import minidl
from minidl import nn
from minidl.backend import cuda, get_backend
from minidl.data import DataLoader

no_gpu = cuda.gpu_count() == 0
needs_gpu = pytest.mark.skipif(no_gpu, reason="no CUDA device visible (runs on a machine with a GPU)")


def test_missing_cupy_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install -e \.\[cuda\]"):
        cuda.cuda_backend()
    assert cuda.gpu_count() == 0


@pytest.mark.skipif(not no_gpu, reason="a GPU is visible here")
def test_no_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no CUDA device found.*device='emu'"):
        minidl.tensor([1.0, 2.0]).to("cuda")


@pytest.mark.parametrize("device", ["emu", pytest.param("cuda", marks=needs_gpu)])
def test_tensor_to_and_back(device):
    x = minidl.tensor([[1.0, -2.0], [3.0, 4.0]], requires_grad=True)
    y = x.to(device)
    assert y.device == device and isinstance(y.data, get_backend(device).xp.ndarray)
    (y.relu() * 2).sum().backward()  # the gradient comes back to the CPU tensor
    assert x.grad.device == "cpu"
    np.testing.assert_array_equal(x.grad.numpy(), [[2, 0], [2, 2]])
    np.testing.assert_array_equal(y.to("cpu").numpy(), x.numpy())


@pytest.mark.parametrize("device", ["emu", pytest.param("cuda", marks=needs_gpu)])
def test_model_and_dataloader_to_device(device):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).to(device)
    assert all(p.device == device for p in model.parameters())
    data = [(np.full(3, i, np.float32), i % 2) for i in range(6)]
    for xb, yb in DataLoader(data, batch_size=4, device=device):
        assert xb.device == yb.device == device
        out = model(xb)
        assert out.device == device and out.shape == (len(xb), 2)
    loader = DataLoader(data, batch_size=6).to(device)
    xb, yb = next(iter(loader))
    assert xb.device == device
    model.to("cpu")
    assert all(p.device == "cpu" for p in model.parameters())


def test_emu_float64_uses_the_array_module():
    """The kernels are float32; float64 (gradient checks) still works on the device, through numpy/CuPy."""
    x = minidl.tensor(np.arange(6.0).reshape(2, 3), dtype=minidl.float64, device="emu", requires_grad=True)
    (x @ x.T).sum().backward()
    assert x.grad.dtype == minidl.float64
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.tile(np.arange(6.0).reshape(2, 3).sum(0), (2, 1)))


def test_glue_is_numpy_ref_on_the_device_array_module():
    """On "cuda", the ops without a CUDA kernel are numpy_ref's functions with np rebound to cupy."""
    import types
    fake_xp = types.SimpleNamespace(**{name: getattr(np, name) for name in dir(np) if not name.startswith("__")})
    glue = cuda.rebound_reference(fake_xp)
    conv = glue["conv2d"]
    assert conv.__globals__["np"] is fake_xp
    assert conv.__globals__["_group_cols"].__globals__["np"] is fake_xp  # helpers are rebound too
    assert glue["add"] is fake_xp.add and glue["where"] is fake_xp.where
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5))
    w = np.random.default_rng(1).standard_normal((3, 2, 3, 3))
    np.testing.assert_allclose(conv(x, w, (1, 1), (1, 1), (1, 1), 1),
                               cuda.numpy_ref.conv2d(x, w, (1, 1), (1, 1), (1, 1), 1))
