"""minidl.profile(): time, calls and FLOPs per op and per kernel, and nothing left behind."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl import autograd
from minidl.backend import get_backend
from minidl.optim import SGD


def train_steps(model, steps=3, device="cpu"):
    opt = SGD(model.parameters(), lr=0.1)
    minidl.set_seed(1)
    x, y = minidl.randn(16, 8).to(device), minidl.randint(0, 3, (16,)).to(device)
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()


def mlp():
    minidl.set_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))


def test_ops_and_their_backward_are_counted_with_kernels_and_flops():
    model = mlp()
    with minidl.profile() as p:
        train_steps(model, steps=3)
    assert p.ops["Linear"].calls == 6 and p.ops["Linear.backward"].calls == 6
    assert p.ops["ReLU"].calls == 3 and p.ops["ReLU.backward"].calls == 3
    matmuls = [k for k in p.kernels if k.startswith("matmul [")]
    assert len(matmuls) == 1
    # forward 16x8 @ 8x32 and 16x32 @ 32x3; backward: two products per layer (dx is skipped for the
    # first layer, whose input needs no gradient) -> 3 per step + 2 forward per step
    forward_flops = 2 * 16 * 32 * 8 + 2 * 16 * 3 * 32
    assert p.ops["Linear"].flops == 3 * forward_flops
    backward_flops = 2 * 32 * 8 * 16 + 2 * 3 * 32 * 16 + 2 * 16 * 32 * 3
    assert p.ops["Linear.backward"].flops == 3 * backward_flops
    assert p.kernels[matmuls[0]].flops == 3 * (forward_flops + backward_flops)
    for s in p.ops.values():
        assert s.seconds >= s.kernel_seconds >= 0
    assert p.wall_seconds >= p.op_seconds > 0
    assert any(k.startswith("sgd_step [") for k in p.kernels)   # the optimizer's kernels, outside any op


def test_kernels_are_tagged_with_where_they_run():
    with minidl.profile() as p:
        train_steps(mlp(), steps=1)
    where = get_backend("cpu").name
    expected = "C++" if where == "cpu" else "numpy"                 # MINIDL_KERNELS=numpy: reference only
    assert p.kernels[f"matmul [{expected}]"].calls > 0
    assert any(k.endswith("[numpy]") for k in p.kernels)            # glue (reshape, sum, ...) is numpy


def test_emu_kernels_are_tagged_emu():
    model = mlp()
    model.to("emu")
    get_backend("emu")
    with minidl.profile() as p:
        train_steps(model, steps=1, device="emu")
    assert p.kernels["matmul [emu]"].calls > 0 and p.kernels["matmul [emu]"].flops > 0


def test_table_lists_ops_kernels_and_totals():
    with minidl.profile() as p:
        train_steps(mlp(), steps=2)
    text = p.table(top=3)
    lines = text.splitlines()
    assert lines[0].startswith("wall ") and "Python overhead" in lines[0]
    assert any(line.startswith("op ") and "overhead ms" in line for line in lines)
    assert any(line.startswith("kernel ") and "GFLOP/s" in line for line in lines)
    assert "more" in text  # more than 3 kinds of op and kernel


def test_everything_is_restored_and_results_unchanged():
    apply = autograd.Function.__dict__["apply"]
    kernels = dict(vars(get_backend("cpu")))
    a, b = mlp(), mlp()
    with minidl.profile():
        train_steps(a)
    train_steps(b)
    assert autograd.Function.__dict__["apply"] is apply
    assert dict(vars(get_backend("cpu"))) == kernels
    for pa, pb in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(pa.numpy(), pb.numpy())


def test_restored_after_an_error_and_no_nesting():
    apply = autograd.Function.__dict__["apply"]
    with pytest.raises(ZeroDivisionError):
        with minidl.profile():
            1 / 0
    assert autograd.Function.__dict__["apply"] is apply
    with minidl.profile():
        with pytest.raises(RuntimeError, match="do not nest"):
            with minidl.profile():
                pass
    assert autograd.Function.__dict__["apply"] is apply


def test_conv_flops():
    x = minidl.randn(2, 3, 9, 9, requires_grad=True)
    w = minidl.randn(4, 3, 3, 3, requires_grad=True)
    with minidl.profile() as p:
        minidl.conv2d(x, w, padding=1).sum().backward()
    per_pass = 2 * (2 * 4 * 9 * 9) * (3 * 3 * 3)
    conv_ops = [name for name in p.ops if not name.endswith(".backward") and p.ops[name].flops]
    assert len(conv_ops) == 1 and p.ops[conv_ops[0]].flops == per_pass
    assert p.ops[conv_ops[0] + ".backward"].flops == 2 * per_pass
