"""python -m benchmarks: the figures and RESULTS.md are made from the numbers the benchmarks return.

Tiny sizes and few steps, written into tmp_path; nothing here asserts a speed (the
numbers of a 32 x 32 matmul on a shared machine mean nothing), only that the real
measuring code returns data of the shape the report reads, and the report is written.
"""
import json

import pytest

from benchmarks import __main__ as report
from benchmarks import bench_gpu, bench_matmul, bench_train_step
from minidl.backend.cuda import gpu_count

pytestmark = pytest.mark.timeout(120, method="thread")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def matmul():
    """bench_matmul's real measurement (each library in its own process) at n = 32, 64, 1 repeat;
    torch is left out to keep it fast (its process would spend seconds importing torch)."""
    return {threads: bench_matmul.measure([32, 64], threads=threads, repeat=1, libraries=("minidl", "numpy"))
            for threads in (1, 2)}


@pytest.fixture(scope="module")
def train_step():
    """bench_train_step.measure()'s shape: minidl's side profiled for real on the smallest model;
    the step times (minidl's own process, torch's) made up, as they are not what is tested."""
    split = bench_train_step.profile_steps(bench_train_step.build_minidl("collab64"), warmup=1, steps=2, top=3)
    rows = [{"model": "collab64", "label": bench_train_step.LABELS["collab64"], "minidl_ms": split["step_ms"],
             "torch_ms": 2.0 * split["step_ms"], "kernel_ms": split["kernel_ms"],
             "overhead_ms": split["overhead_ms"], "calls": split["calls"], "top": split["top"]},
            {"model": "cnn", "label": bench_train_step.LABELS["cnn"], "minidl_ms": 30.0, "torch_ms": 15.0,
             "kernel_ms": 27.0, "overhead_ms": 3.5, "calls": 113, "top": [("conv2d [C++]", 9.0, 3)]}]
    return {"threads": 2, "steps": 2, "warmup": 1, "rounds": 1, "models": rows}


def test_matmul_measure_returns_a_row_per_size(matmul):
    for threads, data in matmul.items():
        assert data["threads"] == threads and data["libraries"] == ["minidl", "numpy"]
        assert [r["n"] for r in data["rows"]] == [32, 64]
        assert all(r[lib] > 0 for r in data["rows"] for lib in data["libraries"])


def test_profile_steps_splits_the_step_into_kernels_and_overhead(train_step):
    collab = train_step["models"][0]
    assert collab["kernel_ms"] > 0 and collab["calls"] > 0
    assert collab["overhead_ms"] == pytest.approx(collab["minidl_ms"] - collab["kernel_ms"])
    names = [name for name, _, _ in collab["top"]]
    assert len(names) == 3 and all(name.endswith("]") for name in names)   # "adam_step [C++]"
    times = [ms for _, ms, _ in collab["top"]]
    assert times == sorted(times, reverse=True)


def test_results_md_and_figures_are_written(tmp_path, matmul, train_step):
    sections, verdicts = [], []
    for threads in (1, 2):
        lines, verdict = report.matmul_section(matmul[threads], "`bench_matmul`")
        sections.append(lines)
        verdicts.append(verdict)
    lines, verdict = report.train_step_section(train_step, "`bench_train_step`")
    sections.append(lines)
    verdicts.append(verdict)
    sections.append(report.gpu_section({"device": None, "skipped": "CuPy sees no CUDA device"}, "`bench_gpu`"))
    out = tmp_path / "RESULTS.md"
    text = report.write_results(str(out), ["- CPU: test"], sections, verdicts, 1.0, matmul, train_step)

    for name in (report.MATMUL_PNG, report.TRAIN_STEP_PNG):
        png = (tmp_path / name).read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 5000
        assert f"]({name})" in text                                   # linked from RESULTS.md
    assert out.read_text() == text
    assert "## matmul, 1 thread(s)" in text and "## matmul, 2 thread(s)" in text
    assert "| 32 |" in text and "| 64 |" in text
    assert "no size >= 256" in text                                   # tiny sizes: no verdict is claimed
    assert "## Training step" in text and "Not met** on 1 of 2: small CNN" in text
    assert "adam_step [C++]" in text or "embedding_backward [C++]" in text
    assert "**Skipped: no GPU visible**" in text


@pytest.mark.skipif(gpu_count() > 0, reason="a GPU is visible: the benchmark would run for real")
def test_without_a_gpu_the_section_says_it_was_skipped(capsys):
    assert bench_gpu.main(["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["device"] is None
    text = "\n".join(report.gpu_section(data, "`bench_gpu --json`"))
    assert text.startswith("## GPU\n") and "Skipped: no GPU visible" in text and data["skipped"] in text


def test_gpu_section_names_the_device():
    data = {"device": "NVIDIA Test GPU",
            "matmul": [{"n": 1024, "naive": 500.0, "tiled": 4000.0, "cublas": 20000.0, "torch": 21000.0}],
            "ops": [{"op": "softmax 4096x1000", "minidl_ms": 0.1}],                 # torch absent: n/a
            "train_step": {"minidl_ms": 5.0, "torch_ms": 2.0}}
    text = "\n".join(report.gpu_section(data, "`bench_gpu`"))
    assert "## GPU: NVIDIA Test GPU" in text
    assert "| 1024 | 500 | 4000 | 20000 | 21000 | 0.20 |" in text
    assert "| softmax 4096x1000 | 0.100 | n/a | n/a | n/a |" in text
    assert "minidl 5.00 ms, torch 2.00 ms" in text
