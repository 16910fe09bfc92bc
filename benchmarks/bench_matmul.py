"""Square float32 matmul, n x n @ n x n: minidl's C++ kernel vs numpy (OpenBLAS) vs PyTorch.

    .venv/bin/python -m benchmarks.bench_matmul                 # 1 thread each
    .venv/bin/python -m benchmarks.bench_matmul --threads 2 --sizes 256 512
    .venv/bin/python -m benchmarks.bench_matmul --json          # the numbers as JSON, for `python -m benchmarks`
    .venv/bin/python -m benchmarks.bench_matmul --versions [--n N] [--gpu-n N]   # the kernel chapter, see below

Prints GFLOP/s (2*n^3 FLOPs) and the ratio minidl / numpy (and minidl / torch). Each
library gets the same thread count and runs in a process of its own (the others' thread
pools are then not even started, so nothing spins on the cores it needs), and the three
processes take turns: in each of --repeat rounds, every library times every size once.
On a shared machine the speed of a core drifts by up to 1.5x over seconds (another
tenant's work on the same physical core), so timing one library after the other would
compare different machines; a ratio taken within one round compares neighbours in time.
The table shows each library's median GFLOP/s over the rounds and the median of the
per-round ratios.

--versions times the matmul chapter version by version: the CPU versions of
minidl._C.matmul_step (csrc/cpu, where built) at n = --n (1024) and the CUDA versions of
csrc/cuda/matmul.cu (CUDA_VERSIONS; where CuPy sees a GPU) at n = --gpu-n (4096). Each version
is first checked against numpy's product; one that fails is marked FAILED and not timed. Each
row: the version's name, its GFLOP/s, and that as a fraction of numpy's and torch's (on the GPU:
cuBLAS's and torch's) and of the measured FMA peak (CPU: a few lines of C++ doing nothing but
fused multiply-adds, FMA_PEAK_CPP; GPU: matmul.cu's fma_peak kernel).
"""
import argparse
import functools
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from statistics import median

from .common import cpu_model, limit_threads


def seconds_per_call(fn):
    """Seconds per call of fn: the median of 3 samples, each timing enough calls to last
    >= 20 ms (single calls of a small product are too short to time on a busy machine)."""
    t = time.perf_counter()
    fn()
    calls = max(1, int(0.02 / max(time.perf_counter() - t, 1e-6)))
    samples = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - t) / calls)
    return median(samples)


def serve(library, threads):
    """The child process: prepare one library, then time "n" lines from stdin, one at a time,
    answering each with seconds per call (or "null" when torch is not installed)."""
    torch = limit_threads(threads, torch=library == "torch", minidl=library == "minidl")
    import numpy as np
    if library == "minidl":
        from minidl.backend import cpu
        fn = cpu.matmul
    elif library == "numpy":
        fn = np.matmul
    elif torch is not None:
        def fn(a, b):
            return torch.matmul(torch.from_numpy(a), torch.from_numpy(b))
    else:
        fn = None
    rng = np.random.default_rng(0)
    operands = {}
    print("ready", flush=True)
    for line in sys.stdin:
        n = int(line)
        if fn is None:
            print("null", flush=True)
            continue
        if n not in operands:
            operands[n] = [rng.standard_normal((n, n), dtype=np.float32) for _ in range(2)]
            fn(*operands[n])  # warm-up: page in buffers, start thread pools
        a, b = operands[n]
        print(json.dumps(seconds_per_call(lambda: fn(a, b))), flush=True)


