"""The kernel chapters of csrc/cuda, version by version: matmul.cu's v1..v7 (and its fma_peak) and reduce.cu's v1..v3.

Every version is compiled by NVRTC for sm_80 and sm_90 (no GPU needed) and run against numpy on
hypothesis-drawn shapes that are not multiples of its tiles, with transposed, batched and
broadcast (stride 0) operands: on "emu" (the CPU emulator) and on "cuda" where a GPU is visible.
The launches are the benchmarks' own (bench_matmul.CUDA_VERSIONS, bench_gpu.REDUCE_VERSIONS),
so what is tested is what is timed. The emulator runs a block's threads as real threads: small shapes.
"""
import functools
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from benchmarks.bench_gpu import REDUCE_VERSIONS, launch_reduce_version
from benchmarks.bench_matmul import CUDA_VERSIONS, launch_cuda_version
from minidl.backend import get_backend
from minidl.backend.cuda import CUDA_DIR, gpu_count, nvrtc_compile

pytestmark = pytest.mark.timeout(300, method="thread")

NO_GPU = pytest.mark.skipif(gpu_count() == 0, reason="no CUDA device visible ('emu' runs these here)")
DEVICES = ["emu", pytest.param("cuda", marks=NO_GPU)]
MATMUL = {v.name: v for v in CUDA_VERSIONS}
REDUCE = {v.name: v for v in REDUCE_VERSIONS}


def nvrtc_available():
    try:
        from cupy.cuda import nvrtc
        nvrtc.getVersion()
        return True
    except Exception:
        return False


# ---------------------------------------------------------------- the chapters' order and compilation

def kernels_in(filename):
    return re.findall(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\)\s+)?(\w+)\(',
                      (CUDA_DIR / filename).read_text())


def test_each_chapter_reads_in_order_and_ends_with_the_kernel_minidl_uses():
    """The file holds the versions in order, each comment opens with its number, and the last version
    is the kernel backend/cuda.py launches (matmul_tiled, reduce_rows)."""
    for filename, versions, first, last in (("matmul.cu", CUDA_VERSIONS, ["fma_peak"], "matmul_tiled"),
                                            ("reduce.cu", REDUCE_VERSIONS, [], "reduce_rows")):
        assert kernels_in(filename) == first + [v.kernel for v in versions]
        assert versions[-1].kernel == last
        text = (CUDA_DIR / filename).read_text()
        for v in versions:
            assert re.search(rf"^// {v.name} {v.kernel}[.:]", text, re.M), f"{filename}: no comment opens {v.name}"


@pytest.mark.skipif(not nvrtc_available(), reason="NVRTC not installed: pip install -e .[cuda]")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("filename, kernel", [("matmul.cu", "fma_peak")]
                         + [("matmul.cu", v.kernel) for v in CUDA_VERSIONS]
                         + [("reduce.cu", v.kernel) for v in REDUCE_VERSIONS])
def test_each_version_compiles_with_nvrtc(filename, kernel, arch):
    assert kernel.encode() in cubin(filename, arch)


@functools.lru_cache(maxsize=None)
def cubin(filename, arch):
    return nvrtc_compile(CUDA_DIR / filename, arch)


# ---------------------------------------------------------------- matmul.cu against numpy

def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64), rtol=1e-4, atol=1e-5)


def run_matmul(device, version, a, b, trans_a=False, trans_b=False, misalign=False):
    """a @ b (a: (batch, M, K) or (M, K), b: (K, N), shared by the batch: stride 0) with one version;
    with trans_a / trans_b the operand lies transposed in memory; with misalign its data starts 4 bytes
    past a 16-byte boundary (the float4 loads of v6 and v7 must then fall back to 4-byte ones)."""
    be = get_backend(device)
    batched = a.ndim == 3
    a3 = a if batched else a[None]
    nb, M, K = a3.shape
    N = b.shape[1]

    def upload(x):  # NaN around the matrix: a kernel that reads past its edges poisons its result
        buffer = be.xp.full(x.size + 8, np.nan, np.float32)
        address = buffer.data.ptr if device == "cuda" else buffer.ctypes.data
        start = (-address % 16) // 4 + (1 if misalign else 0)  # 16-byte aligned, or 4 bytes past
        view = buffer[start:start + x.size].reshape(x.shape)
        view[...] = be.xp.asarray(x)
        return view

    A = upload(np.ascontiguousarray(np.swapaxes(a3, 1, 2)) if trans_a else a3)
    B = upload(np.ascontiguousarray(b.T) if trans_b else b)
    out = be.xp.full((nb, M, N), np.nan, np.float32)
    launch_cuda_version(be.kernels, version, A, int(trans_a), B, int(trans_b), out, M, N, K, nb, (M * K, 0, M * N))
    out = be.to_numpy(out)
    return out if batched else out[0]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(MATMUL))
