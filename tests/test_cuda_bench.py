"""benchmarks/bench_gpu.py: without a GPU it says so; its measuring code runs on "emu" with tiny sizes.

The GPU timer (CUDA events) is replaced by a wall clock, and cupy.random / cupy.matmul by
numpy, so the benchmark's own code (shapes, the kernels it calls, the tables' numbers)
is exercised on every machine, not only on the rare one with a GPU.
"""
import time
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import bench_gpu
from minidl.backend import get_backend
from minidl.backend.cuda import gpu_count

pytestmark = pytest.mark.timeout(120, method="thread")


class WallClockEvent:
    def record(self):
        self.t = time.perf_counter()

    def synchronize(self):
        pass


rng = np.random.default_rng(0)
numpy_as_cupy = SimpleNamespace(
    random=SimpleNamespace(standard_normal=lambda shape, dtype: rng.standard_normal(shape).astype(dtype)),
    matmul=np.matmul,
    cuda=SimpleNamespace(Event=WallClockEvent, get_elapsed_time=lambda a, b: (b.t - a.t) * 1e3,
                         Device=lambda: SimpleNamespace(synchronize=lambda: None)))


@pytest.mark.skipif(gpu_count() > 0, reason="a GPU is visible: the benchmark would run for real")
def test_no_gpu_skips_with_a_clear_line(capsys):
    assert bench_gpu.main([]) == 0
    assert "no GPU: skipped" in capsys.readouterr().out


def test_the_measurements_run_on_emu(capsys):
    be = get_backend("emu")
    (row,) = bench_gpu.bench_matmul(numpy_as_cupy, be, None, [33], repeat=1)
    assert row["n"] == 33 and all(row[k] > 0 for k in ("naive", "tiled", "cublas"))
    ops = bench_gpu.bench_ops(numpy_as_cupy, be, None, 1, batch=1, channels=2, side=5, rows=3, cols=7)
    assert [r["op"].split()[0] for r in ops] == ["conv2d", "softmax", "row"]
    assert ops[0]["minidl_gflops"] > 0
    step = bench_gpu.bench_train_step(numpy_as_cupy, None, 1, device="emu", batch=2, side=8, channels=(2, 3))
    assert step["minidl_ms"] > 0
    bench_gpu.print_tables({"device": "emu", "matmul": [row], "ops": ops, "train_step": step}, with_torch=False)
    out = capsys.readouterr().out
    assert "tiled/cuBLAS" in out and "training step" in out
