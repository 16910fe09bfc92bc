"""GPU kernels: minidl's CUDA kernels (csrc/cuda) vs cuBLAS (through CuPy) and vs PyTorch on the GPU.

    .venv/bin/python -m benchmarks.bench_gpu                 # needs a GPU; prints "no GPU: skipped" otherwise
    .venv/bin/python -m benchmarks.bench_gpu --quick         # smaller sizes, for make gpu-check (a minute)
    .venv/bin/python -m benchmarks.bench_gpu --json          # without a GPU: {"device": null, "skipped": why}
    .venv/bin/python -m benchmarks.bench_gpu --versions [--rows R --cols C]   # reduce.cu, version by version

Every kernel is first checked against the numpy reference (float64) on the same inputs, and
timed only if it agrees (a wrong kernel is reported FAILED, not timed, and the exit status is 1).
Times are GPU times per call from CUDA events, median of --repeat runs after a warm-up.
  * float32 matmul, square and not (sizes that are not multiples of the 64-wide tiles):
    matmul_naive and matmul_tiled GFLOP/s, cupy.matmul (cuBLAS) and torch.matmul;
  * the hot ops forward and backward: conv2d (im2col + matmul_tiled) and its two gradients vs
    cuDNN, in GFLOP/s; the memory-bound ones (softmax, row sums, ReLU, batch norm forward and
    backward) in GB/s, the bytes they must read and write over the time;
  * one training step (forward, cross-entropy, backward, SGD) of a small CNN and of
    EfficientNet-Lite0 on minidl "cuda" vs torch.
PyTorch runs with TF32 off (torch.backends.cuda.matmul.allow_tf32 = cudnn.allow_tf32 = False):
minidl's kernels compute in full float32, and so does the comparison.
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

from minidl.backend import numpy_ref

# (M, K, N): square ones, then shapes that are not multiples of the kernels' 64-wide tiles
MATMUL_SHAPES = [(256, 256, 256), (1024, 1024, 1024), (4096, 4096, 4096), (1000, 777, 513), (4097, 1000, 63),
                 (129, 4096, 2049)]
QUICK_MATMUL_SHAPES = [(1024, 1024, 1024), (1000, 777, 513), (4097, 1000, 63)]
TOLERANCE = 1e-3   # max |minidl - reference| / max |reference| (float32 sums in another order; nvcc's FMAs)


def gpu_or_none():
    """(cupy, device name) where the "cuda" device works, else None."""
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
    """torch, on the GPU and with TF32 off (full float32, as minidl computes), or None."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch


