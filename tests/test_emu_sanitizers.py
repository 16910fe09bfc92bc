"""The emulator's strict side: bugs a GPU lets through silently, caught on the CPU.

* shared memory (static and dynamic) starts every block as 0xFF bytes, NaN as a float, so a
  kernel that reads what no thread wrote (a missing __syncthreads, say) gets NaN, not zeros;
* a launch past CUDA's limits (grid, block, shared memory) raises, naming the kernel and the limit;
* blocks run in a seeded shuffled order, or concurrently, so a kernel that depends on the order
  of its blocks gives a different answer than in order;
* MINIDL_EMU_SANITIZE=address (AddressSanitizer) stops at an out-of-bounds write, with its line;
* MINIDL_EMU_SANITIZE=thread (ThreadSanitizer, with real threads) finds no race in a sample of
  the real kernels.
The toy kernels are in tests/emu_toys. The sanitizers run in a subprocess with their runtime
preloaded, and are skipped where g++ has none.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minidl.backend import emu, get_backend, numpy_ref
from minidl.backend.emu import EmuError, load_file

# A hung kernel fails the run instead of stalling CI (method="thread": a kernel runs in C with the GIL released).
pytestmark = pytest.mark.timeout(300, method="thread")

TOYS = Path(__file__).parent / "emu_toys"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def block_order(monkeypatch):
    """Run what follows with MINIDL_EMU_BLOCK_ORDER (and MINIDL_EMU_SEED) set: read at each launch."""
    def choose(order, seed=0):
        monkeypatch.setenv("MINIDL_EMU_BLOCK_ORDER", order)
        monkeypatch.setenv("MINIDL_EMU_SEED", str(seed))
    return choose


# ---------------------------------------------------------------- shared memory starts as poison

def test_unwritten_static_shared_memory_reads_as_nan():
    kernel = load_file(TOYS / "shared_poison.cu").get_function("read_half_written")
    out = np.zeros(128, np.float32)
    kernel((2,), (64,), (out,))
    for block in out.reshape(2, 64):
        np.testing.assert_array_equal(block[:32], 1.0)
        assert np.isnan(block[32:]).all()  # a GPU would give garbage; zeros would hide the bug


def test_each_block_starts_with_fresh_poison(block_order):
    block_order("ordered")  # block 0 first, so a leftover tile would show in blocks 1 and 2
    out = np.zeros(3 * 32, np.int32)
    load_file(TOYS / "shared_poison.cu").get_function("read_other_blocks_tile")((3,), (32,), (out,))
    np.testing.assert_array_equal(out.reshape(3, 32), [[7] * 32, [-1] * 32, [-1] * 32])  # 0xFFFFFFFF is -1


def test_a_missing_syncthreads_reads_poison():
    """Between barriers the fibers of a block run one after another: thread i reads tile[31 - i]
    before thread 31 - i has run, for the first half, every time (a GPU would get it right by luck)."""
    x = np.arange(32, dtype=np.float32)
    out = np.zeros_like(x)
    load_file(TOYS / "shared_poison.cu").get_function("reverse_without_barrier")((1,), (32,), (x, out))
    assert np.isnan(out[:16]).all()
    np.testing.assert_array_equal(out[16:], x[15::-1])


def test_shared_memory_limit():
    module = load_file(TOYS / "shared_poison.cu")
    with pytest.raises(EmuError, match=r"too_much_shared: 65536 bytes of __shared__ arrays .* limit of 49152 bytes"):
        module.get_function("too_much_shared")((1,), (32,), (np.zeros(32, np.float32),))
    kernel = module.get_function("read_half_written")
    out = np.zeros(64, np.float32)
    with pytest.raises(EmuError, match=r"read_half_written: shared_mem = 49153 bytes .* limit of 49152 .* opt in"):
        kernel((1,), (64,), (out,), shared_mem=48 * 1024 + 1)
    kernel.max_dynamic_shared_size_bytes = 96 * 1024  # opting in, as with cupy.RawKernel
    kernel((1,), (64,), (out,), shared_mem=64 * 1024)
    with pytest.raises(EmuError, match="limit of 98304"):
        kernel((1,), (64,), (out,), shared_mem=96 * 1024 + 256)


# ---------------------------------------------------------------- CUDA's launch limits

@pytest.mark.parametrize("grid, block, message", [
    ((2**31,), (32,), r"grid.x = 2147483648 is more than CUDA's limit of 2147483647 blocks"),
    ((1, 65536), (32,), r"grid.y = 65536 is more than CUDA's limit of 65535 blocks"),
    ((1, 1, 70000), (32,), r"grid.z = 70000 is more than CUDA's limit of 65535 blocks"),
    ((1,), (1025,), r"block.x = 1025 is more than CUDA's limit of 1024 threads"),
    ((1,), (1, 1, 65), r"block.z = 65 is more than CUDA's limit of 64 threads"),
    ((1,), (32, 33), r"a block has 1 to 1024 threads; \(32, 33, 1\) has 1056"),
])
def test_launch_limits_raise(grid, block, message):
    kernel = load_file(TOYS / "out_of_bounds.cu").get_function("fill")
    x = np.zeros(4, np.float32)
    with pytest.raises(EmuError, match="fill: " + message):
        kernel(grid, block, (x, np.int32(4)))
    assert not x.any()  # refused before anything ran


# ---------------------------------------------------------------- the order of the blocks

def test_shuffled_blocks_expose_a_race_between_blocks(block_order):
    kernel = load_file(TOYS / "block_races.cu").get_function("last_block_wins")

    def winner():
        out = np.zeros(1, np.int32)
        kernel((16,), (32,), (out,))
        return int(out[0])

    block_order("ordered")
    assert winner() == 15
    winners = []
    for seed in range(4):
        block_order("shuffled", seed)
        winners.append(winner())
        assert winner() == winners[-1]  # the same seed, the same order: a failure can be replayed
    assert set(winners) != {15}


def test_shuffled_blocks_break_a_kernel_that_assumes_their_order(block_order):
    kernel = load_file(TOYS / "block_races.cu").get_function("carry_from_previous_block")
    x = np.arange(1, 33, dtype=np.float32)

    def run():
        out = np.zeros_like(x)
        kernel((32,), (32,), (x, out))
        return out

    block_order("ordered")
    np.testing.assert_array_equal(run(), np.cumsum(x))  # passes by luck when blocks run in order
    block_order("shuffled")
    assert not np.array_equal(run(), np.cumsum(x))


def test_concurrent_blocks_give_the_same_answers(block_order, monkeypatch):
    """Blocks on two OS threads at once: atomics stay exact, and real kernels give the same bits."""
    monkeypatch.setenv("MINIDL_EMU_WORKERS", "2")
    block_order("concurrent")
    x = np.arange(64 * 64, dtype=np.float32) % 7  # small integers: exact whatever the order of the additions
    total = np.zeros(1, np.float32)
    load_file(TOYS / "block_races.cu").get_function("atomic_sum")((64,), (64,), (x, total))
    assert total[0] == x.sum()

    be = get_backend("emu")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((70, 50), dtype=np.float32), rng.standard_normal((50, 130), dtype=np.float32)
    concurrent = [be.matmul(a, b), be.sum(a, axis=1), be.softmax(b, axis=0)]
    block_order("ordered")
    ordered = [be.matmul(a, b), be.sum(a, axis=1), be.softmax(b, axis=0)]
    for c, o in zip(concurrent, ordered):
        np.testing.assert_array_equal(c, o)  # each output element is computed by one block, in one order


def test_bad_mode_names_are_refused(monkeypatch):
    monkeypatch.setenv("MINIDL_EMU_BLOCK_ORDER", "backwards")
    with pytest.raises(ValueError, match="MINIDL_EMU_BLOCK_ORDER='backwards'"):
        emu.cxx_flags()
    monkeypatch.setenv("MINIDL_EMU_BLOCK_ORDER", "ordered")
    monkeypatch.setenv("MINIDL_EMU_THREADS", "fibers")
    monkeypatch.setenv("MINIDL_EMU_SANITIZE", "thread")
    with pytest.raises(ValueError, match="ThreadSanitizer cannot follow fibers"):
        emu.cxx_flags()


# ---------------------------------------------------------------- the sanitizers, in a subprocess

def runtime(name):
    """The sanitizer runtime g++ links against (libasan.so, libtsan.so), or None."""
    try:
        path = subprocess.run(["g++", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
    return path if os.path.isabs(path) and os.path.exists(path) else None


def run_python(code, args, **env):
    """Run `code` in a fresh Python with the environment changed by `env`; the compiled kernels
    go to the usual cache (one library per mode), so a second run skips g++."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=280, cwd=ROOT)


