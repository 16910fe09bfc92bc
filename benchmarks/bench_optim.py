"""Fused optimizer steps and embedding gather/scatter: minidl's C++ kernels vs numpy_ref vs torch.

    .venv/bin/python -m benchmarks.bench_optim                 # 1 thread
    .venv/bin/python -m benchmarks.bench_optim --threads 2 --sizes 1000000 10000000

Prints the median time of --repeat runs (after one warm-up), the bytes each kernel must
move (sgd with momentum: 3 reads + 2 writes per element; adam: 4 reads + 3 writes;
embedding: the rows read and written) as GB/s, and that bandwidth as a fraction of
~25 GB/s per core (a rough single-core DRAM stream figure). torch rows use
torch.optim's fused=False foreach implementation and F.embedding's backward.
"""
import argparse

from .common import limit_threads, median_time

PER_CORE_GBS = 25.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    torch = limit_threads(args.threads)
    import numpy as np

    from minidl.backend import cpu, numpy_ref

    peak = PER_CORE_GBS * args.threads
    print(f"threads={args.threads}, float32, bandwidth vs {peak:.0f} GB/s ({PER_CORE_GBS:.0f} GB/s per core)")
    print(f"{'kernel':<22}{'n':>11}{'minidl ms':>11}{'GB/s':>8}{'%peak':>7}{'numpy ms':>10}{'torch ms':>10}"
          f"{'np/minidl':>10}{'torch/minidl':>13}")

    def row(name, n, nbytes, f_cpp, f_np, f_torch):
        t_c, t_n = median_time(f_cpp, args.repeat), median_time(f_np, args.repeat)
        t_t = median_time(f_torch, args.repeat) if f_torch else float("nan")
        gbs = nbytes / t_c / 1e9
        print(f"{name:<22}{n:>11}{t_c * 1e3:>11.3f}{gbs:>8.1f}{100 * gbs / peak:>6.0f}%{t_n * 1e3:>10.3f}"
              f"{t_t * 1e3:>10.3f}{t_n / t_c:>10.1f}{t_t / t_c:>13.2f}")

    rng = np.random.default_rng(0)
    for n in args.sizes:
        p, g, buf = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
        m, v = np.zeros(n, np.float32), np.ones(n, np.float32)
        f_torch_sgd = f_torch_adam = None
        if torch:
            tp, tg, tb = torch.from_numpy(p.copy()), torch.from_numpy(g), torch.from_numpy(buf.copy())
            tm, tv = torch.zeros(n), torch.ones(n)

            def f_torch_sgd():
                tb.mul_(0.9).add_(tg)
                tp.add_(tb, alpha=-0.01)

            def f_torch_adam():  # the single-tensor Adam of torch.optim.adam
                torch._foreach_lerp_([tm], [tg], 0.1)
                tv.mul_(0.999).addcmul_(tg, tg, value=0.001)
                denom = (tv.sqrt() / 0.5).add_(1e-8)
                tp.addcdiv_(tm, denom, value=-0.001)
        row("sgd_step (momentum)", n, 5 * 4 * n,
            lambda: cpu.sgd_step(p, g, buf, 0.01, 0.9, 0.0, False),
            lambda: numpy_ref.sgd_step(p, g, buf, 0.01, 0.9, 0.0, False), f_torch_sgd)
        row("adam_step", n, 7 * 4 * n,
            lambda: cpu.adam_step(p, g, m, v, 10, 1e-3, 0.9, 0.999, 1e-8, 0.0, False),
            lambda: numpy_ref.adam_step(p, g, m, v, 10, 1e-3, 0.9, 0.999, 1e-8, 0.0, False), f_torch_adam)

    # The recommender's shapes: a batch of ids into a user / item table of width 50.
    for V, D, R in [(1000, 50, 64 * 1024), (100_000, 64, 65536)]:
        w = rng.standard_normal((V, D)).astype(np.float32)
        ids = rng.integers(0, V, size=R)
        gr = rng.standard_normal((R, D)).astype(np.float32)
        f_tf = f_tb = None
        if torch:
            tw, tids, tgr = torch.from_numpy(w), torch.from_numpy(ids), torch.from_numpy(gr)

            def f_tf():
                torch.nn.functional.embedding(tids, tw)

            def f_tb():
                torch.zeros(V, D).index_add_(0, tids, tgr)
        row(f"embedding V={V}", R * D, 2 * 4 * R * D + 8 * R,
            lambda: cpu.embedding(w, ids), lambda: numpy_ref.embedding(w, ids), f_tf)
        row(f"embedding_bwd V={V}", R * D, 4 * (2 * R * D + V * D) + 8 * R,
            lambda: cpu.embedding_backward(gr, ids, V), lambda: numpy_ref.embedding_backward(gr, ids, V), f_tb)


if __name__ == "__main__":
    main()