def check(got, ref, to_host=np.asarray, tolerance=TOLERANCE):
    """"ok" when a kernel's output matches the float64 reference, else "FAILED: ..." (checked before timing)."""
    got = np.asarray(to_host(got), dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        return f"FAILED: shape {got.shape}, expected {ref.shape}"
    if not np.isfinite(got).all():
        return "FAILED: not finite"
    error = float(np.abs(got - ref).max()) / max(float(np.abs(ref).max()), 1e-30)
    return "ok" if error <= tolerance else f"FAILED: max error {error:.1e} of the largest value"


def host(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def bench_matmul(cupy, be, torch, shapes, repeat):
    """Each (M, K, N): the naive and tiled kernels checked against numpy, then GFLOP/s beside cuBLAS and torch."""
    rng, rows = np.random.default_rng(0), []
    to_host = getattr(cupy, "asnumpy", np.asarray)
    for m, k, n in shapes:
        a_host, b_host = host(rng, m, k), host(rng, k, n)
        a, b = cupy.asarray(a_host), cupy.asarray(b_host)
        ref = a_host.astype(np.float64) @ b_host
        flops = 2 * m * k * n
        row = {"shape": [m, k, n], "status": "ok"}
        for version in ("naive", "tiled"):
            status = check(be.kernels.matmul(a, b, version=version), ref, to_host)
            if status != "ok":
                row["status"], row[version] = f"{version}: {status}", None
                continue
            row[version] = flops / gpu_time(cupy, lambda: be.kernels.matmul(a, b, version=version), repeat) / 1e9
        row["cublas"] = flops / gpu_time(cupy, lambda: cupy.matmul(a, b), repeat) / 1e9
        if torch is not None:
            ta, tb = torch.as_tensor(a, device="cuda"), torch.as_tensor(b, device="cuda")
            row["torch"] = flops / gpu_time(cupy, lambda: torch.matmul(ta, tb), repeat) / 1e9
        rows.append(row)
    return rows


@dataclass
class OpCase:
    """One kernel call to check and time: ``run()`` on the device, ``reference()`` in float64 on the host;
    ``flops`` (compute-bound: GFLOP/s) or ``nbytes`` (memory-bound: the bytes it must move, GB/s)."""
    op: str
    direction: str
    run: object
    reference: object
    flops: int = 0
    nbytes: int = 0
    torch: object = None   # (torch module, device arrays) -> a function to time, or None


def op_cases(cupy, be, batch=32, channels=40, out_channels=72, side=50, rows=4000, cols=1000):
    """The hot ops, forward and backward, at sizes that are not multiples of 32 or 64."""
    rng = np.random.default_rng(0)
    x_h, w_h = host(rng, batch, channels, side, side), host(rng, out_channels, channels, 3, 3)
    g_h, dy_h = host(rng, batch, out_channels, side, side), host(rng, batch, out_channels, side, side)
    s_h = host(rng, rows, cols)
    gamma_h, beta_h = 1 + 0.1 * host(rng, out_channels), 0.1 * host(rng, out_channels)
    x, w, g, dy, s, gamma, beta = (cupy.asarray(a) for a in (x_h, w_h, g_h, dy_h, s_h, gamma_h, beta_h))
    x64, w64, g64, dy64, s64, gamma64, beta64 = (a.astype(np.float64)
                                                 for a in (x_h, w_h, g_h, dy_h, s_h, gamma_h, beta_h))
    conv = ((1, 1), (1, 1), (1, 1), 1)   # stride, padding, dilation, groups
    conv_flops = 2 * batch * out_channels * side * side * channels * 9
    _, mean64, _, invstd64 = numpy_ref.batch_norm(g64, gamma64, beta64, 1e-5)
    mean, invstd = cupy.asarray(mean64.astype(np.float32)), cupy.asarray(invstd64.astype(np.float32))
    F = 4   # bytes per float32
    return [
        OpCase("conv2d 3x3", "forward", lambda: be.conv2d(x, w, *conv), lambda: numpy_ref.conv2d(x64, w64, *conv),
               flops=conv_flops, torch=lambda t, a: lambda: t.nn.functional.conv2d(a["x"], a["w"], padding=1)),
        OpCase("conv2d 3x3", "backward (input)", lambda: be.conv2d_backward_data(g, w, x.shape, *conv),
               lambda: numpy_ref.conv2d_backward_data(g64, w64, x64.shape, *conv), flops=conv_flops,
               torch=lambda t, a: lambda: t.nn.grad.conv2d_input(a["x"].shape, a["w"], a["g"], padding=1)),
        OpCase("conv2d 3x3", "backward (weight)", lambda: be.conv2d_backward_weight(g, x, w.shape, *conv),
               lambda: numpy_ref.conv2d_backward_weight(g64, x64, w64.shape, *conv), flops=conv_flops,
               torch=lambda t, a: lambda: t.nn.grad.conv2d_weight(a["x"], a["w"].shape, a["g"], padding=1)),
        OpCase("softmax", "forward", lambda: be.softmax(s, 1), lambda: numpy_ref.softmax(s64, 1),
               nbytes=2 * F * rows * cols, torch=lambda t, a: lambda: t.softmax(a["s"], 1)),
        OpCase("row sums", "forward", lambda: be.sum(s, axis=1), lambda: s64.sum(axis=1),
               nbytes=F * (rows * cols + rows), torch=lambda t, a: lambda: a["s"].sum(1)),
        OpCase("relu", "forward", lambda: be.relu(g), lambda: np.maximum(g64, 0), nbytes=2 * F * g_h.size,
               torch=lambda t, a: lambda: t.relu(a["g"])),
        OpCase("batch norm", "forward", lambda: be.batch_norm(g, gamma, beta, 1e-5)[0],
               lambda: numpy_ref.batch_norm(g64, gamma64, beta64, 1e-5)[0], nbytes=2 * F * g_h.size,
               torch=lambda t, a: lambda: t.nn.functional.batch_norm(a["g"], None, None, a["gamma"], a["beta"],
                                                                     training=True, eps=1e-5)),
        OpCase("batch norm", "backward", lambda: be.batch_norm_backward(dy, g, gamma, mean, invstd)[0],
               lambda: numpy_ref.batch_norm_backward(dy64, g64, gamma64, mean64, invstd64)[0],
               nbytes=3 * F * g_h.size),
    ], {"x": x, "w": w, "g": g, "s": s, "gamma": gamma, "beta": beta}


def bench_ops(cupy, be, torch, repeat, **sizes):
    """Each case of op_cases checked against the reference, then timed (GFLOP/s or GB/s) beside torch."""
    cases, arrays = op_cases(cupy, be, **sizes)
    to_host = getattr(cupy, "asnumpy", np.asarray)
    results = []
    for case in cases:
        row = {"op": case.op, "direction": case.direction, "status": check(case.run(), case.reference(), to_host)}
        if row["status"] == "ok":
            row["minidl_ms"] = gpu_time(cupy, case.run, repeat) * 1e3
            if case.flops:
                row["minidl_gflops"] = case.flops / row["minidl_ms"] / 1e6
            if case.nbytes:
                row["minidl_gbs"] = case.nbytes / row["minidl_ms"] / 1e6
        if torch is not None and case.torch is not None:
            torch_arrays = {k: torch.as_tensor(v, device="cuda") for k, v in arrays.items()}
            row["torch_ms"] = gpu_time(cupy, case.torch(torch, torch_arrays), repeat) * 1e3
        results.append(row)
    return results


def small_cnn(nn, channels=(32, 64), classes=10):
    """The benchmarked small model, built from minidl.nn or torch.nn (the same layer names)."""
    c1, c2 = channels
    return nn.Sequential(nn.Conv2d(3, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(c2, classes))


def train_models(name, torch=None, channels=(32, 64), classes=10):
    """(minidl model, torch model or None) for a training step: "small_cnn" or "lite0" (EfficientNet-Lite0)."""
    from minidl import nn
    if name == "small_cnn":
        return small_cnn(nn, channels, classes), (small_cnn(torch.nn, channels, classes) if torch else None)
    if name == "lite0":
        from benchmarks.torch_twins import torch_lite0
        from minidl.vision import efficientnet_lite0
        return efficientnet_lite0(num_classes=classes), (torch_lite0(torch, classes) if torch else None)
    raise ValueError(f"train_models: unknown model {name!r} (small_cnn, lite0)")


def bench_train_step(cupy, torch, repeat, device="cuda", batch=64, side=64, channels=(32, 64), model="small_cnn"):
    """One SGD step (forward, cross-entropy, backward, update) of ``model`` on minidl's device vs torch."""
    import minidl
    from minidl import nn

    x_host = np.random.default_rng(0).standard_normal((batch, 3, side, side)).astype(np.float32)
    y_host = np.random.default_rng(1).integers(0, 10, batch)
    net, torch_net = train_models(model, torch, channels)
    net = net.to(device)
    opt = minidl.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = minidl.tensor(x_host, device=device), minidl.tensor(y_host, device=device)

    def step():
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    row = {"model": model, "batch": batch, "side": side, "minidl_ms": gpu_time(cupy, step, repeat) * 1e3}
    if torch_net is not None:
        torch_net = torch_net.cuda()
        torch_opt = torch.optim.SGD(torch_net.parameters(), lr=0.01, momentum=0.9)
        tx, ty = torch.as_tensor(x_host, device="cuda"), torch.as_tensor(y_host, device="cuda")

        def torch_step():
            loss = torch.nn.functional.cross_entropy(torch_net(tx), ty)
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
    parser.add_argument("--shapes", nargs="+", metavar="MxKxN",
                        help="matmul shapes (default: square ones and ones off the tile grid)")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="fewer and smaller sizes (make gpu-check)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--versions", action="store_true", help="only reduce.cu's versions, in GB/s")
    parser.add_argument("--rows", type=int, default=16384, help="--versions: rows of the summed matrix")
    parser.add_argument("--cols", type=int, default=2048, help="--versions: its row length")
    args = parser.parse_args(argv)
    found = gpu_or_none()
    if found is None:
        from minidl.backend.cuda import cuda_unavailable_reason
        reason = f"{cuda_unavailable_reason()}; the kernels are tested on 'emu' instead"
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
    shapes = ([tuple(int(v) for v in s.lower().split("x")) for s in args.shapes] if args.shapes
              else QUICK_MATMUL_SHAPES if args.quick else MATMUL_SHAPES)
    repeat = min(args.repeat, 5) if args.quick else args.repeat
    steps = [dict(model="small_cnn", batch=64, side=64), dict(model="lite0", batch=32 if args.quick else 64,
                                                                    side=128 if args.quick else 224)]
    results = {"device": device, "torch": torch is not None,
               "matmul": bench_matmul(cupy, be, torch, shapes, repeat),
               "ops": bench_ops(cupy, be, torch, repeat),
               "train_steps": [bench_train_step(cupy, torch, repeat, **step) for step in steps]}
    results["failed"] = failures(results)
    if args.json:
        print(json.dumps(results))
    else:
        print_tables(results, torch is not None)
    return 1 if results["failed"] and not args.json else 0   # --json (make bench): the JSON lists them


def failures(results):
    """The kernels that disagreed with the reference (and were not timed)."""
    return ([f"matmul {'x'.join(map(str, r['shape']))}: {r['status']}" for r in results["matmul"]
             if r["status"] != "ok"] +
            [f"{r['op']} {r['direction']}: {r['status']}" for r in results["ops"] if r["status"] != "ok"])


def fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def print_tables(results, with_torch):
    print(f"GPU: {results['device']}   (torch on the GPU: {'yes, TF32 off' if with_torch else 'no'}; "
          f"every kernel checked against numpy before it is timed)\n")
    print(f"{'M x K x N':>18} {'naive GF/s':>11} {'tiled GF/s':>11} {'cuBLAS GF/s':>12} {'torch GF/s':>11} "
          f"{'tiled/cuBLAS':>13}  check")
    for r in results["matmul"]:
        ratio = r["tiled"] / r["cublas"] if r.get("tiled") else None
        print(f"{'x'.join(map(str, r['shape'])):>18} {fmt(r.get('naive'), '11.0f')} {fmt(r.get('tiled'), '11.0f')} "
              f"{r['cublas']:>12.0f} {fmt(r.get('torch'), '11.0f')} {fmt(ratio, '13.2f')}  {r['status']}")
    print(f"\n{'op':<34} {'minidl ms':>10} {'GFLOP/s':>8} {'GB/s':>7} {'torch ms':>9}  check")
    for r in results["ops"]:
        print(f"{r['op'] + ', ' + r['direction']:<34} {fmt(r.get('minidl_ms'), '10.3f')} "
              f"{fmt(r.get('minidl_gflops'), '8.0f')} {fmt(r.get('minidl_gbs'), '7.0f')} "
              f"{fmt(r.get('torch_ms'), '9.3f')}  {r['status']}")
    print()
    for t in results["train_steps"]:
        print(f"training step ({t['model']}, batch {t['batch']}, {t['side']}x{t['side']}): minidl "
              f"{t['minidl_ms']:.2f} ms   torch {fmt(t.get('torch_ms'), '.2f')} ms")
    if results.get("failed"):
        print("\nFAILED (not timed): " + "; ".join(results["failed"]))


if __name__ == "__main__":
    sys.exit(main())
