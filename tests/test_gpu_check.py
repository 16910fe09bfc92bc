"""benchmarks/gpu_check.py (make gpu-check): without a GPU it stops at once with the reason; its parts."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import gpu_check
from minidl.backend.cuda import cuda_unavailable_reason, gpu_count

ROOT = Path(__file__).resolve().parents[1]
no_gpu_here = pytest.mark.skipif(gpu_count() > 0, reason="a GPU is visible: gpu-check would run for real")


def run_gpu_check(tmp_path, path_dirs=(), *args):
    env = {**os.environ, "PATH": os.pathsep.join([*map(str, path_dirs), os.environ.get("PATH", "")])}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--report", str(tmp_path / "report.md"),
                          *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    return out, time.perf_counter() - start


@no_gpu_here
def test_without_a_gpu_it_stops_at_once_with_the_reason(tmp_path):
    out, seconds = run_gpu_check(tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "gpu-check: no GPU: " in out.stderr and cuda_unavailable_reason() in out.stderr
    assert not (tmp_path / "report.md").exists()       # nothing measured, no report
    assert seconds < 60                                 # no install, no tests: it stops at once


@no_gpu_here
def test_a_driver_without_a_working_cuda_device_stops_with_minidls_reason(tmp_path):
    """nvidia-smi answers (a driver is there) but CuPy cannot use it: the reason, not a test run."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho '550.54.15, NVIDIA Imaginary 80GB'\n")
    (fake / "nvidia-smi").chmod(0o755)
    out, seconds = run_gpu_check(tmp_path, [fake], "--no-install")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "NVIDIA Imaginary 80GB, driver 550.54.15: the cuda12 extra" in out.stdout
    assert "gpu-check: the cuda device does not work: " in out.stderr and cuda_unavailable_reason() in out.stderr
    assert not (tmp_path / "report.md").exists() and seconds < 60


@pytest.mark.parametrize("driver, extra", [("535.104.05", "cuda12"), ("525.60.13", "cuda12"), ("579.1", "cuda12"),
                                           ("580.65.06", "cuda13"), ("590.1", "cuda13"), ("470.82.01", None),
                                           ("garbage", None)])
def test_the_extra_follows_the_driver(driver, extra):
    assert gpu_check.extra_for(driver) == extra


def test_the_steps_need_the_gpu_and_fit_ten_minutes():
    steps = gpu_check.steps("python", "/opt/cuda/bin/compute-sanitizer")
    assert gpu_check.INSTALL_TIMEOUT + 30 + sum(s.timeout for s in steps) < 600    # + nvidia-smi, the probes
    tests = steps[0]
    assert tests.env["MINIDL_REQUIRE_GPU"] == "1" and "cuda" in tests.command
    memcheck, racecheck = steps[1], steps[2]
    assert memcheck.command[:3] == ["/opt/cuda/bin/compute-sanitizer", "--tool", "memcheck"]
    assert racecheck.command[2] == "racecheck" and racecheck.env["MINIDL_CUPY_POOL"] == "0"
    assert [s.command[1] for s in steps[-3:]] == ["examples/pets.py", "examples/tabular.py", "examples/collab.py"]
    assert all(s.command[s.command.index("--device") + 1] == "cuda" for s in steps[-3:])


def test_no_sanitizer_is_a_failed_step_with_the_fix():
    step = gpu_check.run_step(gpu_check.steps("python", None)[1])
    assert step.status == "FAILED" and "compute-sanitizer not found" in step.output


def test_the_report_names_the_machine_and_each_step():
    import datetime
    done = [gpu_check.Step("GPU tests", ["pytest", "-k", "cuda"], 10, {"MINIDL_REQUIRE_GPU": "1"}, "ok", 12.0,
                           "3 passed"),
            gpu_check.Step("bench_gpu", ["python", "-m", "benchmarks.bench_gpu"], 10, {}, "TIMEOUT after 10 s", 10.0,
                           "\n".join(f"line {i}" for i in range(100)))]
    text = gpu_check.report({"GPU": "NVIDIA H100", "driver": "580.65.06"}, done,
                            datetime.datetime(2026, 12, 6, 12, 0))
    assert text.startswith("# make gpu-check: FAILED")
    assert "| GPU | NVIDIA H100 |" in text and "| bench_gpu | TIMEOUT after 10 s | 10 |" in text
    assert "`MINIDL_REQUIRE_GPU=1 pytest -k cuda`" in text
    assert "line 99" in text and "line 10\n" not in text     # the end of a long output


def test_on_a_working_gpu_every_step_runs_and_the_report_is_written(tmp_path, monkeypatch, capsys):
    """The whole flow with the machine faked: driver found, CuPy matching, the cuda device working."""
    monkeypatch.setattr(gpu_check, "driver_version", lambda: ("580.65.06", "NVIDIA Fake H100"))
    monkeypatch.setattr(gpu_check, "installed_cupy", lambda: "cuda13")
    monkeypatch.setattr(gpu_check, "unavailable_reason", lambda: (None, "driver runs CUDA 13.0; 1 GPU(s)"))
    monkeypatch.setattr(gpu_check, "sanitizer", lambda: "/usr/local/cuda/bin/compute-sanitizer")
    ran = []

    def fake_run(step):
        ran.append(step.name)
        step.status, step.seconds, step.output = "ok", 1.0, f"{step.name} passed"
        return step

    monkeypatch.setattr(gpu_check, "run_step", fake_run)
    assert gpu_check.main(["--report", str(tmp_path / "gpu_report.md")]) == 0
    text = (tmp_path / "gpu_report.md").read_text()
    assert text.startswith("# make gpu-check: all passed")
    assert "| GPU | NVIDIA Fake H100 |" in text and "| CUDA | driver runs CUDA 13.0; 1 GPU(s) |" in text
    assert len(ran) == 7 and all(f"## {name}: ok" in text for name in ran)
    assert "all passed" in capsys.readouterr().out
