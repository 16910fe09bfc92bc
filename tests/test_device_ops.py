"""Every op of tests/op_specs.py on the "emu" and "cuda" devices, against the "cpu" device.

The cuda tier mirrors the cpu tier: the same op table, the same hypothesis draws.

* float32, the kernels' precision: the op's outputs and input gradients on the device
  equal the cpu device's to float32 tolerances (the kernels sum in other orders), with the
  inputs' layouts (transposed, strided) rebuilt on the device. Which csrc/cuda files' kernels
  each op launches is recorded and checked against ``op_specs.DEVICE_KERNELS``, the one
  place that says, per op, which kernels run and which ops are glue (below).
* float64: no CUDA kernel takes float64. On the device, float64 runs the *glue*:
  numpy_ref's functions with ``np`` rebound to the device's array module (CuPy's library
  routines on "cuda", numpy itself on "emu"); cuda.py's host code picks it. So the float64
  gradcheck on the device checks that dispatch and the glue, and it also checks that no
  kernel runs there; the kernels' gradients are the float32 comparison's job.
* larger shapes (``LARGE``): a few ops at sizes that fill grids, in float32 against "cpu".

Every op of the table runs on every device in both dtypes; none is skipped. "emu" runs every
thread of every block on the CPU, so the device tests draw fewer examples than the cpu tier
(``device_examples``). "cuda" runs where a GPU is visible and is skipped with its reason
elsewhere (a failure under MINIDL_REQUIRE_GPU=1, see conftest.py).
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minidl
import minidl.nn.functional as F
from minidl.backend import get_backend
from minidl.backend.cuda import CUDA_DIR, gpu_count
from minidl.tensor import Tensor
from minidl.testing import gradcheck
from tests.helpers import as_tuple, is_param, to_minidl
from tests.op_specs import DEVICE_KERNELS, SPECS, lstm_layer

# A hung kernel fails the test instead of stalling CI (a kernel runs in C with the GIL released,
# where the default SIGALRM timeout could not interrupt it).
pytestmark = pytest.mark.timeout(300, method="thread")

DEVICES = ["emu", pytest.param("cuda", marks=pytest.mark.skipif(gpu_count() == 0, reason="no CUDA device visible"))]

# float32 on the device vs float32 on the cpu: both round, in different orders (a block's tree
# reduction against a sequential or SIMD sum; nvcc fuses multiply-adds).
RTOL, ATOL = 2e-4, 2e-5


def device_examples(spec):
    """Examples per op on a device: half the cpu tier's, at least 4 (the emulator runs every thread)."""
    return max(4, spec.examples // 2)


def on_device(values, device, dtype):
    """The drawn inputs as tensors on ``device``, float arrays requiring grad, their layout kept.

    A transposed input is the device transpose of a contiguous device array, a strided one every
    other element of a wider device array, so the host code sees the views the cpu tier sees.
    """
    backend = get_backend(device)
    out = []
    for v in values:
        if is_param(v):
            out.extend(v[1:])
            continue
        v = np.asarray(v)
        if v.dtype.kind != "f":
            host = v.astype(np.int64) if v.dtype.kind in "iu" else v
            out.append(Tensor._make(backend.asarray(np.array(host, order="C")), device))  # 0-d stays 0-d
            continue
        if v.flags.c_contiguous:
            data = backend.asarray(np.array(v, dtype, order="C"))
        elif v.T.flags.c_contiguous:
            data = backend.asarray(np.array(v.T, dtype, order="C")).T
        else:  # every other element along the last axis
            wide = np.zeros(v.shape[:-1] + (2 * v.shape[-1],), dtype)
            wide[..., ::2] = v
            data = backend.asarray(wide)[..., ::2]
        out.append(Tensor._make(data, device, requires_grad=True))
    return out


def forward_backward(fn, tensors):
    """The op's outputs and its inputs' gradients (None where an input got none) of sum(w * output),
    for fixed random w.

    Each output's backward gets its w directly (no extra product and sum on the device), so the
    kernels launched are the op's own and those of the spec's call (its `* 2`, say).
    """
    outs = as_tuple(fn(minidl, F, *tensors))
    rng = np.random.default_rng(1)
    with_grad = [o for o in outs if o.requires_grad]
    for i, o in enumerate(with_grad):
        w = rng.standard_normal(tuple(o.shape)).astype(o.dtype)
        o.backward(Tensor._make(o.backend.asarray(w), o.device), retain_graph=i < len(with_grad) - 1)
    leaves = [t for t in tensors if isinstance(t, Tensor) and t.requires_grad]
    return outs, [None if t.grad is None else t.grad for t in leaves]


class KernelLog:
    """Records which csrc/cuda files' kernels a device launches (cuda.py's Launcher.launch)."""

    def __init__(self, monkeypatch, device):
        self.files, self.kernels = set(), set()
        host = get_backend(device).kernels
        launch = host.launch

        def recording(module, kernel, *args, **kwargs):
            self.files.add("reduce" if module == "partials" else module)  # two-pass reductions count as reduce
            self.kernels.add(f"{module}.{kernel}")
            return launch(module, kernel, *args, **kwargs)
        monkeypatch.setattr(host, "launch", recording)


def test_every_op_is_listed_for_the_devices():
    """DEVICE_KERNELS names every op of the table (kernel files, or none for glue), and nothing else."""
    assert set(DEVICE_KERNELS) == {s.name for s in SPECS}
    files = {name for kernels in DEVICE_KERNELS.values() for name in kernels}
    assert all((CUDA_DIR / f"{name}.cu").exists() for name in files), files


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_float32_matches_cpu(spec, device, monkeypatch):
    """Values and gradients on the device equal the cpu device's (float32); the kernels run are the listed ones."""
    log = KernelLog(monkeypatch, device)

    @settings(max_examples=device_examples(spec))
    @given(data=st.data())
    def check(data):
        drawn = spec.draw_inputs(data)
        cpu_outs, cpu_grads = forward_backward(spec.fn, to_minidl(drawn, np.float32))
        dev_outs, dev_grads = forward_backward(spec.fn, on_device(drawn, device, np.float32))
        assert len(dev_outs) == len(cpu_outs)
        for d, c in zip(dev_outs, cpu_outs):
            assert d.device == device, f"{spec.name}: an output on {d.device!r}, not {device!r}"
            assert d.dtype == c.dtype and tuple(d.shape) == tuple(c.shape), \
                f"{spec.name}: {d.dtype} {tuple(d.shape)} on {device}, {c.dtype} {tuple(c.shape)} on cpu"
            np.testing.assert_allclose(d.numpy(), c.numpy(), rtol=RTOL, atol=ATOL,
                                       err_msg=f"{spec.name} on {device}: values")
        for k, (d, c) in enumerate(zip(dev_grads, cpu_grads)):
            assert (d is None) == (c is None), f"{spec.name} on {device}: input {k} has a gradient on one device only"
            if d is None:
                continue
            assert d.device == device and d.dtype == c.dtype and tuple(d.shape) == tuple(c.shape)
            np.testing.assert_allclose(d.numpy(), c.numpy(), rtol=RTOL, atol=ATOL,
                                       err_msg=f"{spec.name} on {device}: gradient of input {k}")
    check()
    listed = set(DEVICE_KERNELS[spec.name])
    # The shape specs scale or add their results (`* 2`): elementwise.cu, and reduce.cu for a broadcast gradient.
    allowed = listed | ({"elementwise", "reduce"} if spec.group == "shape" else set())
    assert log.files <= allowed, (f"{spec.name} on {device} launched kernels of {sorted(log.files - allowed)}, "
                                 f"not listed in op_specs.DEVICE_KERNELS ({sorted(listed)})")
    assert not listed or log.files, f"{spec.name} on {device}: listed as running {sorted(listed)}, but launched none"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_float64_gradcheck(spec, device, monkeypatch):
    """float64 on the device (the glue, see the module docstring): backward agrees with finite differences,
    and no kernel runs (the CUDA kernels are float32 only: a float64 op that launched one would be a bug)."""
    log = KernelLog(monkeypatch, device)

    @settings(max_examples=device_examples(spec))
    @given(data=st.data())
    def check(data):
        inputs = on_device(spec.draw_inputs(data), device, np.float64)
        gradcheck(lambda *xs: spec.fn(minidl, F, *xs), *inputs)
        for o in as_tuple(spec.fn(minidl, F, *inputs)):
            assert o.device == device and o.dtype == np.float64, f"{spec.name}: {o.dtype} on {o.device}"
    check()
    assert not log.kernels, f"{spec.name} on {device}: float64 launched {sorted(log.kernels)}"


# ---------------------------------------------------------------- the same ops at sizes that fill grids
# The table's draws keep every side <= 5 (so every block of a kernel runs on the emulator in
# milliseconds); these cases reach what small shapes cannot: matmul tiles with ragged edges,
# grid-stride loops over more elements than the grid has threads, rows longer than a block,
# batch-norm statistics and sums in parts, many groups. Inputs ~N(0, 1), float32, contiguous.

def _bn(m, F, x, w, b):
    return F.batch_norm(x, None, None, w, b, training=True, activation="relu6")


LARGE = {
    "matmul (batched, ragged tiles)": (lambda m, F, a, b: a @ b, [(3, 70, 130), (130, 67)]),
    "linear (wide)": (lambda m, F, x, w, b: F.relu(F.linear(x, w, b)), [(33, 300), (129, 300), (129,)]),
    "add (broadcast, 42k elements)": (lambda m, F, a, b: (a + b) * b, [(300, 1), (1, 140)]),
    "gelu (grid-stride)": (lambda m, F, x: F.gelu(x), [(7, 1100)]),
    "sum (one long row, in parts)": (lambda m, F, x: x.sum() * x.mean(dim=(0, 2)).sum(), [(20, 30, 50)]),
    "softmax (rows of 300)": (lambda m, F, x: F.softmax(x, 1) + F.log_softmax(x, 0)[:, :1], [(9, 300)]),
    "cross_entropy (300 classes)": (lambda m, F, x, y: F.cross_entropy(x, y), [(64, 300), ("ints", 300)]),
    "conv2d (groups, stride, padding)": (lambda m, F, x, w: F.conv2d(x, w, stride=2, padding=1, groups=2),
                                         [(3, 6, 17, 19), (8, 3, 3, 3)]),
    "conv2d (1x1, 64 -> 96)": (lambda m, F, x, w: F.conv2d(x, w), [(2, 64, 9, 9), (96, 64, 1, 1)]),
    "conv2d (depthwise 5x5)": (lambda m, F, x, w: F.conv2d(x, w, padding=2, groups=24),
                               [(2, 24, 15, 13), (24, 1, 5, 5)]),
    "batch_norm (training, relu6)": (_bn, [(16, 12, 9, 9), (12,), (12,)]),
    "max_pool2d / avg_pool2d": (lambda m, F, x: F.max_pool2d(x, 3, 2, 1) + F.avg_pool2d(x, 3, 2, 1),
                                [(4, 8, 31, 33)]),
    "adaptive_avg_pool2d": (lambda m, F, x: F.adaptive_avg_pool2d(x, 1), [(4, 40, 7, 7)]),
    "interpolate (bilinear)": (lambda m, F, x: F.interpolate(x, size=(33, 29), mode="bilinear"), [(2, 4, 16, 16)]),
    "embedding (1000 x 64)": (lambda m, F, ids, w: F.embedding(ids, w), [("ints", 1000, (32, 20)), (1000, 64)]),
    "lstm (batch 4, 6 steps, 20 -> 40)": (
        lambda m, F, x, h, c, w_ih, w_hh, b: lstm_layer(m, F, x, h, c, w_ih * 0.2, w_hh * 0.2, b),
        [(4, 6, 20), (4, 40), (4, 40), (160, 20), (160, 40), (160,)]),
}


def _large_inputs(shapes):
    rng = np.random.default_rng(0)
    drawn = []
    for s in shapes:
        if s[0] == "ints":  # ("ints", high) -> as many as the previous input's rows; ("ints", high, shape)
            drawn.append(rng.integers(0, s[1], s[2] if len(s) > 2 else drawn[-1].shape[:1]))
        else:
            drawn.append(rng.standard_normal(s))
    return drawn


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", LARGE)
def test_float32_large_shapes_match_cpu(name, device):
    fn, shapes = LARGE[name]
    drawn = _large_inputs(shapes)
    cpu_outs, cpu_grads = forward_backward(fn, to_minidl(drawn, np.float32))
    dev_outs, dev_grads = forward_backward(fn, on_device(drawn, device, np.float32))
    for d, c in zip(dev_outs, cpu_outs):
        assert d.device == device and d.dtype == c.dtype and tuple(d.shape) == tuple(c.shape)
        np.testing.assert_allclose(d.numpy(), c.numpy(), rtol=1e-3, atol=1e-4, err_msg=f"{name} on {device}: values")
    for k, (d, c) in enumerate(zip(dev_grads, cpu_grads)):
        np.testing.assert_allclose(d.numpy(), c.numpy(), rtol=1e-3, atol=1e-4,
                                   err_msg=f"{name} on {device}: gradient of input {k}")


def test_cuda_glue_uses_only_what_cupy_has():
    """Without a GPU, the glue's float64 path on "cuda" is checked this far: every ``np.<name>`` numpy_ref
    reads (which the "cuda" device rebinds to ``cupy.<name>``) exists in CuPy. ("emu" runs numpy_ref itself.)"""
    import ast
    import inspect
    cupy = pytest.importorskip("cupy")
    from minidl.backend import numpy_ref
    names = set()
    for node in ast.walk(ast.parse(inspect.getsource(numpy_ref))):
        chain = []
        while isinstance(node, ast.Attribute):
            chain.append(node.attr)
            node = node.value
        if chain and isinstance(node, ast.Name) and node.id == "np":
            names.add(".".join(reversed(chain)))

    def in_cupy(name):
        obj = cupy
        for part in name.split("."):
            obj = getattr(obj, part, None)
        return obj is not None
    host_side = {"frompyfunc"}  # erf: math.erf per element; cuda.py computes it on the host for "cuda" arrays
    missing = sorted(n for n in names - host_side if not in_cupy(n))
    assert not missing, f"numpy_ref uses np.{missing}, which CuPy lacks: the float64 glue would fail on 'cuda'"
