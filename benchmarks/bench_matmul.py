"""Square float32 matmul, n x n @ n x n: minidl's C++ kernel vs numpy (OpenBLAS) vs PyTorch.

    make bench                                   # 1 thread each
    .venv/bin/python -m benchmarks.bench_matmul --threads 2 --sizes 256 512

Prints GFLOP/s (2*n^3 FLOPs, median of --repeat runs after one warm-up) and the
ratio minidl / numpy (and minidl / torch). Each library gets the same thread count
and runs in its own process (the others' thread pools are then not even started, so
nothing spins on the cores it needs).
"""
import argparse
import json
import os
import subprocess
import sys
import time

from .common import cpu_model, limit_threads


def gflops(fn, n, repeat):
    fn()  # warm-up: page in buffers, start thread pools
    # Each sample times enough calls to last >= 20 ms: single calls of a small product
    # are too short to time on a busy machine.
    t = time.perf_counter()
    fn()
    calls = max(1, int(0.02 / max(time.perf_counter() - t, 1e-6)))
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t) / calls)
    times.sort()
    return 2 * n**3 / times[len(times) // 2] / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", help=argparse.SUPPRESS)  # internal: time one library, print JSON
    args = parser.parse_args()

    torch = limit_threads(args.threads)
    import numpy as np

    from minidl.backend import cpu

    libraries = {"minidl": cpu.matmul, "numpy": np.matmul}
    if torch:
        libraries["torch"] = lambda a, b: torch.matmul(torch.from_numpy(a), torch.from_numpy(b))
    if args.only:  # the child process: time one library, report to the parent
        rng = np.random.default_rng(0)
        out = {}
        for n in args.sizes:
            a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
            out[n] = gflops(lambda: libraries[args.only](a, b), n, args.repeat)
        print(json.dumps(out))
        return

    print(f"matmul float32, n x n @ n x n, GFLOP/s (median of {args.repeat}), {args.threads} thread(s)")
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical cores); numpy {np.__version__}"
          + (f", torch {torch.__version__}" if torch else ", torch not installed"))
    # One library at a time, each in a fresh process.
    results = {}
    for name in libraries:
        cmd = [sys.executable, "-m", "benchmarks.bench_matmul", "--only", name, "--threads", str(args.threads),
               "--repeat", str(args.repeat), "--sizes", *map(str, args.sizes)]
        out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        results.update({(name, int(n)): g for n, g in out.items()})

    others = [name for name in libraries if name != "minidl"]
    print("".join(f"{h:>10}" for h in ["n", *libraries]) + "".join(f"{'minidl/' + o:>14}" for o in others))
    for n in args.sizes:
        row = f"{n:>10}" + "".join(f"{results[name, n]:>10.1f}" for name in libraries)
        row += "".join(f"{results['minidl', n] / results[o, n]:>14.2f}" for o in others)
        print(row)

if __name__ == "__main__":
    main()
