"""Run every benchmark once and write benchmarks/RESULTS.md (issue 4's tables and targets) and its figures.

    .venv/bin/python -m benchmarks                 # all of them, 5 to 10 minutes on a quiet machine
    .venv/bin/python -m benchmarks --out /tmp/RESULTS.md     # the figures go next to it: /tmp/*.png

Each benchmark runs as its own subprocess (its usual command line, shown in RESULTS.md), so
each gets its own thread pools. matmul, the training steps (small models, the U-Net, the
AWD-LSTM language model), the LSTM layer and the GPU benchmark hand back their numbers as JSON
(--json), from which the tables and the two figures (MATMUL_PNG, TRAIN_STEP_PNG, drawn by
plots.py) are made; conv, the hot ops and the optimizer updates print a table that is turned
into Markdown. Each table is followed by one line saying what
the issue's target is and whether this run meets it. The result is printed as well.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

from . import bench_gpu, bench_matmul, bench_text, bench_unet, plots
from .bench_train_step import SPLIT_NOTE, busy_cores, wait_until_quiet
from .common import cpu_model

HERE = os.path.dirname(os.path.abspath(__file__))
MATMUL_SIZES = ["128", "256", "512", "1024", "2048"]
MATMUL_PNG, TRAIN_STEP_PNG = "matmul_gflops.png", "train_step.png"   # written next to RESULTS.md
VERSIONS_PNG = "matmul_versions.png"   # the matmul step by step
NOTES_MD = os.path.join(HERE, "NOTES.md")   # written by hand; RESULTS.md's last section links to it


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [f for f in ("avx2", "fma", "avx512f", "avx512_bf16") if f in flags]
    except OSError:
        pass
    return []


def versions():
    code = ("import numpy, sys\ntry:\n import torch; t = torch.__version__\nexcept ImportError:\n t = None\n"
            "print(numpy.__version__, t, sys.version.split()[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split()
    return out if len(out) == 3 else ["?", "?", platform.python_version()]


def run(module, *args):
    """Run ``python -m benchmarks.<module> *args``; returns its output and a Markdown line saying how it ran."""
    cmd = [sys.executable, "-m", f"benchmarks.{module}", *args]
    for attempt in range(3):  # the C++ extension may be being rebuilt by someone else: retry
        busy = wait_until_quiet(15.0)
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(HERE))
        if r.returncode == 0:
            shown = " ".join([".venv/bin/python", "-m", f"benchmarks.{module}", *args])
            took = time.perf_counter() - t
            return r.stdout, f"`{shown}` ({took:.0f} s; other processes used {busy:.1f} cores at the start)"
        time.sleep(5)
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")


def parse_table(lines, names):
    """Rows of a printed table whose header has the column ``names`` (right-aligned columns after a
    first, possibly left-aligned, label column). Returns (header index, rows as lists of strings)."""
    for h, line in enumerate(lines):
        if line.split()[:1] == names[0].split()[:1] and all(n in line for n in names):
            break
    else:
        raise ValueError(f"no table with columns {names}")
    header, ends, pos = lines[h], [], 0
    for n in names:
        pos = header.index(n, pos) + len(n)
        ends.append(pos)
    rows = []
    for line in lines[h + 1:]:
        if not line.strip() or line.startswith("("):
            break
        label, first = line[:ends[1]].rsplit(None, 1)
        rows.append([label.strip(), first] + [line[a:b].strip() for a, b in zip(ends[1:-1], ends[2:])])
    return h, rows


def markdown(names, rows):
    out = ["| " + " | ".join(names) + " |", "|" + " --- |" * len(names)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def fnum(s):
    try:
        return float(s.rstrip("%"))
    except ValueError:
        return float("nan")


def num(x, fmt=".1f"):
    return "n/a" if x is None else format(x, fmt)


# ---------------------------------------------------------------- sections from the benchmarks' numbers

def matmul_section(data, how):
    """Markdown for one bench_matmul.measure() result; returns (lines, verdict)."""
    libraries, others = data["libraries"], [lib for lib in data["libraries"] if lib != "minidl"]
    rows = [[str(r["n"])] + [f"{r[lib]:.1f}" for lib in libraries] + [f"{r['ratio'][o]:.2f}" for o in others]
            for r in data["rows"]]
    threads = data["threads"]
    lines = [f"## matmul, {threads} thread(s): GFLOP/s", "",
             f"{how}. matmul float32, n x n @ n x n, {threads} thread(s); each library in its own process, "
             f"the three taking turns for {data['repeat']} rounds: GFLOP/s are medians over the rounds, "
             "ratios the medians of the ratios within each round (the machine's speed drifts between rounds).",
             "", markdown(["n", *libraries] + [f"minidl / {o}" for o in others], rows), ""]
    large = [r for r in data["rows"] if r["n"] >= 256]
    if "numpy" not in libraries or not large:
        return lines, f"matmul {threads} thread(s): no size >= 256 against numpy"
    worst = min(large, key=lambda r: r["ratio"]["numpy"])
    ratio = worst["ratio"]["numpy"]
    ok = ratio >= 0.8
    lines += [f"**Target (issue 4): minidl >= 0.8x numpy's GFLOP/s at n >= 256. {'Met' if ok else 'Not met'}**: "
              f"the lowest ratio at n >= 256 is {ratio:.2f} (n = {worst['n']}).", ""]
    if "torch" in libraries:
        vs_torch = min(r["ratio"]["torch"] for r in data["rows"] if r["n"] >= 512)
        lines += [f"Bar of issue [3/7]: minidl >= torch's GFLOP/s at n >= 512: "
                  f"{'met' if vs_torch >= 1.0 else 'not met'} (lowest minidl / torch {vs_torch:.2f}; "
                  f"what was tried: [NOTES.md](NOTES.md#toward-torchs-speed)).", ""]
    return lines, f"matmul {threads} thread(s): {'met' if ok else 'NOT met'} (min minidl/numpy {ratio:.2f})"


def train_step_section(data, how):
    """Markdown for one bench_train_step.measure() result, with its figure; returns (lines, verdict)."""
    models = data["models"]
    rows = [[r["label"], f"{r['minidl_ms']:.2f}", f"{r['torch_ms']:.2f}", f"{r['minidl_ms'] / r['torch_ms']:.2f}",
             f"{r['kernel_ms']:.2f}", f"{r['overhead_ms']:.2f}",
             f"{100 * r['kernel_ms'] / (r['kernel_ms'] + r['overhead_ms']):.0f}%", f"{r['calls']:.0f}"]
            for r in models]
    top = [[r["label"], ", ".join(f"{k} {ms:.2f} ({calls:.0f})" for k, ms, calls in r["top"])] for r in models]
    bad = [r for r in models if r["minidl_ms"] / r["torch_ms"] > 1.5]
    lines = ["## Training step: forward, loss, backward, AdamW step, zero grad", "",
             f"{how}. ms/step, median of {data['steps']} after {data['warmup']} warm-up (best of {data['rounds']} "
             f"rounds), {data['threads']} thread(s), each library in its own process.", "",
             markdown(["model", "minidl ms/step", "torch ms/step", "minidl / torch", "minidl kernel ms",
                       "minidl Python overhead ms", "kernel share", "kernel calls / step"], rows), "",
             SPLIT_NOTE[0].upper() + SPLIT_NOTE[1:] + ".", "",
             f"![Training step time per model, minidl split into kernels and Python overhead]({TRAIN_STEP_PNG})", "",
             f"minidl's top {max(len(r['top']) for r in models)} kernels by time per step, from minidl.profile(): "
             "ms (calls per step):", "",
             markdown(["model", "top kernels"], top), "",
             f"**Target (issue 4): minidl's step <= 1.5x torch's, {data['threads']} threads. "
             + ("Met** on every model." if not bad else
                f"Not met** on {len(bad)} of {len(models)}: "
                + ", ".join(f"{r['label']} ({r['minidl_ms'] / r['torch_ms']:.2f}x)" for r in bad) + "."), ""]
    return lines, f"training step: {'met' if not bad else f'NOT met on {len(bad)}/{len(models)}'}"


def unet_section(data, how):
    """Markdown for bench_unet's JSON, with minidl's profiled step; returns (lines, verdict)."""
    s, h = data["seconds"], data["size"]
    ratio = s["minidl"] / min(s["torch"], s["torch-channels-last"])
    ok = ratio <= 1.0
    rows = [[lib, f"{s[lib]:.3f}", f"{s['minidl'] / s[lib]:.2f}"] for lib in bench_unet.LIBS]
    lines = ["## U-Net training step", "",
             f"{how}. examples/camvid.py's U-Net (EfficientNet-Lite0 body), batch {data['bs']}, {h} x {h * 4 // 3}, "
             f"{data['threads']} threads: forward, cross-entropy, backward, AdamW step, zero grad; each library in its "
             "own process, s/step the median of the fastest round.", "",
             markdown(["library", "s/step", "minidl / it"], rows), "",
             f"**Target (issue [4/7]): minidl's step <= 1.0x torch's best layout. {'Met' if ok else 'Not met'}**: "
             f"minidl / torch's best is {ratio:.2f}.", "",
             "minidl's step, profiled with minidl.profile():", "", "```", data["profile"], "```", ""]
    return lines, f"U-Net step: {'met' if ok else 'NOT met'} (minidl / torch's best {ratio:.2f})"


def lstm_section(data, how):
    """Markdown for bench_lstm's JSON; returns (lines, verdict): the issue reports the ratios, with no bar."""
    rows = [[" ".join(map(str, r["shape"])), r["pass"], f"{r['minidl_ms']:.1f}", f"{r['torch_ms']:.1f}",
             f"{r['torch_over_minidl']:.2f}"] for r in data["rows"]]
    ratios = [r["torch_over_minidl"] for r in data["rows"] if r["pass"] == "fwd+bwd"]
    span = f"{min(ratios):.2f} to {max(ratios):.2f}"
    lines = ["## LSTM layer", "",
             f"{how}. minidl's nn.LSTM (one op per layer) vs torch.nn.LSTM with the same weights, float32, "
             f"{data['threads']} threads, taking turns for {data['repeat']} rounds; fwd: no graph, fwd+bwd: gradients "
             "of the weights and the input; torch / minidl: the median of the ratios within each round (above 1: "
             "minidl faster).", "",
             markdown(["batch seq input hidden layers", "pass", "minidl ms", "torch ms", "torch / minidl"], rows), "",
             f"**Target (issue [5/7]): forward + backward time vs torch.nn.LSTM, reported (no fixed bar)**: "
             f"torch / minidl from {span}.", ""]
    return lines, f"LSTM fwd+bwd: torch/minidl {span} (no bar)"