ASAN_RUN = r'''
import sys, numpy as np
from minidl.backend.emu import EmuError, load_file
module = load_file(sys.argv[1])
x, count, sums = np.zeros(64, np.float32), np.zeros(1, np.int32), np.zeros(2, np.float32)
module.get_function("everything")((2,), (64,), (np.arange(128, dtype=np.float32), sums, count), shared_mem=64 * 4)
assert count[0] == 128 and sums.tolist() == [2016.0, 6112.0], (count, sums)
try:
    module.get_function("divergent")((1,), (32,), (x, np.int32(64)))
except EmuError as e:
    print("refused:", e)
module.get_function(sys.argv[2])((2,), (64,), (x, np.int32(64)))
print("ran", sys.argv[2], flush=True)
'''


@pytest.mark.skipif(runtime("libasan.so") is None or runtime("libstdc++.so") is None,
                    reason="g++ has no AddressSanitizer runtime (libasan) here")
@pytest.mark.parametrize("kernel", ["fill", "fill_one_too_many"])
def test_address_sanitizer_finds_an_out_of_bounds_write(kernel):
    """MINIDL_EMU_SANITIZE=address: the off-by-one write past a numpy array stops the run at its
    line; the correct kernel, and one using shared memory, barriers, shuffles and atomics on
    fibers, run clean."""
    # libstdc++ preloaded too: else ASan finds no __cxa_throw to wrap, and the exception that unwinds
    # the fibers of a failed launch stops the process
    preload = f"{runtime('libasan.so')} {runtime('libstdc++.so')}"
    result = run_python(ASAN_RUN, [str(TOYS / "out_of_bounds.cu"), kernel], LD_PRELOAD=preload,
                        MINIDL_EMU_SANITIZE="address", ASAN_OPTIONS="detect_leaks=0")
    report = result.stdout + result.stderr[-5000:]
    assert "refused: emu: out_of_bounds.cu: divergent __syncthreads" in result.stdout, report
    if kernel == "fill":
        assert result.returncode == 0 and "ran fill" in result.stdout, report
        assert "AddressSanitizer" not in result.stderr, report
    else:
        assert result.returncode != 0 and "ran" not in result.stdout, report
        assert "ERROR: AddressSanitizer: heap-buffer-overflow" in result.stderr, report
        assert "WRITE of size 4" in result.stderr and "out_of_bounds.cu:6" in result.stderr, report


