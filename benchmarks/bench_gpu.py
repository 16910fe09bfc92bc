"""GPU kernels: minidl's CUDA kernels (csrc/cuda) vs cuBLAS (through CuPy) and vs PyTorch on the GPU.

    .venv/bin/python -m benchmarks.bench_gpu                 # needs a GPU; prints "no GPU: skipped" otherwise
    .venv/bin/python -m benchmarks.bench_gpu --sizes 1024 4096 --json     # without a GPU: {"device": null, ...}
    .venv/bin/python -m benchmarks.bench_gpu --versions [--rows R --cols C]   # reduce.cu, version by version

Tables (GPU time per call from CUDA events, median of --repeat runs after a warm-up):
  * square float32 matmul: matmul_naive and matmul_tiled GFLOP/s, cupy.matmul (cuBLAS)
    and torch.matmul, and the ratio tiled / cuBLAS;
  * conv2d forward (im2col + matmul_tiled) vs torch (cuDNN), softmax and a row sum vs torch;
  * one training step (forward, backward, SGD) of a small CNN on minidl "cuda" vs torch.
GPU figures go to RESULTS.md only from a run on a real GPU, with the device named.

--versions: the memory-bound chapter, csrc/cuda/reduce.cu's row sums (REDUCE_VERSIONS): each
version checked against numpy, then its GB/s (bytes read + written per second) as a fraction
of the measured bandwidth, that of a device-to-device copy (cupy.copyto). (The compute-bound
chapter, matmul.cu's versions, is `python -m benchmarks.bench_matmul --versions`.)
"""
import argparse
import json
import sys
from dataclasses import dataclass

import numpy as np


def gpu_or_none():
    """(cupy, device name) where a CUDA GPU is visible, else None."""
    from minidl.backend.cuda import gpu_count
    if gpu_count() == 0:
        return None
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    return cupy, props["name"].decode()