@settings(max_examples=6, deadline=None)
@given(m=st.integers(1, 70), k=st.integers(1, 40), n=st.integers(1, 70), trans_a=st.booleans(), trans_b=st.booleans())
def test_matmul_version(device, name, m, k, n, trans_a, trans_b):
    a, b = randn(m, k, seed=1), randn(k, n, seed=2)
    close(run_matmul(device, MATMUL[name], a, b, trans_a, trans_b), a @ b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(MATMUL))
def test_matmul_version_batched_with_a_broadcast_operand(device, name):
    a, b = randn(3, 33, 13, seed=3), randn(13, 65, seed=4)  # b: one matrix for the whole batch (stride 0)
    close(run_matmul(device, MATMUL[name], a, b, trans_b=True), a @ b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["v6", "v7"])
@pytest.mark.parametrize("misalign", [False, True], ids=["aligned", "misaligned"])
def test_the_float4_loads_and_their_fallback(device, name, misalign):
    """K and N multiples of 4: rows start on 16-byte boundaries, so v6 and v7 load float4s; one float
    off such a boundary, they must load floats one by one instead (a float4 load there would fault)."""
    a, b = randn(2, 9, 12, seed=5), randn(12, 68, seed=6)
    for trans_a in (False, True):
        close(run_matmul(device, MATMUL[name], a, b, trans_a=trans_a, misalign=misalign), a @ b)


@NO_GPU
@pytest.mark.parametrize("name", list(MATMUL))
def test_matmul_version_on_larger_odd_shapes_on_the_gpu(name):
    """Many tiles in every direction, and long K, at sizes the emulator would take minutes for."""
    a, b = randn(257, 300, seed=7), randn(300, 129, seed=8)
    np.testing.assert_allclose(run_matmul("cuda", MATMUL[name], a, b), a.astype(np.float64) @ b, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_fma_peak_computes_its_chains(device):
    """The roof kernel's arithmetic is real: x <- 0.999 x + 0.001, iters times, from x = tid + j."""
    be = get_backend(device)
    blocks, threads, iters = 2, 64, 37
    out = be.xp.zeros(blocks * threads, np.float32)
    be.kernels.launch("matmul", "fma_peak", (blocks,), (threads,), (out, np.int32(iters)))
    x = np.arange(threads, dtype=np.float64)[:, None] + np.arange(8)
    for _ in range(iters):
        x = 0.999 * x + 0.001
    np.testing.assert_allclose(be.to_numpy(out), np.tile(x.sum(axis=1), blocks), rtol=1e-5)


# ---------------------------------------------------------------- reduce.cu against numpy

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(REDUCE))
@settings(max_examples=4, deadline=None)
@given(rows=st.integers(1, 40), R=st.integers(1, 700), op=st.sampled_from(["sum", "max", "min", "mean"]),
       shift=st.sampled_from([-10.0, 0.0, 10.0]), nan_row=st.booleans())
def test_reduce_version(device, name, rows, R, op, shift, nan_row):
    """R up to 700: past the 256 threads of a block, so each thread folds several elements first;
    all-negative rows (shift -10) and all-positive ones (+10) catch a max or min that starts from 0."""
    be = get_backend(device)
    x = randn(rows, R, seed=9) + np.float32(shift)
    if nan_row:
        x[rows // 2, R // 3] = np.nan  # NaN propagates through every op, as in numpy
    out = be.xp.full(rows, -12345.0, np.float32)
    launch_reduce_version(be.kernels, REDUCE[name], op, be.xp.asarray(x), out)
    expected = getattr(np, op)(x.astype(np.float64), axis=1)
    np.testing.assert_allclose(be.to_numpy(out), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(REDUCE))
def test_reduce_version_starts_from_the_identity(device, name):
    """max of negative rows and min of positive ones, for short rows (most threads hold no element)
    and long ones: a version that starts from 0, or lets an idle thread or warp add a 0, fails."""
    be = get_backend(device)
    for R in (1, 33, 300):
        x = -np.abs(randn(3, R, seed=R)) - 1
        for op, data in (("max", x), ("min", -x)):
            out = be.xp.zeros(3, np.float32)
            launch_reduce_version(be.kernels, REDUCE[name], op, be.xp.asarray(data), out)
            np.testing.assert_array_equal(be.to_numpy(out), getattr(np, op)(data, axis=1))