def measure(sizes, threads=1, repeat=5, libraries=("minidl", "numpy", "torch")):
    """GFLOP/s of each library at each size, ``threads`` threads, each library in its own process,
    the libraries taking turns in ``repeat`` rounds (see the module docstring).

    Returns {"threads", "repeat", "libraries": [names], "rows": [{"n": n, "minidl": GFLOP/s, ...,
    "ratio": {"numpy": median over rounds of minidl's / numpy's GFLOP/s, ...}}]}, GFLOP/s being
    medians over the rounds; "torch" is left out where torch is not installed."""
    procs = {}
    try:
        for name in libraries:
            cmd = [sys.executable, "-m", "benchmarks.bench_matmul", "--serve", name, "--threads", str(threads)]
            procs[name] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            if procs[name].stdout.readline().strip() != "ready":
                raise RuntimeError(f"{' '.join(cmd)} did not start (see its error above)")
        times = {name: {n: [] for n in sizes} for name in libraries}
        for _ in range(repeat):
            for n in sizes:
                for name, proc in procs.items():
                    if threads > 1:
                        time.sleep(0.2)  # let the last library's idle threads stop spinning
                    proc.stdin.write(f"{n}\n")
                    proc.stdin.flush()
                    answer = proc.stdout.readline()
                    if not answer:
                        raise RuntimeError(f"bench_matmul --serve {name} died at n = {n}")
                    times[name][n].append(json.loads(answer))
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait()
    present = [name for name in libraries if None not in times[name][sizes[0]]]
    rows = []
    for n in sizes:
        row = {"n": n, **{name: 2 * n**3 / median(times[name][n]) / 1e9 for name in present}}
        row["ratio"] = {o: median(t_o / t_m for t_m, t_o in zip(times["minidl"][n], times[o][n]))
                        for o in present if o != "minidl" and "minidl" in present}
        rows.append(row)
    return {"threads": threads, "repeat": repeat, "libraries": present, "rows": rows}


def print_table(data):
    libraries = data["libraries"]
    others = [name for name in libraries if name != "minidl"]
    print("".join(f"{h:>10}" for h in ["n", *libraries]) + "".join(f"{'minidl/' + o:>14}" for o in others))
    for row in data["rows"]:
        line = f"{row['n']:>10}" + "".join(f"{row[name]:>10.1f}" for name in libraries)
        line += "".join(f"{row['ratio'][o]:>14.2f}" for o in others)
        print(line)


# ---------------------------------------------------------------- --versions: the matmul chapter, one row per version

CHECK_TOLERANCE = 1e-4  # max |C - numpy's C| / max |numpy's C|; summing in another order costs ~1e-6