def awd_lstm_section(data, how):
    """Markdown for bench_text's JSON, with minidl's profiled step; returns (lines, verdict)."""
    s, tokens = data["seconds"], data["bs"] * data["bptt"]
    ratio = s["minidl"] / s["torch"]
    ok = ratio <= 1.5
    rows = [[lib, f"{s[lib]:.3f}", f"{tokens / s[lib]:.0f}", f"{data['params'][lib]:,}"] for lib in bench_text.LIBS]
    lines = ["## AWD-LSTM language model", "",
             f"{how}. examples/imdb.py's language model: vocab {data['vocab']}, embeddings {data['emb']}, "
             f"{data['layers']} LSTM layers ({data['hidden']} hidden, the last back to {data['emb']}), tied decoder, "
             f"drop_mult {bench_text.DROP_MULT}; batch {data['bs']} x bptt {data['bptt']}, {data['threads']} threads: "
             "forward, cross-entropy, backward, AdamW step, zero grad, the hidden state carried; each library in its "
             f"own process, s/step the median of {data['steps']} (best of {data['rounds']} rounds).", "",
             markdown(["library", "s/step", "tokens/s", "parameters"], rows), "",
             f"**Target (issue [5/7]): minidl's time <= 1.5x torch's (aim: <= 1.0x). {'Met' if ok else 'Not met'}**: "
             f"minidl / torch is {ratio:.2f} (aim {'met' if ratio <= 1.0 else 'not met'}).", "",
             "minidl's step, profiled with minidl.profile():", "", "```", data["profile"], "```", ""]
    return lines, f"AWD-LSTM LM: {'met' if ok else 'NOT met'} (minidl / torch {ratio:.2f})"


