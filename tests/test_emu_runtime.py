"""The CUDA emulator itself (csrc/emu/cuda_emu.h + minidl/backend/emu.py), on small kernels written here.

It must behave as a GPU does where a kernel is correct (blocks, threads, shared memory,
barriers, atomics, shuffles, votes), and fail loudly where a GPU would hang or silently
misbehave (a divergent __syncthreads, a shuffle some lanes skip, a partial-warp shuffle, a
wrong argument type). CUDA threads run as fibers by default; a few tests run the same kernels
on real threads (MINIDL_EMU_THREADS=os, the ThreadSanitizer mode) too. The strict modes
(poisoned shared memory, launch limits, block order, sanitizers) are in test_emu_sanitizers.py.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from minidl.backend.emu import EmuError, EmuModule

# A hung kernel fails the run instead of stalling CI. method="thread": a kernel runs in C with
# the GIL released, where the default SIGALRM timeout could not interrupt it.
pytestmark = pytest.mark.timeout(120, method="thread")

SOURCE = r'''
// Test kernels for the emulator.
extern "C" __global__ void coordinates(int* out) {  // each thread writes where it is
    int block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    int thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    out[block * blockDim.x * blockDim.y * blockDim.z + thread] = block * 1000 + thread;
}

extern "C" __global__ void reverse_block(const float* x, float* out) {  // static shared memory + a barrier
    __shared__ float tile[64];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    tile[threadIdx.x] = x[i];
    __syncthreads();
    out[i] = tile[blockDim.x - 1 - threadIdx.x];
}

extern "C" __global__ void rotate_dynamic(const float* x, float* out) {  // extern (dynamic) shared memory
    extern __shared__ float buffer[];
    buffer[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    out[threadIdx.x] = buffer[(threadIdx.x + 1) % blockDim.x];
}

extern "C" __global__ void read_unwritten_shared(float* out) {
    extern __shared__ float buffer[];
    out[threadIdx.x] = buffer[threadIdx.x];
}

extern "C" __global__ void count(int* counter, float* total) {  // atomics from every thread of every block
    atomicAdd(counter, 1);
    atomicAdd(total, 0.5f);
}

extern "C" __global__ void warp_sums(const float* x, float* out) {  // butterfly reduction with shuffles
    float v = x[threadIdx.x];
    for (int mask = 16; mask > 0; mask /= 2) v += __shfl_xor_sync(0xffffffffu, v, mask);
    out[threadIdx.x] = v;
    float down = __shfl_down_sync(0xffffffffu, x[threadIdx.x], 1);  // the last lane keeps its own value
    out[blockDim.x + threadIdx.x] = down;
}

extern "C" __global__ void warp_votes(const int* x, unsigned* out) {  // ballot / any / all, shfl_up, width
    int lane = threadIdx.x % 32, p = x[threadIdx.x];
    unsigned ballot = __ballot_sync(0xffffffffu, p);
    int any = __any_sync(0xffffffffu, p), all = __all_sync(0xffffffffu, p);
    __syncwarp();
    int up = __shfl_up_sync(0xffffffffu, lane, 3);          // lanes 0..2 keep their own
    int bcast = __shfl_sync(0xffffffffu, lane, 5, 8);       // lane 5 of each group of 8
    int xor16 = __shfl_xor_sync(0xffffffffu, lane, 16, 16); // a later group is out of reach: their own
    out[threadIdx.x * 6 + 0] = ballot;
    out[threadIdx.x * 6 + 1] = any;
    out[threadIdx.x * 6 + 2] = all;
    out[threadIdx.x * 6 + 3] = up;
    out[threadIdx.x * 6 + 4] = bcast;
    out[threadIdx.x * 6 + 5] = xor16;
}

extern "C" __global__ void half_warp_shuffle(float* out) {
    float v = threadIdx.x;
    if (threadIdx.x < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);  // a bug: lanes 16..31 never come
    out[threadIdx.x] = v;
}

extern "C" __global__ void divergent_barrier(float* out) {
    if (threadIdx.x < 16) __syncthreads();  // a bug: half the block never arrives
    out[threadIdx.x] = 1.0f;
}

extern "C" __global__ void two_barriers(float* out) {
    if (threadIdx.x % 2) __syncthreads();
    else __syncthreads();  // also a bug: different barriers (a GPU may or may not treat them as one)
    out[threadIdx.x] = 1.0f;
}

extern "C" __global__ void takes_int(int n, float* out) { out[0] = (float)n; }
'''


@pytest.fixture(scope="module", params=["fibers", "os"])
def module(request, tmp_path_factory):
    """The test kernels with CUDA threads as fibers (the default), and as real OS threads (TSan's mode)."""
    path = tmp_path_factory.mktemp("emu") / "emu_test.cu"
    path.write_text(SOURCE)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MINIDL_EMU_THREADS", request.param)
        module = EmuModule(path)
    module.threads = request.param
    return module


def test_grid_and_block_coordinates(module):
    out = np.full(2 * 3 * 2 * 4 * 2, -1, dtype=np.int32)
    module.get_function("coordinates")((2, 3, 2), (4, 2), (out,))
    per_block = np.arange(8)
    expected = np.concatenate([b * 1000 + per_block for b in range(12)])
    np.testing.assert_array_equal(out, expected)


def test_static_shared_memory_and_syncthreads(module):
    x = np.arange(128, dtype=np.float32)
    out = np.zeros_like(x)
    module.get_function("reverse_block")((2,), (64,), (x, out))
    np.testing.assert_array_equal(out, np.concatenate([x[:64][::-1], x[64:][::-1]]))


def test_dynamic_shared_memory(module):
    x = np.arange(40, dtype=np.float32)
    out = np.zeros_like(x)
    module.get_function("rotate_dynamic")((1,), (40,), (x, out), shared_mem=40 * 4)
    np.testing.assert_array_equal(out, np.roll(x, -1))


def test_unwritten_dynamic_shared_memory_reads_as_nan(module):
    out = np.zeros(8, dtype=np.float32)
    module.get_function("read_unwritten_shared")((1,), (8,), (out,), shared_mem=8 * 4)
    assert np.isnan(out).all()  # a GPU would give garbage; here the test that reads it fails


def test_atomics(module):
    counter, total = np.zeros(1, np.int32), np.zeros(1, np.float32)
    module.get_function("count")((3,), (96,), (counter, total))
    assert counter[0] == 288 and total[0] == 144.0


def test_warp_shuffles(module):
    x = np.arange(64, dtype=np.float32)
    out = np.zeros(128, dtype=np.float32)
    module.get_function("warp_sums")((1,), (64,), (x, out))
    np.testing.assert_array_equal(out[:64], np.repeat([x[:32].sum(), x[32:].sum()], 32))
    down = np.concatenate([x[1:33], x[33:], [x[63]]])
    down[31] = x[31]  # lane 31 of warp 0 has no lane 32 to read from
    np.testing.assert_array_equal(out[64:], down)


def test_warp_votes_and_shuffle_widths(module):
    x = np.zeros(64, np.int32)
    x[3] = 1  # warp 0: one lane votes yes
    x[32:] = 1  # warp 1: all lanes do
    out = np.zeros((64, 6), np.uint32)
    module.get_function("warp_votes")((1,), (64,), (x, out))
    lane = np.arange(64) % 32
    np.testing.assert_array_equal(out[:32, 0], 1 << 3)
    np.testing.assert_array_equal(out[32:, 0], 0xFFFFFFFF)
    np.testing.assert_array_equal(out[:, 1], 1)
    np.testing.assert_array_equal(out[:, 2], [0] * 32 + [1] * 32)
    np.testing.assert_array_equal(out[:, 3], np.where(lane >= 3, lane - 3, lane))
    np.testing.assert_array_equal(out[:, 4], lane // 8 * 8 + 5)
    # xor 16 with width 16: a lane may read an earlier group (16..31 read 0..15), not a later one (0..15 keep theirs)
    np.testing.assert_array_equal(out[:, 5], np.where(lane < 16, lane, lane - 16))


def test_a_shuffle_some_lanes_skip_is_a_deadlock(module, monkeypatch):
    if module.threads == "os":  # real threads can only wait, and give up after MINIDL_EMU_TIMEOUT seconds
        monkeypatch.setenv("MINIDL_EMU_TIMEOUT", "0.5")
        with pytest.raises(EmuError, match=r"deadlock: 16 of 32 threads of block \(0, 0, 0\) waited at .* for 0.5 s"):
            module.get_function("half_warp_shuffle")((1,), (32,), (np.zeros(32, np.float32),))
        return
    with pytest.raises(EmuError, match=r"deadlock: thread 0 of block \(0, 0, 0\) waits at a warp shuffle \(line \d+\) "
                                       r"that thread 16 of its warp never reaches \(it is at the kernel's return"):
        module.get_function("half_warp_shuffle")((1,), (32,), (np.zeros(32, np.float32),))


def test_shuffles_need_full_warps(module):
    with pytest.raises(EmuError, match="full warps"):
        module.get_function("warp_sums")((1,), (40,), (np.zeros(40, np.float32), np.zeros(80, np.float32)))


def test_divergent_syncthreads_raises(module):
    with pytest.raises(EmuError, match=r"divergent __syncthreads in block \(0, 0, 0\).*line \d+.*kernel's return"):
        module.get_function("divergent_barrier")((1,), (32,), (np.zeros(32, np.float32),))
    with pytest.raises(EmuError, match="divergent __syncthreads"):
        module.get_function("two_barriers")((1,), (32,), (np.zeros(32, np.float32),))
    out = np.zeros(1, np.float32)  # and the emulator still works afterwards
    module.get_function("takes_int")((1,), (1,), (np.int32(7), out))
    assert out[0] == 7


def test_arguments_are_checked(module):
    out = np.zeros(1, np.float32)
    kernel = module.get_function("takes_int")
    with pytest.raises(EmuError, match="argument 0 must be a 4-byte value, got 8"):
        kernel((1,), (1,), (np.int64(7), out))
    with pytest.raises(TypeError, match="np.int32"):
        kernel((1,), (1,), (7, out))
    with pytest.raises(EmuError, match="takes 2 arguments, got 1"):
        kernel((1,), (1,), (out,))
    with pytest.raises(ValueError, match="C-contiguous"):
        kernel((1,), (1,), (np.int32(1), np.zeros((4, 4), np.float32).T))
    with pytest.raises(EmuError, match="takes_int: block.x = 2048 is more than CUDA's limit of 1024 threads"):
        kernel((1,), (2048,), (np.int32(1), out))
    with pytest.raises(AttributeError, match="no kernel 'missing'"):
        module.get_function("missing")


def test_compiled_once_and_cached(module, tmp_path):
    from minidl.backend import emu
    library = emu.compile_module(module.path)
    assert library.exists() and emu.compile_module(module.path) == library  # same source, same file
    assert library.parent == emu.cache_dir()


RACY = r'''
// Two versions of "reverse each block of 32": the second forgets the barrier.
extern "C" __global__ void reverse_synced(const float* x, float* out) {
    __shared__ float tile[32];
    tile[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    out[threadIdx.x] = tile[31 - threadIdx.x];
}

extern "C" __global__ void reverse_racy(const float* x, float* out) {
    __shared__ float tile[32];
    tile[threadIdx.x] = x[threadIdx.x];
    out[threadIdx.x] = tile[31 - threadIdx.x];  // may read before thread 31 - i has written
}

extern "C" __global__ void reverse_in_place_racy(const float* x, float* out) {
    __shared__ float tile[32];
    tile[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    tile[threadIdx.x] = tile[31 - threadIdx.x];  // may read after thread 31 - i has overwritten it
    out[threadIdx.x] = tile[threadIdx.x];
}
'''

RUN_KERNEL = r'''
import sys, numpy as np
from minidl.backend.emu import EmuModule
kernel = EmuModule(sys.argv[1]).get_function(sys.argv[2])
x = np.arange(32, dtype=np.float32)
out = np.zeros_like(x)
kernel((1,), (32,), (x, out))
print("ran", sys.argv[2])
'''


def tsan_runtime():
    try:
        path = subprocess.run(["g++", "-print-file-name=libtsan.so"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
    return path if os.path.isabs(path) and os.path.exists(path) else None


@pytest.mark.skipif(tsan_runtime() is None, reason="g++ has no ThreadSanitizer runtime (libtsan) here")
def test_thread_sanitizer_finds_a_missing_syncthreads(tmp_path):
    """MINIDL_EMU_SANITIZE=thread: a kernel without its barrier is reported as a data race; with it, none."""
    source = tmp_path / "racy.cu"
    source.write_text(RACY)
    env = dict(os.environ, LD_PRELOAD=tsan_runtime(), MINIDL_EMU_SANITIZE="thread", MINIDL_CACHE=str(tmp_path),
               TSAN_OPTIONS="exitcode=0")  # report, and let the test read the report

    def run(kernel):
        return subprocess.run([sys.executable, "-c", RUN_KERNEL, str(source), kernel], capture_output=True,
                              text=True, env=env, timeout=300)

    synced = run("reverse_synced")
    assert "ran reverse_synced" in synced.stdout, synced.stderr[-3000:]
    assert "ThreadSanitizer" not in synced.stderr, synced.stderr[-3000:]
    racy = run("reverse_racy")
    assert "ran reverse_racy" in racy.stdout, racy.stderr[-3000:]
    assert "WARNING: ThreadSanitizer: data race" in racy.stderr
    assert "racy.cu:13" in racy.stderr or "racy.cu:14" in racy.stderr  # it points at the kernel's lines
    racy = run("reverse_in_place_racy")  # a race after a barrier: TSan must see through the barrier's wait
    assert "ran reverse_in_place_racy" in racy.stdout, racy.stderr[-3000:]
    assert "WARNING: ThreadSanitizer: data race" in racy.stderr and "racy.cu:20" in racy.stderr, racy.stderr[-3000:]


def test_without_gxx_the_error_says_so(tmp_path, monkeypatch):
    from minidl.backend import emu
    monkeypatch.setenv("PATH", str(tmp_path))  # no g++ on this PATH
    monkeypatch.setenv("MINIDL_CACHE", str(tmp_path))  # and nothing cached
    source = tmp_path / "k.cu"
    source.write_text('extern "C" __global__ void k(float* x) { x[0] = 1.0f; }\n')
    with pytest.raises(RuntimeError, match="apt install g\\+\\+"):
        emu.compile_module(source)
