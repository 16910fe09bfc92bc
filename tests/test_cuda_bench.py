"""benchmarks/bench_gpu.py: without a GPU it says so; its measuring code runs on "emu" with tiny sizes.

The GPU timer (CUDA events) is replaced by a wall clock, and cupy.asarray / cupy.matmul by
numpy, so the benchmark's own code (shapes, the checks against the reference, the kernels it
calls, the tables' numbers) is exercised on every machine, not only on the rare one with a GPU.
"""
import time
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import bench_gpu
from minidl.backend import get_backend
from minidl.backend.cuda import cuda_unavailable_reason, gpu_count

pytestmark = pytest.mark.timeout(300, method="thread")


class WallClockEvent:
    def record(self):
        self.t = time.perf_counter()

    def synchronize(self):
        pass


numpy_as_cupy = SimpleNamespace(
    asarray=np.asarray, asnumpy=np.asarray, matmul=np.matmul,
    cuda=SimpleNamespace(Event=WallClockEvent, get_elapsed_time=lambda a, b: (b.t - a.t) * 1e3,
                         Device=lambda: SimpleNamespace(synchronize=lambda: None)))


@pytest.mark.skipif(gpu_count() > 0, reason="a GPU is visible: the benchmark would run for real")
def test_no_gpu_skips_with_the_reason(capsys):
    assert bench_gpu.main([]) == 0
    assert bench_gpu.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "no GPU: skipped" in out and cuda_unavailable_reason() in out


def test_every_kernel_is_checked_then_timed_on_emu(capsys):
    be = get_backend("emu")
    rows = bench_gpu.bench_matmul(numpy_as_cupy, be, None, [(33, 17, 65), (64, 64, 64)], repeat=1)
    assert [r["shape"] for r in rows] == [[33, 17, 65], [64, 64, 64]]
    assert all(r["status"] == "ok" and r["naive"] > 0 and r["tiled"] > 0 and r["cublas"] > 0 for r in rows)
    ops = bench_gpu.bench_ops(numpy_as_cupy, be, None, 1, batch=2, channels=3, out_channels=5, side=7, rows=3,
                              cols=67)
    assert [(r["op"], r["direction"]) for r in ops] == [
        ("conv2d 3x3", "forward"), ("conv2d 3x3", "backward (input)"), ("conv2d 3x3", "backward (weight)"),
        ("softmax", "forward"), ("row sums", "forward"), ("relu", "forward"), ("batch norm", "forward"),
        ("batch norm", "backward")]
    assert all(r["status"] == "ok" for r in ops), ops
    assert all(r["minidl_gflops"] > 0 for r in ops if r["op"] == "conv2d 3x3")
    assert all(r["minidl_gbs"] > 0 for r in ops if r["op"] != "conv2d 3x3")   # memory-bound: GB/s
    step = bench_gpu.bench_train_step(numpy_as_cupy, None, 1, device="emu", batch=2, side=8, channels=(2, 3))
    assert step["minidl_ms"] > 0 and step["model"] == "small_cnn"
    results = {"device": "emu", "matmul": rows, "ops": ops, "train_steps": [step]}
    results["failed"] = bench_gpu.failures(results)
    assert results["failed"] == []
    bench_gpu.print_tables(results, with_torch=False)
    out = capsys.readouterr().out
    assert "tiled/cuBLAS" in out and "33x17x65" in out and "batch norm, backward" in out
    assert "training step (small_cnn, batch 2, 8x8)" in out


def test_a_wrong_kernel_is_reported_not_timed():
    wrong = SimpleNamespace(kernels=SimpleNamespace(matmul=lambda a, b, version: np.matmul(a, b) + (version == "tiled")))
    (row,) = bench_gpu.bench_matmul(numpy_as_cupy, wrong, None, [(8, 8, 8)], repeat=1)
    assert row["status"].startswith("tiled: FAILED: max error") and row["tiled"] is None and row["naive"] > 0
    assert bench_gpu.failures({"matmul": [row], "ops": []}) == [f"matmul 8x8x8: {row['status']}"]
    assert bench_gpu.check(np.ones(3), np.ones(3)) == "ok"
    assert bench_gpu.check(np.ones(2), np.ones(3)).startswith("FAILED: shape")
    assert bench_gpu.check(np.array([np.nan]), np.ones(1)) == "FAILED: not finite"


def test_lite0_has_a_torch_twin_for_its_training_step():
    torch = pytest.importorskip("torch")
    net, twin = bench_gpu.train_models("lite0", torch)
    count = lambda params: sum(int(np.prod(p.shape)) for p in params)   # noqa: E731
    assert count(net.parameters()) == count(twin.parameters())
    with pytest.raises(ValueError, match="unknown model"):
        bench_gpu.train_models("vgg")