GPU_HOW_TO = ("No GPU run has been recorded yet: this project's machines have none, so every CUDA kernel has "
              "so far run only compiled by NVRTC and on the 'emu' device. On a machine with an NVIDIA GPU: "
              "`make gpu-check` (the driver and CUDA versions, the GPU tests with MINIDL_REQUIRE_GPU=1, "
              "compute-sanitizer, this benchmark and three examples on cuda; under 10 minutes; writes "
              "benchmarks/gpu_report.md), then `make bench` to fill this section")


def gpu_section(data, how):
    """Markdown for bench_gpu's JSON: its tables with the device named, or why it did not run and how to run it."""
    if data.get("device") is None:
        return ["## GPU", "",
                f"**Not run on a GPU yet.** Skipped here: {data['skipped']}. {how}.", "",
                f"{GPU_HOW_TO}: it then holds minidl's CUDA kernels, each checked against the numpy reference "
                f"before it is timed, forward and backward, against cuBLAS and PyTorch (TF32 off), GB/s for the "
                f"memory-bound ones, and the training steps of a small CNN and of EfficientNet-Lite0.", ""]
    matmul = [["x".join(map(str, r["shape"])), num(r.get("naive"), ".0f"), num(r.get("tiled"), ".0f"),
               f"{r['cublas']:.0f}", num(r.get("torch"), ".0f"),
               num(r["tiled"] / r["cublas"] if r.get("tiled") else None, ".2f"), r["status"]] for r in data["matmul"]]
    ops = [[f"{r['op']}, {r['direction']}", num(r.get("minidl_ms"), ".3f"), num(r.get("minidl_gflops"), ".0f"),
            num(r.get("minidl_gbs"), ".0f"), num(r.get("torch_ms"), ".3f"),
            num(r["torch_ms"] / r["minidl_ms"] if r.get("torch_ms") and r.get("minidl_ms") else None, ".2f"),
            r["status"]] for r in data["ops"]]
    steps = [[r["model"], f"{r['batch']}, {r['side']}x{r['side']}", f"{r['minidl_ms']:.2f}", num(r.get("torch_ms"), ".2f"),
              num(r["torch_ms"] / r["minidl_ms"] if r.get("torch_ms") else None, ".2f")] for r in data["train_steps"]]
    failed = data.get("failed") or []
    return [f"## GPU: {data['device']}", "",
            f"{how}. GPU time per call from CUDA events, median after a warm-up; every kernel checked against "
            f"the numpy reference first (a failure is marked and not timed); PyTorch with TF32 off.", "",
            "float32 matmul, GFLOP/s:", "",
            markdown(["M x K x N", "minidl naive", "minidl tiled", "cuBLAS (CuPy)", "torch", "tiled / cuBLAS",
                      "check"], matmul), "",
            markdown(["op", "minidl ms", "GFLOP/s", "GB/s", "torch ms", "torch / minidl", "check"], ops), "",
            "Training step (forward, cross-entropy, backward, SGD with momentum), ms:", "",
            markdown(["model", "batch, size", "minidl", "torch", "torch / minidl"], steps), "",
            *([f"**FAILED** (not timed): {'; '.join(failed)}", ""] if failed else [])]


