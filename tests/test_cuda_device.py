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


# ---------------------------------------------------------------- why the "cuda" device is unavailable

def fake_cupy(monkeypatch, toolkit=13020, driver=13020, nvrtc=(13, 0), count=1, launch=None):
    """Put a stand-in CuPy in sys.modules: the CUDA versions, NVRTC and GPUs a machine could have."""
    import types

    def raiser(error):
        def fail(*args, **kwargs):
            raise error
        return fail

    def kernel(source, name):
        def run(grid, block, args):
            if launch is not None:
                raise launch
            args[0][...] += 1
        return run

    runtime = types.SimpleNamespace(
        runtimeGetVersion=lambda: toolkit, driverGetVersion=lambda: driver, getDevice=lambda: 0,
        getDeviceCount=raiser(count) if isinstance(count, Exception) else (lambda: count))
    nvrtc_module = types.SimpleNamespace(
        getVersion=raiser(nvrtc) if isinstance(nvrtc, Exception) else (lambda: nvrtc))
    cuda_module = types.SimpleNamespace(runtime=runtime, nvrtc=nvrtc_module)
    fake = types.SimpleNamespace(__version__="99.0", cuda=cuda_module, RawKernel=kernel, float32=np.float32,
                                 zeros=lambda n, dtype: np.zeros(n, dtype))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cuda_module)
    monkeypatch.setattr(cuda, "_launch_checked", set())


@pytest.mark.parametrize("machine, expected", [
    (dict(driver=0), r"no NVIDIA driver found .*CuPy 99\.0 \(cupy-cuda13x\) is built for CUDA 13\.2"),
    (dict(driver=12040), r"driver runs CUDA up to 12\.4, but .*CUDA 13\.2, which needs driver R580 .*"
                         r'pip install -e "\.\[cuda12\]"'),
    (dict(driver=11080, toolkit=12040, nvrtc=(12, 4)), r"up to 11\.8.* needs driver R525 .*update the NVIDIA driver"),
    (dict(nvrtc=OSError("libnvrtc.so.13: cannot open shared object file")),
     r"NVRTC .* not loadable \(OSError: libnvrtc\.so\.13.*\.\[cuda13\]"),
    (dict(nvrtc=(12, 8)), r"NVRTC 12\.8 does not match CuPy's CUDA 13\.2"),
    (dict(count=0), r"the NVIDIA driver sees no GPU"),
    (dict(count=RuntimeError("cudaErrorNoDevice")), r"finds no usable GPU \(RuntimeError: cudaErrorNoDevice\)"),
    (dict(launch=RuntimeError("CUDA_ERROR_UNSUPPORTED_PTX_VERSION")),
     r"probe kernel compiled by NVRTC 13\.0 does not run on GPU 0 .*UNSUPPORTED_PTX_VERSION"),
])
def test_the_unavailable_reason_names_the_failure_and_the_fix(monkeypatch, machine, expected):
    fake_cupy(monkeypatch, **machine)
    reason = cuda.cuda_unavailable_reason()
    assert reason is not None and re_search(expected, reason), reason
    assert cuda.gpu_count() == 0
    with pytest.raises(RuntimeError, match="no CUDA device found: .*device='emu'"):
        cuda.cuda_backend()


def re_search(pattern, text):
    import re
    return re.search(pattern, text) is not None


def test_a_working_gpu_has_no_reason(monkeypatch):
    fake_cupy(monkeypatch, count=2)
    assert cuda.cuda_unavailable_reason() is None
    assert cuda.gpu_count() == 2


def test_missing_cupy_reason_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    reason = cuda.cuda_unavailable_reason()
    assert reason.startswith("CuPy is not importable") and ".[cuda12]" in reason and "R580" in reason


@pytest.mark.skipif(not no_gpu, reason="a GPU is visible here: the GPU tests run instead of skipping")
@pytest.mark.timeout(240)
def test_require_gpu_turns_a_gpu_skip_into_a_failure_with_the_reason():
    """MINIDL_REQUIRE_GPU=1 (for a machine that has a GPU): a GPU test that would skip fails, saying why."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    selected = "tests/test_cuda_device.py::test_tensor_to_and_back[cuda]"

    def pytest_run(require):
        env = {**os.environ, "MINIDL_REQUIRE_GPU": require}
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", selected],
                              cwd=root, env=env, capture_output=True, text=True, timeout=200)

    relaxed = pytest_run("0")
    assert relaxed.returncode == 0 and "1 skipped" in relaxed.stdout, relaxed.stdout + relaxed.stderr
    strict = pytest_run("1")
    out = strict.stdout + strict.stderr
    assert strict.returncode != 0, out
    assert "MINIDL_REQUIRE_GPU=1: this GPU test would have skipped" in out
    assert cuda.cuda_unavailable_reason() in out   # the real reason, not "no CUDA device visible"
    assert "minidl cuda device: unavailable" in out and "GPU skips fail" in out
