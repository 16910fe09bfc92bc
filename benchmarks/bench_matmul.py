"""Square float32 matmul, n x n @ n x n: minidl's C++ kernel vs numpy (OpenBLAS) vs PyTorch.

    make bench                                   # 1 thread each
    .venv/bin/python -m benchmarks.bench_matmul --threads 2 --sizes 256 512

Prints GFLOP/s (2*n^3 FLOPs, median of --repeat runs after one warm-up) and the
ratio minidl / numpy (and minidl / torch). Each library gets the same thread count
so that they do not fight over the cores.
"""
import argparse
import os
import platform
import time


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gflops(fn, n, repeat):
    fn()  # warm-up: page in buffers, start thread pools
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return 2 * n**3 / times[len(times) // 2] / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    # Thread counts must be set before numpy (OpenBLAS) and torch start their pools.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np

    from minidl.backend import cpu

    cpu.set_num_threads(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None

    print(f"matmul float32, n x n @ n x n, GFLOP/s (median of {args.repeat}), {args.threads} thread(s)")
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical cores); numpy {np.__version__}"
          + (f", torch {torch.__version__}" if torch else ", torch not installed"))
    libraries = {"minidl": cpu.matmul, "numpy": np.matmul}
    if torch:
        libraries["torch"] = lambda a, b: torch.matmul(torch.from_numpy(a), torch.from_numpy(b))
    rng = np.random.default_rng(0)
    inputs = {n: (rng.standard_normal((n, n), dtype=np.float32),
                  rng.standard_normal((n, n), dtype=np.float32)) for n in args.sizes}
    # One library at a time, with a pause between: an idle thread pool spins for a
    # while before it sleeps, and would steal cores from the next library's pool.
    results = {}
    for name, matmul in libraries.items():
        time.sleep(0.5)
        for n, (a, b) in inputs.items():
            results[name, n] = gflops(lambda: matmul(a, b), n, args.repeat)

    others = [name for name in libraries if name != "minidl"]
    print("".join(f"{h:>10}" for h in ["n", *libraries]) + "".join(f"{'minidl/' + o:>14}" for o in others))
    for n in args.sizes:
        row = f"{n:>10}" + "".join(f"{results[name, n]:>10.1f}" for name in libraries)
        row += "".join(f"{results['minidl', n] / results[o, n]:>14.2f}" for o in others)
        print(row)

if __name__ == "__main__":
    main()