def notes_section(folder):
    """RESULTS.md's last section: a link (relative to ``folder``, where RESULTS.md goes) to NOTES.md, the
    research notes and measurements moved out of minidl's docstrings, which `make bench` leaves alone."""
    link = os.path.relpath(NOTES_MD, folder).replace(os.sep, "/")
    return ["## Notes moved from the code", "",
            f"Research notes and measurements that used to sit in minidl's docstrings (why `Function.apply` is "
            f"kept short, why `Linear` and `CrossEntropy` are one op each) are in [NOTES.md]({link}), written by "
            f"hand; this run does not rewrite it.", ""]


def write_results(out, machine, sections, verdicts, seconds, matmul, train_step):
    """Draw the two figures next to ``out`` and write RESULTS.md there; returns its text.

    machine: lines describing the machine; sections: lists of Markdown lines, in order;
    matmul: {threads: bench_matmul.measure()}; train_step: bench_train_step.measure()."""
    folder = os.path.dirname(os.path.abspath(out))
    plots.plot_matmul(matmul, os.path.join(folder, MATMUL_PNG))
    plots.plot_train_step(train_step, os.path.join(folder, TRAIN_STEP_PNG))
    now = datetime.datetime.now(datetime.timezone.utc)
    md = ["# Benchmark results", "",
          f"Generated by `.venv/bin/python -m benchmarks` on {now:%Y-%m-%d %H:%M} UTC.", "",
          "Summary against the issues' targets: " + "; ".join(verdicts) + f". Whole run: {seconds:.0f} s.", "",
          *machine, "",
          f"Figures: [matmul GFLOP/s against n]({MATMUL_PNG}), [training step per model]({TRAIN_STEP_PNG}).", ""]
    for lines in sections:
        md += lines
    md += notes_section(folder)
    text = "\n".join(md).rstrip() + "\n"
    with open(out, "w") as f:
        f.write(text)
    return text