@dataclass(frozen=True)
class CudaVersion:
    """One kernel of csrc/cuda/matmul.cu and its launch (the kernel's comment says the same)."""
    name: str      # "v1"
    kernel: str    # "matmul_naive"
    idea: str      # the one idea it adds
    block: tuple   # threads per block
    tile: tuple    # (rows, columns) of C per block: grid = (ceil(N / columns), ceil(M / rows), batch)

    def grid(self, M, N, batch=1):
        return (-(-N // self.tile[1]), -(-M // self.tile[0]), batch)


CUDA_VERSIONS = (
    CudaVersion("v1", "matmul_naive", "one thread per element of C, from global memory", (16, 16), (16, 16)),
    CudaVersion("v2", "matmul_coalesced", "a warp takes 32 neighbouring columns: coalesced loads", (32, 8), (8, 32)),
    CudaVersion("v3", "matmul_smem", "32x32 tiles of A and B staged in shared memory", (32, 32), (32, 32)),
    CudaVersion("v4", "matmul_regtile_1d", "16 outputs per thread: a shared load of B feeds 16 FMAs", (256,), (64, 64)),
    CudaVersion("v5", "matmul_regtile_2d", "a 4x4 patch per thread: 8 shared loads feed 16 FMAs", (256,), (64, 64)),
    CudaVersion("v6", "matmul_vec4", "128-bit loads (float4) from global and shared memory", (256,), (64, 64)),
    CudaVersion("v7", "matmul_tiled", "warp tiling: each warp owns a 32x16 piece (minidl's kernel)", (256,), (64, 64)),
)


def launch_cuda_version(kernels, version, A, trans_a, B, trans_b, out, M, N, K, batch=1, strides=(0, 0, 0)):
    """out[b] = op(A[b]) @ op(B[b]) with one version, on the device of ``kernels`` (a CudaKernels:
    get_backend("cuda" or "emu").kernels); the arguments are those of CudaKernels.gemm."""
    import numpy as np
    kernels.launch("matmul", version.kernel, version.grid(M, N, batch), version.block,
                   (A, B, out, np.int32(M), np.int32(N), np.int32(K), np.int32(trans_a), np.int32(trans_b),
                    *(np.int64(s) for s in strides)))


def cuda_matmul(kernels, version, a, b, out=None):
    """a @ b for contiguous float32 matrices on the device of ``kernels``, with one version, into ``out``
    (a new array if None)."""
    import numpy as np
    (M, K), N = a.shape, b.shape[1]
    out = kernels.xp.empty((M, N), np.float32) if out is None else out
    launch_cuda_version(kernels, version, a, 0, b, 0, out, M, N, K)
    return out


def cpu_versions():
    """[(name, label, fn(a, b))] for the CPU chapter, minidl._C.matmul_step(version, a, b) with the
    names in minidl._C.MATMUL_STEPS; [] where the extension has no such function."""
    from minidl import _C
    step = getattr(_C, "matmul_step", None)
    if step is None:
        return []
    return [(f"v{i}", str(label), functools.partial(step, i)) for i, label in enumerate(_C.MATMUL_STEPS)]


def check(out, ref):
    """None when out is numpy's product ``ref`` up to float32 rounding, else what is wrong."""
    import numpy as np
    out = np.asarray(out)
    if out.shape != ref.shape:
        return f"shape {out.shape}, expected {ref.shape}"
    if not np.isfinite(out).all():
        return "non-finite values"
    error = float(np.abs(out - ref).max() / max(float(np.abs(ref).max()), 1e-30))
    return None if error <= CHECK_TOLERANCE else f"max error {error:.1e} of max |C|"


# The CPU's roof: CHAINS independent chains of vector FMAs (as wide as the CPU's widest), in
# registers only, on `threads` threads; g++ builds it once into the cache (no g++: no peak).
FMA_PEAK_CPP = r"""
#include <chrono>
#include <thread>
#include <vector>
typedef float vec __attribute__((vector_size(VEC_BYTES)));
constexpr int CHAINS = 12;  // > FMA latency x FMA units: enough to keep every unit busy

static float chains(long iters) {
    vec x[CHAINS], a = (vec){} + 0.999f, b = (vec){} + 0.001f;
    for (int j = 0; j < CHAINS; ++j) x[j] = (vec){} + (float)j;
    for (long i = 0; i < iters; ++i)
#pragma GCC unroll 12
        for (int j = 0; j < CHAINS; ++j) x[j] = x[j] * a + b;  // one FMA instruction (-ffp-contract=fast)
    float s = 0;
    for (int j = 0; j < CHAINS; ++j)
        for (int l = 0; l < VEC_BYTES / 4; ++l) s += x[j][l];
    return s;
}

extern "C" double fma_peak_gflops(int threads, long iters) {
    std::vector<std::thread> pool;
    std::vector<float> sink(threads);
    auto start = std::chrono::steady_clock::now();
    for (int t = 0; t < threads; ++t) pool.emplace_back([&, t] { sink[t] = chains(iters); });
    for (auto& t : pool) t.join();
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return 2.0 * (VEC_BYTES / 4) * CHAINS * iters * threads / seconds / 1e9 + 0.0 * sink[0];
}
"""


def cpu_fma_peak(threads):
    """GFLOP/s of FMA_PEAK_CPP on ``threads`` threads (best of 3 runs of ~0.1 s), or None without g++."""
    import ctypes
    try:
        with open("/proc/cpuinfo") as f:
            width = 64 if " avx512f" in f.read() else 32
    except OSError:
        width = 32
    flags = ["-O2", "-march=native", "-ffp-contract=fast", "-std=c++17", "-shared", "-fPIC", "-pthread",
             f"-DVEC_BYTES={width}"]
    key = hashlib.sha256((FMA_PEAK_CPP + " ".join(flags)).encode()).hexdigest()[:16]
    base = os.environ.get("MINIDL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "minidl")
    library = os.path.join(base, "bench", f"fma_peak-{key}.so")
    if not os.path.exists(library):
        os.makedirs(os.path.dirname(library), exist_ok=True)
        with tempfile.TemporaryDirectory(dir=os.path.dirname(library)) as tmp:
            source = os.path.join(tmp, "fma_peak.cpp")
            with open(source, "w") as f:
                f.write(FMA_PEAK_CPP)
            try:
                built = subprocess.run(["g++", *flags, source, "-o", os.path.join(tmp, "peak.so")],
                                       capture_output=True)
            except FileNotFoundError:
                return None
            if built.returncode != 0:
                return None
            os.replace(os.path.join(tmp, "peak.so"), library)
    fn = ctypes.CDLL(library).fma_peak_gflops
    fn.restype, fn.argtypes = ctypes.c_double, [ctypes.c_int, ctypes.c_long]
    iters = 1000
    while True:  # grow the run until it lasts 0.1 s
        t = time.perf_counter()
        fn(threads, iters)
        if time.perf_counter() - t > 0.1:
            break
        iters *= 4
    return max(fn(threads, iters) for _ in range(3))


def gpu_context(with_torch=True):
    """What the GPU rows need where CuPy sees a GPU: (SimpleNamespace(cupy, kernels, name, torch,
    sm_count), None); elsewhere (None, the reason no GPU row runs)."""
    from types import SimpleNamespace
    from .bench_gpu import gpu_or_none, torch_cuda
    try:
        found = gpu_or_none()
    except Exception as e:  # CuPy without a working driver, say
        return None, f"CuPy could not reach a GPU ({type(e).__name__}: {e})"
    if found is None:
        return None, "no GPU visible (CuPy sees no CUDA device)"
    cupy, name = found
    from minidl.backend import get_backend
    sm_count = cupy.cuda.Device().attributes["MultiProcessorCount"]
    return SimpleNamespace(cupy=cupy, kernels=get_backend("cuda").kernels, name=name,
                           torch=torch_cuda() if with_torch else None, sm_count=sm_count), None


def gpu_fma_peak(gpu, repeat=5, iters=2048):
    """GFLOP/s of matmul.cu's fma_peak kernel: 8 blocks of 256 threads per SM, 8 chains of ``iters`` FMAs each."""
    import numpy as np
    from .bench_gpu import gpu_time
    blocks, threads = 8 * gpu.sm_count, 256
    out = gpu.kernels.xp.empty(blocks * threads, np.float32)
    seconds = gpu_time(gpu.cupy, lambda: gpu.kernels.launch("matmul", "fma_peak", (blocks,), (threads,),
                                                            (out, np.int32(iters))), repeat)
    return 2 * 8 * iters * blocks * threads / seconds / 1e9


def _row(name, label, status, gflops=None, refs=None, peak=None):
    return {"name": name, "label": label, "status": status, "gflops": gflops,
            "of": {k: (gflops / v if gflops and v else None) for k, v in (refs or {}).items()},
            "of_peak": gflops / peak if gflops and peak else None}


def measure_versions(n, threads, gpu_n, gpu=None, gpu_skipped=None, torch=None, repeat=5):
    """Check, then time, every version of the chapter (see the module docstring).

    gpu: gpu_context()'s first value, or None (then every CUDA row is "not run: ``gpu_skipped``");
    torch: the torch module for torch's CPU reference, or None.
    Returns {"n", "gpu_n", "threads", "cpu": {"name", "numpy", "torch", "peak"}, "cpu_rows",
    "gpu": {"name", "cuBLAS", "torch", "peak"} or None, "gpu_skipped", "gpu_rows"}: GFLOP/s, and rows
    {"name", "label", "status" ("ok", "FAILED: ...", "not run (no GPU)"), "gflops", "of": {reference:
    fraction}, "of_peak"}, gflops None for a row that was not timed."""
    import numpy as np
    rng = np.random.default_rng(0)
    flops = 2 * n ** 3
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    ref = a @ b
    cpu = {"name": f"{cpu_model()}, {threads} thread(s)", "numpy": flops / seconds_per_call(lambda: a @ b) / 1e9,
           "torch": None, "peak": cpu_fma_peak(threads)}
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        cpu["torch"] = flops / seconds_per_call(lambda: torch.matmul(ta, tb)) / 1e9
    refs = {"numpy": cpu["numpy"], "torch": cpu["torch"]}
    cpu_rows = []
    for name, label, fn in cpu_versions():
        try:
            problem = check(fn(a, b), ref)
        except Exception as e:
            problem = f"{type(e).__name__}: {e}"
        if problem:
            cpu_rows.append(_row(name, label, f"FAILED: {problem}"))
            continue
        cpu_rows.append(_row(name, label, "ok", flops / seconds_per_call(lambda: fn(a, b)) / 1e9, refs, cpu["peak"]))

    data = {"n": n, "gpu_n": gpu_n, "threads": threads, "cpu": cpu, "cpu_rows": cpu_rows,
            "gpu": None, "gpu_skipped": gpu_skipped, "gpu_rows": []}
    if gpu is None:
        data["gpu_rows"] = [_row(v.name, f"{v.kernel}: {v.idea}", "not run (no GPU)") for v in CUDA_VERSIONS]
        return data
    from .bench_gpu import gpu_time
    xp, flops = gpu.kernels.xp, 2 * gpu_n ** 3
    if gpu_n != n:
        a, b = (rng.standard_normal((gpu_n, gpu_n), dtype=np.float32) for _ in range(2))
        ref = a @ b
    da, db = xp.asarray(a), xp.asarray(b)
    to_host = getattr(xp, "asnumpy", np.asarray)
    info = {"name": gpu.name, "cuBLAS": flops / gpu_time(gpu.cupy, lambda: gpu.cupy.matmul(da, db), repeat) / 1e9,
            "torch": None, "peak": gpu_fma_peak(gpu, repeat)}
    if gpu.torch is not None:
        ta, tb = gpu.torch.as_tensor(da, device="cuda"), gpu.torch.as_tensor(db, device="cuda")
        info["torch"] = flops / gpu_time(gpu.cupy, lambda: gpu.torch.matmul(ta, tb), repeat) / 1e9
    refs = {"cuBLAS": info["cuBLAS"], "torch": info["torch"]}
    for v in CUDA_VERSIONS:
        label = f"{v.kernel}: {v.idea}"
        try:
            nans = xp.full((gpu_n, gpu_n), np.nan, np.float32)  # what the kernel does not write stays NaN
            problem = check(to_host(cuda_matmul(gpu.kernels, v, da, db, nans)), ref)
        except Exception as e:
            problem = f"{type(e).__name__}: {e}"
        if problem:
            data["gpu_rows"].append(_row(v.name, label, f"FAILED: {problem}"))
            continue
        seconds = gpu_time(gpu.cupy, lambda: cuda_matmul(gpu.kernels, v, da, db), repeat)
        data["gpu_rows"].append(_row(v.name, label, "ok", flops / seconds / 1e9, refs, info["peak"]))
    data["gpu"] = info
    return data


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def _table(rows, refs):
    """Lines of one device's table: name, GFLOP/s, fractions of each reference and of the peak, label."""
    lines = [f"{'version':<9}{'GFLOP/s':>10}" + "".join(f"{'of ' + r:>11}" for r in refs) + f"{'of peak':>10}  kernel"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"{r['name']:<9}{r['status']}  ({r['label']})")
            continue
        lines.append(f"{r['name']:<9}{r['gflops']:>10.1f}" + "".join(f"{_fmt(r['of'][k], '.3f'):>11}" for k in refs)
                     + f"{_fmt(r['of_peak'], '.3f'):>10}  {r['label']}")
    return lines


def versions_table(data):
    """The printed report of measure_versions: a CPU table, then a GPU one."""
    cpu = data["cpu"]
    lines = [f"matmul, version by version: float32 n x n @ n x n, each checked against numpy first",
             f"CPU {cpu['name']}, n = {data['n']}: numpy {cpu['numpy']:.1f} GFLOP/s, torch "
             f"{_fmt(cpu['torch'], '.1f')} GFLOP/s, FMA peak {_fmt(cpu['peak'], '.1f')} GFLOP/s (measured)"]
    if data["cpu_rows"]:
        lines += _table(data["cpu_rows"], ["numpy", "torch"])
    else:
        lines.append("(no CPU versions: minidl._C has no matmul_step)")
    lines.append("")
    gpu = data["gpu"]
    if gpu is None:
        lines.append(f"GPU: not run ({data['gpu_skipped']})")
    else:
        lines.append(f"GPU {gpu['name']}, n = {data['gpu_n']}: cuBLAS {gpu['cuBLAS']:.0f} GFLOP/s, torch "
                     f"{_fmt(gpu['torch'], '.0f')} GFLOP/s, FMA peak {gpu['peak']:.0f} GFLOP/s (fma_peak)")
    lines += _table(data["gpu_rows"], ["cuBLAS", "torch"])
    return lines


def versions_section(data, how, png=None):
    """RESULTS.md's lines for measure_versions' data (``how``: the command that made it); ``png``: the
    file name of plot_versions' figure, linked when given."""
    def table(rows, refs):
        out = ["| version | GFLOP/s | " + " | ".join(f"of {r}" for r in refs) + " | of FMA peak | kernel |",
               "|" + " --- |" * (len(refs) + 4)]
        for r in rows:
            numbers = ([_fmt(r["gflops"], ".1f")] + [_fmt(r["of"].get(k), ".3f") for k in refs]
                       + [_fmt(r["of_peak"], ".3f")]) if r["status"] == "ok" else [r["status"]] + [""] * (len(refs) + 1)
            out.append(f"| {r['name']} | " + " | ".join(numbers) + f" | {r['label']} |")
        return out

    cpu, gpu = data["cpu"], data["gpu"]
    lines = ["## matmul, version by version", "",
             f"{how}. Each version is checked against numpy first (a failure is marked and not timed). "
             f"CPU: {cpu['name']}, n = {data['n']}: numpy {cpu['numpy']:.1f}, torch {_fmt(cpu['torch'], '.1f')}, "
             f"measured FMA peak {_fmt(cpu['peak'], '.1f')} GFLOP/s.", ""]
    lines += table(data["cpu_rows"], ["numpy", "torch"]) if data["cpu_rows"] else \
        ["No CPU versions: minidl._C has no matmul_step."]
    lines.append("")
    if gpu is None:
        lines.append(f"GPU rows not run: {data['gpu_skipped']}.")
    else:
        lines += [f"GPU: {gpu['name']}, n = {data['gpu_n']}: cuBLAS {gpu['cuBLAS']:.0f}, torch "
                  f"{_fmt(gpu['torch'], '.0f')}, FMA peak (matmul.cu's fma_peak) {gpu['peak']:.0f} GFLOP/s.", ""]
        lines += table(data["gpu_rows"], ["cuBLAS", "torch"])
    lines.append("")
    if png:
        lines += [f"![matmul GFLOP/s, version by version]({png})", ""]
    return lines


def plot_versions(data, path):
    """A figure of measure_versions' data: per device, each timed version's GFLOP/s as a bar (log scale),
    the references (numpy or cuBLAS, torch, the FMA peak) as lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [("CPU", data["cpu_rows"], data["cpu"], ["numpy", "torch", "peak"])]
    if data["gpu"] is not None:
        panels.append(("GPU", data["gpu_rows"], data["gpu"], ["cuBLAS", "torch", "peak"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (device, rows, info, refs) in zip(axes[0], panels):
        timed = [r for r in rows if r["gflops"]]
        ax.bar([r["name"] for r in timed], [r["gflops"] for r in timed], color="tab:blue")
        for ref, style in zip(refs, ["--", ":", "-"]):
            if info.get(ref):
                ax.axhline(info[ref], color="black", linestyle=style, label=f"{ref} {info[ref]:.0f}")
        ax.set_yscale("log")
        ax.set_ylabel("GFLOP/s (log scale)")
        n = data["n"] if device == "CPU" else data["gpu_n"]
        ax.set_title(f"{device}: {info['name']}, n = {n}" if timed else f"{device}: no versions timed", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5, help="rounds (each library times each size once a round)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--versions", action="store_true",
                        help="check, then time every version of the matmul chapter (CPU and, with a GPU, CUDA)")
    parser.add_argument("--n", type=int, help="--versions: n of the CPU rows (default 1024) and of the GPU rows "
                        "unless --gpu-n is given")
    parser.add_argument("--gpu-n", type=int, help="--versions: n of the GPU rows (default 4096, or --n if given)")
    parser.add_argument("--no-torch", action="store_true", help="--versions: leave torch out (it is slow to import)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # internal: the child process of one library
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.threads)
        return
    if args.versions:
        torch = limit_threads(args.threads, torch=not args.no_torch)
        gpu, skipped = gpu_context(with_torch=not args.no_torch)
        data = measure_versions(args.n or 1024, args.threads, args.gpu_n or args.n or 4096, gpu, skipped, torch)
        print(json.dumps(data) if args.json else "\n".join(versions_table(data)))
        return
    # One process per library (this one imports none of them), taking turns.
    data = measure(args.sizes, args.threads, args.repeat)
    if args.json:
        print(json.dumps(data))
        return
    print(f"matmul float32, n x n @ n x n, GFLOP/s (median of {args.repeat} rounds), {args.threads} thread(s)")
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical cores)")
    print_table(data)


if __name__ == "__main__":
    main()
