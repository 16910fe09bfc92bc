"""GPU kernels: minidl's CUDA kernels (csrc/cuda) vs cuBLAS (through CuPy) and vs PyTorch on the GPU.

    .venv/bin/python -m benchmarks.bench_gpu                 # needs a GPU; prints "no GPU: skipped" otherwise
    .venv/bin/python -m benchmarks.bench_gpu --sizes 1024 4096 --json     # without a GPU: {"device": null, ...}

Tables (GPU time per call from CUDA events, median of --repeat runs after a warm-up):
  * square float32 matmul: matmul_naive and matmul_tiled GFLOP/s, cupy.matmul (cuBLAS)
    and torch.matmul, and the ratio tiled / cuBLAS;
  * conv2d forward (im2col + matmul_tiled) vs torch (cuDNN), softmax and a row sum vs torch;
  * one training step (forward, backward, SGD) of a small CNN on minidl "cuda" vs torch.
GPU figures go to RESULTS.md only from a run on a real GPU, with the device named.
"""
import argparse
import json
import sys

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 2048, 4096])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args(argv)
    found = gpu_or_none()
    if found is None:
        reason = "CuPy sees no CUDA device; the kernels are tested on 'emu' instead"
        print(json.dumps({"device": None, "skipped": reason}) if args.json
              else f"bench_gpu: no GPU: skipped ({reason})")
        return 0
    cupy, device = found
    from minidl.backend import get_backend
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
