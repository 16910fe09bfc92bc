# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 — The kernels: one matmul, four ways
#
# Every op in minidl asks its tensor's *backend* for kernels by name. The same product
# $C = AB$, $C_{mn} = \sum_k A_{mk} B_{kn}$, exists as:
#
# 1. a numpy reference (`minidl/backend/numpy_ref.py`: the ground truth every kernel is tested against);
# 2. a C++ kernel (`csrc/cpu/matmul.cpp`: packed panels, cache blocking, a register-blocked micro-kernel, OpenMP);
# 3. two CUDA kernels (`csrc/cuda/matmul.cu`: a naive one and a shared-memory tiled one),
#    run here on the **emu** device: the unmodified `.cu` compiled by g++ against
#    `csrc/emu/cuda_emu.h`, each CUDA thread a real CPU thread. Slow, but it checks the
#    kernel's logic on a machine without a GPU. On a machine with one, the same
#    host code runs them on the "cuda" device.

# %%
import os
import time

import numpy as np

from minidl.backend import get_backend, numpy_ref

QUICK = os.environ.get("MINIDL_NOTEBOOK_QUICK") == "1"
rng = np.random.default_rng(0)


def best_time(fn, repeat=3):
    """The fastest of a few runs, in seconds (the least disturbed by other work on the machine)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)

# %% [markdown]
# ## 0. The definition, in Python loops
# Three nested loops: $2MNK$ floating-point operations, one at a time. Fine for 32×32, hopeless beyond.

# %%
def matmul_loops(a, b):
    M, K = a.shape
    N = b.shape[1]
    c = np.zeros((M, N), dtype=a.dtype)
    for m in range(M):
        for n in range(N):
            acc = 0.0
            for k in range(K):
                acc += a[m, k] * b[k, n]
            c[m, n] = acc
    return c


a = rng.standard_normal((32, 32)).astype(np.float32)
b = rng.standard_normal((32, 32)).astype(np.float32)
t = best_time(lambda: matmul_loops(a, b), repeat=1)
print(f"Python loops, 32x32: {t * 1e3:.1f} ms = {2 * 32 ** 3 / t / 1e9:.4f} GFLOP/s")

# %% [markdown]
# ## 1 and 2. numpy (OpenBLAS) and minidl's C++ kernel
# `get_backend("cpu")` is numpy_ref with the C++ kernels in place of the ones they
# implement (`MINIDL_KERNELS=numpy` keeps the reference only).

# %%
cpu = get_backend("cpu")
print("cpu backend's matmul comes from:", cpu.matmul.__module__)
for n in (64, 256) if QUICK else (64, 256, 512):
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    assert np.allclose(cpu.matmul(a, b), numpy_ref.matmul(a, b), rtol=1e-4, atol=1e-3)
    gflops = lambda fn: 2 * n ** 3 / best_time(lambda: fn(a, b)) / 1e9
    print(f"n={n:4d}: numpy {gflops(numpy_ref.matmul):6.1f} GFLOP/s   minidl C++ {gflops(cpu.matmul):6.1f} GFLOP/s")

# %% [markdown]
# ## 3. The CUDA kernels, on the emulator
# The naive kernel gives each thread one element of $C$: it reads a row of $A$ and a column
# of $B$ from global memory, two loads per multiply-add. The tiled kernel first copies a
# 64×8 tile of $A$ and an 8×64 tile of $B$ into shared memory, and each of its 256 threads
# accumulates a 4×4 patch of $C$ in registers. Here is the start of the file:

# %%
from minidl.backend.cuda import CUDA_DIR

source = (CUDA_DIR / "matmul.cu").read_text()
print(source[:source.index("__device__")])

# %% [markdown]
# Both versions agree with numpy, including sizes that are not multiples of the tile.
# The emulator runs the blocks one after another, so its times say nothing about a GPU:
# they measure how much work each kernel launches.

# %%
emu = get_backend("emu")
a = rng.standard_normal((70, 45)).astype(np.float32)
b = rng.standard_normal((45, 33)).astype(np.float32)
for version in ("naive", "tiled"):
    c = emu.matmul(a, b, version=version)
    err = np.abs(c - numpy_ref.matmul(a, b)).max()
    print(f"emu matmul_{version}: max |error| vs numpy {err:.2e}, {best_time(lambda: emu.matmul(a, b, version=version), 1) * 1e3:.0f} ms")
    assert err < 1e-4

# %% [markdown]
# ## The same tensors, three devices
# An op does not know which kernels it runs: `Tensor.to(device)` moves the array and the
# op asks the new tensor's backend. A small network's forward pass on "cpu" and on "emu":

# %%
import minidl
import minidl.nn as nn

minidl.set_seed(0)
model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
x = minidl.randn(5, 10)
on_cpu = model(x).numpy()
model.to("emu")
on_emu = model(x.to("emu")).numpy()
print("cpu vs emu, max |difference|:", np.abs(on_cpu - on_emu).max())
assert np.allclose(on_cpu, on_emu, atol=1e-5)
if "cuda" in minidl.backend.devices():
    try:
        model.to("cuda")
        print("cpu vs cuda:", np.abs(on_cpu - model(x.to("cuda")).numpy()).max())
    except RuntimeError as e:   # no GPU here: the error says so
        print(str(e).splitlines()[0])