def machine_description():
    """The bullet lines that say what machine ran the benchmarks and how busy it was."""
    np_v, torch_v, py_v = versions()
    flags = cpu_flags()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    busy = busy_cores(1.0)
    return [f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores" + (f" ({', '.join(flags)})" if flags else ""),
            f"- Python {py_v}, numpy {np_v}, torch {torch_v}, {platform.system()} {platform.release()}",
            f"- at the start: load average {load:.2f}, other processes using {busy:.1f} cores. Other work on "
            "this machine makes the timings noisy (one busy core stalls 2-thread runs by up to 100x), so each "
            "benchmark waits up to 15 s (each training-step process 8 s) for the machine to go quiet "
            "(< 0.3 cores busy) and says how busy it was when it started; compare ratios taken in the same "
            "run, and rerun a table started on a busy machine."]


# ---------------------------------------------------------------- sections from printed tables

def conv_section(out, how):
    """Markdown for bench_conv's printed table; returns (lines, verdict)."""
    lines = out.splitlines()
    names = ["layer", "minidl ms", "GFLOP/s", "torch ms", "torch/minidl"]
    _, rows = parse_table(lines, names)
    for r in rows:
        r.append(f"{1 / fnum(r[4]):.2f}")  # from the median of the per-round ratios
    bad = [r for r in rows if fnum(r[5]) > 1.5]
    md = ["## conv2d and pooling, forward + backward", "", f"{how}. {lines[0]}.", "",
          markdown(["layer", "minidl ms", "minidl GFLOP/s", "torch ms", "torch / minidl", "minidl time / torch"],
                   rows), "",
          "**Target (issue 4): minidl's time <= 1.5x torch's. "
          + ("Met** on every shape." if not bad else
             f"Not met** on {len(bad)} of {len(rows)} shapes: "
             + ", ".join(f"{r[0]} ({r[5]}x)" for r in bad) + ".")
          + " (Batch 32, as the issue quotes.)", ""]
    three = [r for r in rows if "3x3" in r[0] and "depthwise" not in r[0]]
    slow = [r for r in three if fnum(r[5]) > 1.0]
    md += ["Bar of issue [3/7]: ResNet18's 3x3 convolutions in <= 1.0x torch's time: "
           + ("met." if not slow else "not met on " + ", ".join(f"{r[0]} ({r[5]}x)" for r in slow)
              + " (what was tried: [NOTES.md](NOTES.md#toward-torchs-speed)).") if three else "", ""]
    return md, f"conv2d: {'met' if not bad else f'NOT met on {len(bad)}/{len(rows)} shapes'}"


def ops_section(out, how):
    """Markdown for bench_ops's printed table; returns (lines, None): the issue sets no target here."""
    lines = out.splitlines()
    names = ["kernel and shape", "minidl us", "numpy us", "torch us", "numpy/minidl", "torch/minidl"]
    _, rows = parse_table(lines, names)
    slower = [r for r in rows if fnum(r[4]) < 1]
    return ["## The hot small ops of the training steps", "", f"{how}. {lines[0]}.", "",
            markdown(["kernel and shape", "minidl us", "numpy us", "torch us", "numpy / minidl", "torch / minidl"],
                     rows), "",
            "The cpu backend uses these C++ kernels in place of numpy_ref's (no target in the issue beyond "
            "\"where numpy is slow\"). "
            + ("Each is faster than the numpy reference in this run." if not slower else
               "Slower than the numpy reference in this run: " + ", ".join(f"{r[0]} ({r[4]}x)" for r in slower)
               + " (a few microseconds either way: per-call overhead, or noise)."), ""], None  # no target


