"""Data parallelism on this machine: 2 ranks x 1 thread against 1 rank x 2 threads, the pet model's step.

    .venv/bin/python -m benchmarks.bench_distributed                     # batch 16 at 128 px
    .venv/bin/python -m benchmarks.bench_distributed --bs 8 --size 96 --steps 3 --rounds 1

The step is examples/pets.py's, unfrozen: EfficientNet-Lite0 (random weights: the speed is the
same) with fastai's head for 2 classes, cross-entropy, fastai's Adam. One process takes the
whole batch on 1 thread, then on 2 threads; under ``mpiexec -n 2`` each rank takes half of it on
1 thread and the gradients are all-reduced in buckets during backward (DistributedDataParallel).
Printed per configuration: the median step time (the fastest of --rounds interleaved rounds),
images/s and the speed-up over 1 thread; for 2 ranks also the bytes all-reduced per step, the
time the same bytes take to all-reduce on their own (one blocking all-reduce), how long a rank
waited for them after its backward, the part of that after the slower rank's backward had ended
(the rest is imbalance: the ranks share the cores with whatever else runs), and the share of
the all-reduce hidden behind backward = 1 - that part / alone. On one machine the "network" is
shared memory, so this measures the mechanics, not a cluster (the README's cost model does that).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(args):
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import numpy as np

    import minidl
    from minidl import distributed
    from minidl.backend import cpu
    from minidl.nn import CrossEntropyLossFlat
    from minidl.optim import fastai_adam
    from minidl.vision import efficientnet_lite0
    from minidl.vision.learner import create_vision_model

    cpu.set_num_threads(args.threads)
    world = distributed.init()
    minidl.manual_seed(0)
    model = create_vision_model(efficientnet_lite0, 2, pretrained=False)
    ddp = distributed.DistributedDataParallel(model, bucket_mb=args.bucket_mb)
    opt = fastai_adam([{"params": list(model.parameters())}], 1e-3)
    loss_func = CrossEntropyLossFlat()
    part = args.bs // world.size
    rng = np.random.default_rng(world.rank)
    x = minidl.tensor(rng.standard_normal((part, 3, args.size, args.size), dtype=np.float32))
    y = minidl.tensor(rng.integers(0, 2, part))
    model.train()

    times, marks = [], []
    for k in range(args.warmup + args.steps):
        if k == args.warmup:
            ddp.stats = {"steps": 0, "bytes": 0, "wait_s": 0.0}
        distributed.barrier()
        start = time.perf_counter()
        loss_func(model(x), y).backward()
        backward_done = time.perf_counter()
        ddp.finish_gradients()
        marks.append((backward_done, time.perf_counter()))  # one clock for every rank of this machine
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    step = float(np.median(times[args.warmup:]))
    # Exposed communication: from the moment the slowest rank ended backward until the gradients were
    # ready (the faster rank's wait for the slower one is imbalance, not communication).
    every = distributed.all_gather_object(marks[args.warmup:])
    exposed = float(np.median([max(0.0, max(r[k][1] for r in every) - max(r[k][0] for r in every))
                               for k in range(args.steps)]))

    alone = None
    n_bytes = ddp.stats["bytes"] / max(ddp.stats["steps"], 1)
    if world.size > 1:  # the same bytes, all-reduced on their own
        buffer = np.zeros(int(n_bytes // 4), np.float32)
        runs = []
        for _ in range(5):
            distributed.barrier()
            start = time.perf_counter()
            distributed.start_all_reduce(buffer).wait()
            runs.append(time.perf_counter() - start)
        alone = float(np.median(runs))
    if world.rank == 0:
        n_params = sum(p.numel() for p in model.parameters())
        print(json.dumps({"ranks": world.size, "threads": args.threads, "step_s": step, "params": n_params,
                          "buckets": len(ddp.buckets), "bytes": n_bytes, "alone_s": alone,
                          "wait_s": ddp.stats["wait_s"] / max(ddp.stats["steps"], 1), "exposed_s": exposed}))


def run(ranks, threads, args):
    cmd = [sys.executable, "-m", "benchmarks.bench_distributed", "--child", "--threads", str(threads),
           "--bs", str(args.bs), "--size", str(args.size), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--bucket-mb", str(args.bucket_mb)]
    if ranks > 1:
        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        cmd = [mpiexec if os.path.exists(mpiexec) else shutil.which("mpiexec"), "-n", str(ranks)] + cmd
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=ROOT)
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bs", type=int, default=16, help="the whole batch (each of 2 ranks takes half)")
    parser.add_argument("--size", type=int, default=128, help="images are size x size")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--bucket-mb", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    from .bench_train_step import wait_until_quiet
    configs = {"1 rank x 1 thread": (1, 1), "1 rank x 2 threads": (1, 2), "2 ranks x 1 thread": (2, 1)}
    runs, busy = {name: [] for name in configs}, []
    for _ in range(args.rounds):  # interleaved; each configuration's fastest round is kept (a busy 2-core
        for name, (ranks, threads) in configs.items():  # machine stalls a 2-thread step badly now and then)
            busy.append(wait_until_quiet())
            runs[name].append(run(ranks, threads, args))
    best = {name: min(r, key=lambda one_run: one_run["step_s"]) for name, r in runs.items()}
    two = best["2 ranks x 1 thread"]
    print(f"EfficientNet-Lite0 + head (2 classes, {two['params']:,} parameters), unfrozen training step, "
          f"batch {args.bs} at {args.size} px, median of {args.steps} steps, fastest of {args.rounds} rounds "
          f"(other processes used up to {max(busy):.1f} cores before a run)")
    base = best["1 rank x 1 thread"]["step_s"]
    print(f"{'configuration':<24}{'step ms':>9}{'images/s':>10}{'speed-up':>10}")
    for name, r in best.items():
        print(f"{name:<24}{r['step_s'] * 1e3:>9.0f}{args.bs / r['step_s']:>10.1f}{base / r['step_s']:>9.2f}x")
    hidden = max(0.0, 1 - two["exposed_s"] / two["alone_s"]) if two["alone_s"] else float("nan")
    print(f"all-reduce per step: {two['bytes'] / 2 ** 20:.1f} MiB in {two['buckets']} buckets of about {args.bucket_mb} MiB; "
          f"alone {two['alone_s'] * 1e3:.1f} ms; a rank waited after its backward {two['wait_s'] * 1e3:.1f} ms, "
          f"of which {two['exposed_s'] * 1e3:.1f} ms after the slower rank's backward had ended; "
          f"hidden behind backward: {hidden:.0%}")


if __name__ == "__main__":
    main()
