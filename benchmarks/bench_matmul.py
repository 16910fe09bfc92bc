"""Square float32 matmul, n x n @ n x n: minidl's C++ kernel vs numpy (OpenBLAS) vs PyTorch.

    .venv/bin/python -m benchmarks.bench_matmul                 # 1 thread each
    .venv/bin/python -m benchmarks.bench_matmul --threads 2 --sizes 256 512
    .venv/bin/python -m benchmarks.bench_matmul --json          # the numbers as JSON, for `python -m benchmarks`

Prints GFLOP/s (2*n^3 FLOPs) and the ratio minidl / numpy (and minidl / torch). Each
library gets the same thread count and runs in a process of its own (the others' thread
pools are then not even started, so nothing spins on the cores it needs), and the three
processes take turns: in each of --repeat rounds, every library times every size once.
On a shared machine the speed of a core drifts by up to 1.5x over seconds (another
tenant's work on the same physical core), so timing one library after the other would
compare different machines; a ratio taken within one round compares neighbours in time.
The table shows each library's median GFLOP/s over the rounds and the median of the
per-round ratios.
"""
import argparse
import json
import os
import subprocess
import sys
import time
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5, help="rounds (each library times each size once a round)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # internal: the child process of one library
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.threads)
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
