"""A tiny MLP and a tiny CNN trained a few steps on "emu" follow the same path as on "cpu".

The "emu" device runs the whole model through the CUDA backend's host code and the
kernels of csrc/cuda (matmul, elementwise, reductions, softmax, conv, pooling, batch
norm, the fused optimizer updates) on the CPU emulator; "cpu" runs the C++ / numpy
kernels. Same seed, same data: the losses and the final weights must agree to float32
rounding (the kernels sum in different orders). Where a GPU is visible, "cuda" runs too.
"""
import numpy as np
import pytest

import minidl
from minidl import nn
from minidl.backend.cuda import gpu_count
from minidl.data import DataLoader

# A hung kernel fails the run instead of stalling CI. method="thread": a kernel runs in C with
# the GIL released, where the default SIGALRM timeout could not interrupt it.
pytestmark = pytest.mark.timeout(120, method="thread")

DEVICES = ["emu", pytest.param("cuda", marks=pytest.mark.skipif(gpu_count() == 0, reason="no CUDA device visible"))]


def train(make_model, make_optimizer, x, y, device, steps):
    minidl.manual_seed(0)
    model = make_model().to(device)
    opt = make_optimizer(model.parameters())
    loader = DataLoader(list(zip(x, y)), batch_size=len(x) // 2, device=device)
    losses = []
    for _ in range(steps // 2):
        for xb, yb in loader:  # the DataLoader puts each batch on the device
            assert xb.device == device and yb.device == device
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses, [p.to("cpu").numpy() for p in model.parameters()]


def check_same_run(make_model, make_optimizer, x, y, device, steps=4):
    cpu_losses, cpu_params = train(make_model, make_optimizer, x, y, "cpu", steps)
    dev_losses, dev_params = train(make_model, make_optimizer, x, y, device, steps)
    assert cpu_losses[-1] < cpu_losses[0]  # it learns at all
    np.testing.assert_allclose(dev_losses, cpu_losses, rtol=1e-4, atol=1e-5)
    for a, b in zip(dev_params, cpu_params):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_mlp_matches_cpu(device):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 7)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)

    def mlp():
        return nn.Sequential(nn.Linear(7, 16), nn.ReLU(), nn.Linear(16, 3))

    check_same_run(mlp, lambda ps: minidl.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01), x, y, device)


@pytest.mark.parametrize("device", DEVICES)
def test_cnn_matches_cpu(device):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 2, 8, 8)).astype(np.float32)
    y = (x[:, 0, :4].mean((1, 2)) > 0).astype(np.int64)

    def cnn():  # no bias before the batch norm: its true gradient is 0, and Adam would amplify rounding noise
        return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 2))

    check_same_run(cnn, lambda ps: minidl.optim.AdamW(ps, lr=0.01), x, y, device)
