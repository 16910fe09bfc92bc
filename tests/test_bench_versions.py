"""The benchmarks of the kernel chapters: `bench_matmul --versions` and `bench_gpu --versions`.

Tiny sizes; nothing here asserts a speed. Without a GPU the CUDA rows say they were not run;
their measuring code still runs here, on "emu", through a numpy stand-in for CuPy (as in
test_cuda_bench.py), so a version that computes the wrong thing is seen to be marked and not timed.
"""
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import bench_gpu, bench_matmul
from minidl.backend import get_backend
from minidl.backend.cuda import gpu_count

pytestmark = pytest.mark.timeout(180, method="thread")

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class WallClockEvent:
    def record(self):
        self.t = time.perf_counter()

    def synchronize(self):
        pass


numpy_as_cupy = SimpleNamespace(
    matmul=np.matmul, asarray=np.asarray, empty=np.empty, empty_like=np.empty_like, copyto=np.copyto,
    cuda=SimpleNamespace(Event=WallClockEvent, get_elapsed_time=lambda a, b: (b.t - a.t) * 1e3,
                         Device=lambda: SimpleNamespace(synchronize=lambda: None)))


def emu_gpu():
    """gpu_context()'s namespace, for the emulator: the CUDA rows run their real launches on the CPU."""
    return SimpleNamespace(cupy=numpy_as_cupy, kernels=get_backend("emu").kernels, name="emu (numpy as CuPy)",
                           torch=None, sm_count=1)


@pytest.mark.skipif(gpu_count() > 0, reason="a GPU is visible: the CUDA rows would run for real")
def test_versions_command_line_without_a_gpu():
    """`--versions --n 16`: the references are measured, every CUDA row says it was not run, --json agrees."""
    cmd = [sys.executable, "-m", "benchmarks.bench_matmul", "--versions", "--n", "16", "--no-torch"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("CPU ") and "numpy" in line and "n = 16" in line for line in lines)
    assert any(line.startswith("GPU: not run") for line in lines)
    for v in bench_matmul.CUDA_VERSIONS:
        assert any(line.startswith(v.name) and "not run (no GPU)" in line and v.kernel in line for line in lines)
    data = json.loads(subprocess.run(cmd + ["--json"], capture_output=True, text=True, cwd=ROOT, timeout=120).stdout)
    assert data["gpu"] is None and data["n"] == data["gpu_n"] == 16
    assert [r["name"] for r in data["gpu_rows"]] == [v.name for v in bench_matmul.CUDA_VERSIONS]
    assert all(r["gflops"] is None for r in data["gpu_rows"]) and data["cpu"]["numpy"] > 0


def test_versions_are_checked_then_timed(monkeypatch, tmp_path):
    """CPU rows from minidl._C.matmul_step where it exists (faked here, one of them wrong) and CUDA rows
    on the emulator (one launched wrong): the wrong ones are FAILED and not timed."""
    cpu = [("v0", "right", np.matmul), ("v1", "off by one", lambda a, b: a @ b + 1)]
    monkeypatch.setattr(bench_matmul, "cpu_versions", lambda: cpu)
    half_threads = bench_matmul.CudaVersion("v8", "matmul_tiled", "launched with half its threads", (128,), (64, 64))
    monkeypatch.setattr(bench_matmul, "CUDA_VERSIONS", bench_matmul.CUDA_VERSIONS + (half_threads,))
    data = bench_matmul.measure_versions(24, 1, 40, gpu=emu_gpu(), repeat=1)

    assert [r["status"] for r in data["cpu_rows"]][0] == "ok"
    assert data["cpu_rows"][1]["status"].startswith("FAILED") and data["cpu_rows"][1]["gflops"] is None
    assert data["cpu_rows"][0]["of"]["numpy"] > 0 and data["cpu_rows"][0]["of"]["torch"] is None
    rows = {r["name"]: r for r in data["gpu_rows"]}
    assert [r["status"] for name, r in rows.items() if name != "v8"] == ["ok"] * 7
    assert all(rows[f"v{i}"]["gflops"] > 0 and rows[f"v{i}"]["of_peak"] > 0 for i in range(1, 8))
    assert rows["v8"]["status"].startswith("FAILED") and rows["v8"]["gflops"] is None
    assert data["gpu"]["peak"] > 0 and data["gpu"]["cuBLAS"] > 0 and data["gpu_n"] == 40

    text = "\n".join(bench_matmul.versions_table(data))
    assert "v8       FAILED" in text and "off by one" in text
    md = "\n".join(bench_matmul.versions_section(data, "`bench_matmul --versions`", png="versions.png"))
    assert "## matmul, version by version" in md and "| v7 | " in md and "](versions.png)" in md
    bench_matmul.plot_versions(data, tmp_path / "versions.png")
    assert (tmp_path / "versions.png").read_bytes().startswith(PNG_MAGIC)


def test_reduce_versions_on_emu():
    data = {"device": "emu", **bench_gpu.bench_reduce_versions(numpy_as_cupy, get_backend("emu"), 5, 300, repeat=1)}
    assert [r["name"] for r in data["rows"]] == ["v1", "v2", "v3"]
    assert all(r["status"] == "ok" and r["gbs"] > 0 for r in data["rows"]) and data["copy_gbs"] > 0
    md = "\n".join(bench_gpu.reduce_versions_section(data, "`bench_gpu --versions`"))
    assert "| v3 | " in md and "reduce_rows:" in md
    skipped = "\n".join(bench_gpu.reduce_versions_section({"device": None, "skipped": "no GPU"}, "`x`"))
    assert "Not run: no GPU visible" in skipped