def optim_section(out, how):
    """Markdown for bench_optim's printed table; returns (lines, verdict)."""
    lines = out.splitlines()
    names = ["kernel", "n", "minidl ms", "GB/s", "%peak", "numpy ms", "torch ms", "np/minidl", "torch/minidl"]
    _, rows = parse_table(lines, names)
    upd = [r for r in rows if r[0].startswith(("sgd_step", "adam_step"))]
    big = [r for r in upd if int(r[1]) >= 1_000_000] or upd
    bad = [r for r in big if fnum(r[4]) < 70]
    md = ["## Fused optimizer updates and embedding gather / scatter", "", f"{how}. {lines[0]}.", "",
          markdown(["kernel", "n", "minidl ms", "GB/s", "% of bandwidth", "numpy ms", "torch ms",
                    "numpy / minidl", "torch / minidl"], rows), "",
          "**Target (issue 4): the fused SGD / Adam updates move >= 70% of the memory bandwidth they need. "
          + ("Met**" if not bad else "Not met**") + " at n >= 1M: "
          + ", ".join(f"{r[0]} n={r[1]} {r[4]}" for r in big)
          + " (n = 100k fits in cache, where the per-core DRAM figure does not apply).", ""]
    return md, f"fused updates: {'met' if not bad else 'NOT met'}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    args = parser.parse_args()
    t_start = time.perf_counter()
    machine = machine_description()
    sections, verdicts = [], []

    matmul = {}
    for threads in (1, 2):
        out, how = run("bench_matmul", "--threads", str(threads), "--sizes", *MATMUL_SIZES, "--json")
        matmul[threads] = json.loads(out.splitlines()[-1])
        lines, verdict = matmul_section(matmul[threads], how)
        sections.append(lines)
        verdicts.append(verdict)
    sections[-1] += [f"![matmul GFLOP/s against n, 1 and 2 threads]({MATMUL_PNG})", ""]

    for module, args_, section in [("bench_conv", ["--batch", "32"], conv_section),
                                   ("bench_ops", ["--threads", "1"], ops_section),  # 1 thread: fair on a busy machine
                                   ("bench_optim", [], optim_section)]:
        out, how = run(module, *args_)
        lines, verdict = section(out, how)
        sections.append(lines)
        if verdict:
            verdicts.append(verdict)

    out, how = run("bench_train_step", "--json")
    train_step = json.loads(out.splitlines()[-1])
    lines, verdict = train_step_section(train_step, how)
    sections.append(lines)
    verdicts.append(verdict)

    for module, args_, section in [("bench_unet", ["--json"], unet_section),
                                   ("bench_lstm", ["--no-composed", "--repeat", "3", "--json"], lstm_section),
                                   ("bench_text", ["--json"], awd_lstm_section)]:
        out, how = run(module, *args_)
        lines, verdict = section(json.loads(out.splitlines()[-1]), how)
        sections.append(lines)
        verdicts.append(verdict)

    out, how = run("bench_gpu", "--json")
    sections.append(gpu_section(json.loads(out.splitlines()[-1]), how))

    # The matmul step by step (CPU: csrc/cpu/matmul_steps.cpp; GPU: csrc/cuda/matmul.cu) and the
    # reduction's steps (csrc/cuda/reduce.cu, GB/s): each version's gain over the one before.
    out, how = run("bench_matmul", "--versions", "--json")
    steps = json.loads(out.splitlines()[-1])
    bench_matmul.plot_versions(steps, os.path.join(os.path.dirname(os.path.abspath(args.out)), VERSIONS_PNG))
    sections.append(bench_matmul.versions_section(steps, how, png=VERSIONS_PNG))
    out, how = run("bench_gpu", "--versions", "--json")
    sections.append(bench_gpu.reduce_versions_section(json.loads(out.splitlines()[-1]), how))

    text = write_results(args.out, machine, sections, verdicts, time.perf_counter() - t_start, matmul, train_step)
    print(text)
    print(f"written to {args.out} with {MATMUL_PNG} and {TRAIN_STEP_PNG} beside it")


if __name__ == "__main__":
    main()
