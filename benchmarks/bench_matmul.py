"""Square float32 matmul, n x n @ n x n: minidl's C++ kernel vs numpy (OpenBLAS) vs PyTorch.

    .venv/bin/python -m benchmarks.bench_matmul                 # 1 thread each
    .venv/bin/python -m benchmarks.bench_matmul --threads 2 --sizes 256 512
    .venv/bin/python -m benchmarks.bench_matmul --json          # the numbers as JSON, for `python -m benchmarks`

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


def measure(sizes, threads=1, repeat=5, libraries=("minidl", "numpy", "torch")):
    """GFLOP/s of each library at each size, each library timed in a fresh process with ``threads`` threads.

    Returns {"threads", "repeat", "libraries": [names], "rows": [{"n": n, "minidl": GFLOP/s, "numpy": ..., ...}]};
    "torch" is left out where torch is not installed."""
    results = {}
    for name in libraries:
        cmd = [sys.executable, "-m", "benchmarks.bench_matmul", "--only", name, "--threads", str(threads),
               "--repeat", str(repeat), "--sizes", *map(str, sizes)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr}")
        out = json.loads(r.stdout.splitlines()[-1])
        if out is not None:  # None: torch is not installed
            results[name] = {int(n): g for n, g in out.items()}
    return {"threads": threads, "repeat": repeat, "libraries": list(results),
            "rows": [{"n": n, **{lib: results[lib][n] for lib in results}} for n in sizes]}


def print_table(data):
    libraries = data["libraries"]
    others = [name for name in libraries if name != "minidl"]
    print("".join(f"{h:>10}" for h in ["n", *libraries]) + "".join(f"{'minidl/' + o:>14}" for o in others))
    for row in data["rows"]:
        line = f"{row['n']:>10}" + "".join(f"{row[name]:>10.1f}" for name in libraries)
        line += "".join(f"{row['minidl'] / row[o]:>14.2f}" for o in others)
        print(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # internal: time one library, print JSON
    args = parser.parse_args()

    if args.only:  # the child process: time one library, report to the parent
        torch = limit_threads(args.threads, torch=args.only == "torch")
        import numpy as np

        from minidl.backend import cpu
        if args.only == "torch" and torch is None:
            print(json.dumps(None))
            return
        library = {"minidl": cpu.matmul, "numpy": np.matmul,
                   "torch": lambda a, b: torch.matmul(torch.from_numpy(a), torch.from_numpy(b))}[args.only]
        rng = np.random.default_rng(0)
        out = {}
        for n in args.sizes:
            a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
            out[n] = gflops(lambda: library(a, b), n, args.repeat)
        print(json.dumps(out))
        return

    # One library at a time, each in a fresh process (this one imports none of them).
    data = measure(args.sizes, args.threads, args.repeat)
    if args.json:
        print(json.dumps(data))
        return
    print(f"matmul float32, n x n @ n x n, GFLOP/s (median of {args.repeat}), {args.threads} thread(s)")
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical cores)")
    print_table(data)


if __name__ == "__main__":
    main()