TSAN_RUN = r'''
import sys, numpy as np
from minidl.backend import emu, numpy_ref
from minidl.backend.cuda import CudaKernels
be = CudaKernels("emu", np, emu.load_module, max_blocks=2).namespace()  # loads only the modules it uses
rng = np.random.default_rng(0)
x = rng.standard_normal((3, 300), dtype=np.float32)
a, b = rng.standard_normal((40, 24), dtype=np.float32), rng.standard_normal((24, 70), dtype=np.float32)
image = rng.standard_normal((4, 3, 5, 5), dtype=np.float32)
weight, bias = np.ones(3, np.float32), np.zeros(3, np.float32)
checks = {
    "reduce": lambda: (be.sum(x, axis=1), numpy_ref.sum(x, axis=1)),
    "softmax": lambda: (be.softmax(x, axis=1), numpy_ref.softmax(x, axis=1)),
    "matmul": lambda: (be.matmul(a, b), numpy_ref.matmul(a, b)),
    "batchnorm": lambda: (be.batch_norm(image, weight, bias, 1e-5)[0], numpy_ref.batch_norm(image, weight, bias, 1e-5)[0]),
}
for name in sys.argv[1:]:
    got, want = checks[name]()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    print("ok", name, flush=True)
'''


def run_under_tsan(kernels):
    result = run_python(TSAN_RUN, kernels, LD_PRELOAD=runtime("libtsan.so"), MINIDL_EMU_SANITIZE="thread",
                        TSAN_OPTIONS="exitcode=0")  # report, and let the test read the report
    report = result.stdout + result.stderr[-5000:]
    for name in kernels:
        assert f"ok {name}" in result.stdout, report
    assert "ThreadSanitizer" not in result.stderr, report


@pytest.mark.skipif(runtime("libtsan.so") is None, reason="g++ has no ThreadSanitizer runtime (libtsan) here")
def test_thread_sanitizer_on_real_kernels():
    """The reductions and softmax (shared memory, barriers, warp shuffles) on real threads under TSan: no race."""
    run_under_tsan(["reduce", "softmax"])


@pytest.mark.slow
@pytest.mark.skipif(runtime("libtsan.so") is None, reason="g++ has no ThreadSanitizer runtime (libtsan) here")
def test_thread_sanitizer_on_more_real_kernels():
    """The tiled matmul (two barriers per step of K) and batch norm's partial sums under TSan: no race."""
    run_under_tsan(["matmul", "batchnorm"])
