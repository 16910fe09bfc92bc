"""python -m benchmarks: the figures and RESULTS.md are made from the numbers the benchmarks return.

Tiny sizes and few steps, written into tmp_path; nothing here asserts a speed (the
numbers of a 32 x 32 matmul on a shared machine mean nothing), only that the real
measuring code returns data of the shape the report reads, and the report is written.
"""
import json

import numpy as np
import pytest

import minidl
from benchmarks import __main__ as report
from benchmarks import bench_gpu, bench_matmul, bench_text, bench_train_step
from minidl.backend.cuda import gpu_count
from minidl.text.models import get_language_model

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
    assert "**Not run on a GPU yet.**" in text


@pytest.mark.skipif(gpu_count() > 0, reason="a GPU is visible: the benchmark would run for real")
def test_without_a_gpu_the_section_says_it_was_skipped(capsys):
    assert bench_gpu.main(["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["device"] is None
    text = "\n".join(report.gpu_section(data, "`bench_gpu --json`"))
    assert text.startswith("## GPU\n") and "Not run on a GPU yet" in text and data["skipped"] in text
    assert "make gpu-check" in text


def test_gpu_section_names_the_device():
    data = {"device": "NVIDIA Test GPU",
            "matmul": [{"shape": [1000, 777, 513], "naive": 500.0, "tiled": 4000.0, "cublas": 20000.0,
                        "torch": 21000.0, "status": "ok"},
                       {"shape": [64, 64, 64], "naive": 50.0, "tiled": None, "cublas": 90.0,
                        "status": "tiled: FAILED: max error 1.0e+00 of the largest value"}],
            "ops": [{"op": "softmax", "direction": "forward", "status": "ok", "minidl_ms": 0.1,
                     "minidl_gbs": 320.0}],                                              # torch absent: n/a
            "train_steps": [{"model": "lite0", "batch": 64, "side": 224, "minidl_ms": 5.0, "torch_ms": 2.0}],
            "failed": ["matmul 64x64x64: tiled: FAILED: max error 1.0e+00 of the largest value"]}
    text = "\n".join(report.gpu_section(data, "`bench_gpu`"))
    assert "## GPU: NVIDIA Test GPU" in text and "TF32 off" in text
    assert "| 1000x777x513 | 500 | 4000 | 20000 | 21000 | 0.20 | ok |" in text
    assert "| 64x64x64 | 50 | n/a | 90 | n/a | n/a | tiled: FAILED" in text
    assert "| softmax, forward | 0.100 | n/a | 320 | n/a | n/a | ok |" in text
    assert "| lite0 | 64, 224x224 | 5.00 | 2.00 | 0.40 |" in text
    assert "**FAILED** (not timed): matmul 64x64x64" in text


PROFILE = "wall 812.0 ms; ops 700.1 ms, of which kernels 650.3 ms and Python overhead 49.8 ms; all kernels 760.0 ms"


@pytest.mark.parametrize("ratio, met", [(0.9, True), (1.2, False)])
def test_unet_section_compares_with_torchs_best_layout(ratio, met):
    data = {"threads": 2, "bs": 8, "size": 180, "profile": PROFILE,
            "seconds": {"minidl": ratio, "torch": 1.5, "torch-channels-last": 1.0}}
    lines, verdict = report.unet_section(data, "`bench_unet --json`")
    text = "\n".join(lines)
    assert text.startswith("## U-Net training step\n") and "batch 8, 180 x 240" in text
    assert f"| torch-channels-last | 1.000 | {ratio:.2f} |" in text
    target = "**Target (issue [4/7]): minidl's step <= 1.0x torch's best layout. "
    assert target + ("Met" if met else "Not met") + f"**: minidl / torch's best is {ratio:.2f}." in text
    assert verdict == f"U-Net step: {'met' if met else 'NOT met'} (minidl / torch's best {ratio:.2f})"
    assert f"```\n{PROFILE}\n```" in text


def test_lstm_section_reports_the_range_of_forward_backward_ratios():
    rows = [{"shape": [32, 70, 200, 512, 1], "pass": p, "minidl_ms": 10.0, "torch_ms": 10.0 * r,
             "torch_over_minidl": r} for p, r in [("fwd", 3.0), ("fwd+bwd", 0.8), ("fwd", 0.1), ("fwd+bwd", 1.25)]]
    lines, verdict = report.lstm_section({"threads": 2, "repeat": 3, "rows": rows}, "`bench_lstm --json`")
    text = "\n".join(lines)
    assert text.startswith("## LSTM layer\n") and "| 32 70 200 512 1 | fwd+bwd | 10.0 | 8.0 | 0.80 |" in text
    assert ("**Target (issue [5/7]): forward + backward time vs torch.nn.LSTM, reported (no fixed bar)**: "
            "torch / minidl from 0.80 to 1.25.") in text                 # fwd rows left out of the range
    assert verdict == "LSTM fwd+bwd: torch/minidl 0.80 to 1.25 (no bar)"


@pytest.mark.parametrize("ratio, met, aim",
                         [(0.9, "Met", "met"), (1.2, "Met", "not met"), (1.6, "Not met", "not met")])
def test_awd_lstm_section_gives_tokens_per_second_and_the_verdict(ratio, met, aim):
    data = {"threads": 2, **bench_text.SIZES, "steps": 5, "warmup": 2, "rounds": 2, "profile": PROFILE,
            "seconds": {"minidl": ratio, "torch": 1.0}, "params": {"minidl": 4_043_472, "torch": 4_043_472}}
    lines, verdict = report.awd_lstm_section(data, "`bench_text --json`")
    text = "\n".join(lines)
    assert text.startswith("## AWD-LSTM language model\n") and "vocab 10000" in text
    assert f"| torch | 1.000 | {32 * 72} | 4,043,472 |" in text                # tokens/s = batch x bptt / s
    assert (f"**Target (issue [5/7]): minidl's time <= 1.5x torch's (aim: <= 1.0x). {met}**: "
            f"minidl / torch is {ratio:.2f} (aim {aim}).") in text
    assert verdict == f"AWD-LSTM LM: {'met' if met == 'Met' else 'NOT met'} (minidl / torch {ratio:.2f})"
    assert f"```\n{PROFILE}\n```" in text


TOY = dict(vocab=50, emb=8, hidden=16, layers=2, bs=2, bptt=5)


def test_bench_text_steps_the_same_network_in_both_libraries():
    """bench_text's training steps at toy sizes: minidl's and the torch twin's, with equal parameter counts."""
    step, n_minidl = bench_text.build_minidl(**TOY)
    step(), step()                                  # the second one carries the first one's hidden state
    pytest.importorskip("torch")
    step, n_torch = bench_text.build_torch(**TOY)
    step(), step()
    assert n_minidl == n_torch == 2946              # 50 x 8 embedding (tied decoder) + its bias + two LSTMs


def test_the_awd_lstm_twin_computes_minidls_outputs():
    """Loaded with minidl's state dict (the same names), the twin gives the same scores in eval mode."""
    torch = pytest.importorskip("torch")
    from benchmarks.torch_twins import awd_lstm_lm
    model = get_language_model(50, dict(emb_sz=8, n_hid=16, n_layers=2), bench_text.DROP_MULT)
    twin = awd_lstm_lm(torch, 50, 8, 16, 2, bench_text.DROP_MULT)
    twin.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in model.state_dict().items()})
    model.eval(), twin.eval()
    ids = np.random.default_rng(0).integers(0, 50, (2, 5))
    for _ in range(2):                              # the second call starts from the carried hidden state
        np.testing.assert_allclose(twin(torch.from_numpy(ids)).detach().numpy(), model(minidl.tensor(ids)).numpy(),
                                   atol=1e-6)
