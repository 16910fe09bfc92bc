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
# # 02 — The kernels: one matmul, from Python loops to a GPU
#
# Every op in minidl asks its tensor's *backend* for kernels by name. The same product
# $C = AB$, $C_{mn} = \sum_k A_{mk} B_{kn}$, exists as:
#
# 1. a numpy reference (`minidl/backend/numpy_ref.py`: the ground truth every kernel is tested against);
# 2. C++ kernels, in five steps from naive to minidl's own (`csrc/cpu/matmul_steps.cpp`, then
#    `csrc/cpu/matmul.cpp`: packed panels, cache blocking, a register-blocked micro-kernel, OpenMP);
# 3. seven CUDA kernels, each adding one idea (`csrc/cuda/matmul.cu`: naive, coalesced, shared-memory
#    tiles, 1-D and 2-D register tiles, vectorised loads, warp tiles), run here on the **emu** device: the unmodified `.cu` compiled by g++ against
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
# ## Where the C++ speed comes from, one idea at a time
# `csrc/cpu/matmul_steps.cpp` holds the same product five times, each step adding one idea
# (its header says which): v0 the definition (B read down its columns), v1 the loop order that
# reads rows (the compiler vectorises it), v2 blocks of B that stay in cache, v3 packed operands
# and a tile of C kept in registers, v4 minidl's kernel. One thread each, so the gain is the idea's.
# (`python -m benchmarks.bench_matmul --versions` prints the same table at n = 1024.)

# %%
from minidl import _C

n = 128 if QUICK else 384
a = rng.standard_normal((n, n)).astype(np.float32)
b = rng.standard_normal((n, n)).astype(np.float32)
minidl_threads = _C.get_num_threads()
_C.set_num_threads(1)
numpy_gflops = 2 * n ** 3 / best_time(lambda: numpy_ref.matmul(a, b)) / 1e9
for version, name in enumerate(_C.MATMUL_STEPS):
    assert np.allclose(_C.matmul_step(version, a, b), a @ b, rtol=1e-3, atol=1e-3)
    gflops = 2 * n ** 3 / best_time(lambda: _C.matmul_step(version, a, b)) / 1e9
    print(f"{name:18s} {gflops:7.2f} GFLOP/s  ({gflops / numpy_gflops:5.2f} x numpy's {numpy_gflops:.1f})")
_C.set_num_threads(minidl_threads)

# %% [markdown]
# ## 3. The CUDA kernels, on the emulator
# `csrc/cuda/matmul.cu` climbs the same way on a GPU: v1 gives each thread one element of $C$
# (two loads from global memory per multiply-add), v2 lets a warp's 32 threads read neighbouring
# columns (coalesced), v3 stages tiles in shared memory, v4 and v5 keep 16 outputs per thread in
# registers, v6 loads four floats at a time, v7 splits the block's tile between warps. Here is
# the start of the file:

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