def gpu_time(cupy, fn, repeat):
    """Seconds per call on the GPU: CUDA events around each call, median of ``repeat``."""
    fn()
    cupy.cuda.Device().synchronize()
    times = []
    for _ in range(repeat):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    times.sort()
    return times[len(times) // 2]


def torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def bench_matmul(cupy, be, torch, sizes, repeat):
    rows = []
    for n in sizes:
        a = cupy.random.standard_normal((n, n), dtype=np.float32)
        b = cupy.random.standard_normal((n, n), dtype=np.float32)
        flops = 2 * n ** 3
        row = {"n": n}
        for version in ("naive", "tiled"):
            row[version] = flops / gpu_time(cupy, lambda: be.kernels.matmul(a, b, version=version), repeat) / 1e9
        row["cublas"] = flops / gpu_time(cupy, lambda: cupy.matmul(a, b), repeat) / 1e9
        if torch is not None:
            ta, tb = torch.as_tensor(a, device="cuda"), torch.as_tensor(b, device="cuda")
            row["torch"] = flops / gpu_time(cupy, lambda: torch.matmul(ta, tb), repeat) / 1e9
        rows.append(row)
    return rows


def bench_ops(cupy, be, torch, repeat, batch=64, channels=64, side=56, rows=4096, cols=1000):
    """conv2d 3x3 (im2col + matmul_tiled) vs torch (cuDNN); softmax and a row sum vs torch."""
    x = cupy.random.standard_normal((batch, channels, side, side), dtype=np.float32)
    w = cupy.random.standard_normal((channels, channels, 3, 3), dtype=np.float32)
    s = cupy.random.standard_normal((rows, cols), dtype=np.float32)
    cases = [(f"conv2d {batch}x{channels}x{side}x{side}, 3x3", 2 * batch * channels * side * side * channels * 9,
              lambda: be.conv2d(x, w, (1, 1), (1, 1), (1, 1), 1),
              lambda tx, tw, ts: lambda: torch.nn.functional.conv2d(tx, tw, padding=1)),
             (f"softmax {rows}x{cols}", None, lambda: be.softmax(s, 1),
              lambda tx, tw, ts: lambda: torch.softmax(ts, 1)),
             (f"row sums {rows}x{cols}", None, lambda: be.sum(s, axis=1),
              lambda tx, tw, ts: lambda: ts.sum(1))]
    results = []
    for name, flops, fn, make_torch in cases:
        row = {"op": name, "minidl_ms": gpu_time(cupy, fn, repeat) * 1e3}
        if flops:
            row["minidl_gflops"] = flops / row["minidl_ms"] / 1e6
        if torch is not None:
            torch_fn = make_torch(*(torch.as_tensor(a, device="cuda") for a in (x, w, s)))
            row["torch_ms"] = gpu_time(cupy, torch_fn, repeat) * 1e3
        results.append(row)
    return results


def small_cnn(nn, channels=(32, 64), classes=10):
    """The benchmarked model, built from minidl.nn or torch.nn (the same layer names)."""
    c1, c2 = channels
    return nn.Sequential(nn.Conv2d(3, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(c2, classes))


def bench_train_step(cupy, torch, repeat, device="cuda", batch=64, side=64, channels=(32, 64)):
    """One SGD step (forward, cross-entropy, backward, update) of small_cnn on minidl's device vs torch."""
    import minidl
    from minidl import nn

    x_host = np.random.default_rng(0).standard_normal((batch, 3, side, side)).astype(np.float32)
    y_host = np.random.default_rng(1).integers(0, 10, batch)
    model = small_cnn(nn, channels).to(device)
    opt = minidl.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = minidl.tensor(x_host, device=device), minidl.tensor(y_host, device=device)

    def step():
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    row = {"minidl_ms": gpu_time(cupy, step, repeat) * 1e3}
    if torch is not None:
        torch_model = small_cnn(torch.nn, channels).cuda()
        torch_opt = torch.optim.SGD(torch_model.parameters(), lr=0.01, momentum=0.9)
        tx, ty = torch.as_tensor(x_host, device="cuda"), torch.as_tensor(y_host, device="cuda")

        def torch_step():
            loss = torch.nn.functional.cross_entropy(torch_model(tx), ty)
            torch_opt.zero_grad()
            loss.backward()
            torch_opt.step()

        row["torch_ms"] = gpu_time(cupy, torch_step, repeat) * 1e3
    return row


# ---------------------------------------------------------------- --versions: reduce.cu, one row per version

@dataclass(frozen=True)
class ReduceVersion:
    """One kernel of csrc/cuda/reduce.cu: one thread per row (v1) or one block per row (v2, v3)."""
    name: str
    kernel: str
    idea: str
    block_per_row: bool


REDUCE_VERSIONS = (
    ReduceVersion("v1", "reduce_rows_naive", "one thread per row, looping along it", False),
    ReduceVersion("v2", "reduce_rows_tree", "a block per row: coalesced reads, a shared-memory tree", True),
    ReduceVersion("v3", "reduce_rows", "warp shuffles: no memory, no barrier inside a warp (minidl's kernel)", True),
)


def launch_reduce_version(kernels, version, op, x, out):
    """out[r] = op over x[r, :] (op: "sum", "max", "min" or "mean") for a contiguous float32 (rows, R)
    array x on the device of ``kernels`` (get_backend("cuda" or "emu").kernels), with one version."""
    from minidl.backend.cuda import REDUCE, reduction_threads
    rows, R = x.shape
    args = (np.int32(REDUCE[op]), x, out, np.int64(rows), np.int64(R))
    if version.block_per_row:
        threads = reduction_threads(R)
        kernels.launch("reduce", version.kernel, (rows,), (threads,), args, shared_mem=4 * threads)
    else:
        kernels.launch("reduce", version.kernel, (-(-rows // 256),), (256,), args)


def bench_reduce_versions(cupy, be, rows, cols, repeat):
    """Row sums of a (rows, cols) float32 matrix by each version: checked against numpy, then timed.
    Returns {"shape", "copy_gbs", "rows": [{"name", "label", "status", "gbs", "of_copy"}]}."""
    host = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
    x, out = cupy.asarray(host), cupy.empty(rows, dtype=np.float32)
    ref = host.astype(np.float64).sum(axis=1)
    copy = cupy.empty_like(x)
    copy_gbs = 2 * x.nbytes / gpu_time(cupy, lambda: cupy.copyto(copy, x), repeat) / 1e9
    nbytes = x.nbytes + out.nbytes
    to_host = getattr(cupy, "asnumpy", np.asarray)
    results = []
    for v in REDUCE_VERSIONS:
        label = f"{v.kernel}: {v.idea}"
        out.fill(np.nan)  # a row the kernel does not write stays NaN
        launch_reduce_version(be.kernels, v, "sum", x, out)
        got = to_host(out)
        error = float(np.abs(got - ref).max()) / max(float(np.abs(host).sum(axis=1).max()), 1e-30)
        if not (np.isfinite(got).all() and error <= 1e-5):
            results.append({"name": v.name, "label": label, "status": f"FAILED: max error {error:.1e}",
                            "gbs": None, "of_copy": None})
            continue
        gbs = nbytes / gpu_time(cupy, lambda: launch_reduce_version(be.kernels, v, "sum", x, out), repeat) / 1e9
        results.append({"name": v.name, "label": label, "status": "ok", "gbs": gbs, "of_copy": gbs / copy_gbs})
    return {"shape": [rows, cols], "copy_gbs": copy_gbs, "rows": results}


def print_reduce_versions(results):
    rows, cols = results["shape"]
    print(f"GPU: {results['device']}")
    print(f"row sums of a {rows} x {cols} float32 matrix ({4 * rows * cols / 2**20:.0f} MiB), each version checked "
          f"against numpy first; device copy {results['copy_gbs']:.0f} GB/s (measured bandwidth)")
    print(f"{'version':<9}{'GB/s':>8}{'of copy':>9}  kernel")
    for r in results["rows"]:
        if r["status"] != "ok":
            print(f"{r['name']:<9}{r['status']}  ({r['label']})")
        else:
            print(f"{r['name']:<9}{r['gbs']:>8.0f}{r['of_copy']:>9.2f}  {r['label']}")


def reduce_versions_section(data, how):
    """RESULTS.md's lines for `bench_gpu --versions --json`'s output (or a line saying it did not run)."""
    if data.get("device") is None:
        return ["## Reduction, version by version", "", f"Not run: no GPU visible ({data['skipped']}). {how}.", ""]
    rows, cols = data["shape"]
    table = ["| version | GB/s | of device copy | kernel |", "| --- | --- | --- | --- |"]
    for r in data["rows"]:
        numbers = [f"{r['gbs']:.0f}", f"{r['of_copy']:.2f}"] if r["status"] == "ok" else [r["status"], ""]
        table.append(f"| {r['name']} | " + " | ".join(numbers) + f" | {r['label']} |")
    return ["## Reduction, version by version", "",
            f"{how}. GPU: {data['device']}. Row sums of a {rows} x {cols} float32 matrix, each version checked "
            f"against numpy first; a device-to-device copy moves {data['copy_gbs']:.0f} GB/s (the measured bandwidth).",
            "", *table, ""]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 2048, 4096])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--versions", action="store_true", help="only reduce.cu's versions, in GB/s")
    parser.add_argument("--rows", type=int, default=16384, help="--versions: rows of the summed matrix")
    parser.add_argument("--cols", type=int, default=2048, help="--versions: its row length")
    args = parser.parse_args(argv)
    found = gpu_or_none()
    if found is None:
        reason = "CuPy sees no CUDA device; the kernels are tested on 'emu' instead"
        print(json.dumps({"device": None, "skipped": reason}) if args.json
              else f"bench_gpu: no GPU: skipped ({reason})")
        return 0
    cupy, device = found
    from minidl.backend import get_backend
    if args.versions:
        results = {"device": device, **bench_reduce_versions(cupy, get_backend("cuda"), args.rows, args.cols,
                                                             args.repeat)}
        print(json.dumps(results)) if args.json else print_reduce_versions(results)
        return 0
    be, torch = get_backend("cuda"), torch_cuda()
    results = {"device": device, "matmul": bench_matmul(cupy, be, torch, args.sizes, args.repeat),
               "ops": bench_ops(cupy, be, torch, args.repeat), "train_step": bench_train_step(cupy, torch, args.repeat)}
    if args.json:
        print(json.dumps(results))
    else:
        print_tables(results, torch is not None)
    return 0


def print_tables(results, with_torch):
    print(f"GPU: {results['device']}   (torch on the GPU: {'yes' if with_torch else 'no'})\n")
    print(f"{'n':>6} {'naive GF/s':>11} {'tiled GF/s':>11} {'cuBLAS GF/s':>12} {'torch GF/s':>11} {'tiled/cuBLAS':>13}")
    for r in results["matmul"]:
        print(f"{r['n']:>6} {r['naive']:>11.0f} {r['tiled']:>11.0f} {r['cublas']:>12.0f} "
              f"{r.get('torch', float('nan')):>11.0f} {r['tiled'] / r['cublas']:>13.2f}")
    print()
    for r in results["ops"]:
        print(f"{r['op']:<30} minidl {r['minidl_ms']:8.3f} ms   torch {r.get('torch_ms', float('nan')):8.3f} ms")
    t = results["train_step"]
    print(f"\ntraining step (small CNN, batch 64, 64x64): minidl {t['minidl_ms']:.2f} ms   "
          f"torch {t.get('torch_ms', float('nan')):.2f} ms")

if __name__ == "__main__":
    sys.exit(main())
