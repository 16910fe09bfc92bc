"""One full training step (forward, loss, backward, optimizer step, zero grad), minidl vs torch.

    .venv/bin/python -m benchmarks.bench_train_step                 # 2 threads
    .venv/bin/python -m benchmarks.bench_train_step --threads 1 --steps 50 --models cnn tabular64

Models (each built the same way, with the same init scales, in minidl and in an explicit
torch twin below; optimizer AdamW(lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01),
which is minidl's fastai_adam):

  cnn          3 x (conv 3x3 no bias, BatchNorm2d, ReLU, max-pool 2), 3->16->32->64 channels on
               32x32 images, flatten, Linear(1024, 10), cross-entropy; batch 32
  tabularB     fastai's TabularModel for Adult: 6 categorical columns (9, 17, 8, 16, 7, 6 levels,
               embedding sizes by fastai's rule), 3 continuous (BatchNorm'd), layers [200, 100]
               (Linear no bias, ReLU, BatchNorm1d), Linear(100, 2), cross-entropy; batch B
  collabB      fastai's EmbeddingDotBias: 610 users, 9724 items, 50 factors, biases,
               sigmoid_range(0, 5.5), MSE; batch B

Each library runs in its own process with the same thread count; each step is timed on its
own after --warmup steps and the median of --steps is kept; the processes run --rounds times,
interleaved, and the fastest round's median is reported (a busy 2-core machine stalls
2-thread steps badly, now and then). A third process runs minidl again, every other step
inside ``minidl.profile()``, which splits minidl's step into time inside kernels and Python
overhead (a plain step's time - kernel time), counts kernel calls per step and names the
kernels that take the most time. --json prints the numbers (what ``python -m benchmarks`` reads).
"""
import argparse
import json
import os
import subprocess
import sys
import time

CARDS = [9, 17, 8, 16, 7, 6]        # Adult: workclass, education, marital-status, occupation, relationship, race
N_CONT = 3
N_USERS, N_ITEMS, N_FACTORS = 610, 9724, 50
Y_RANGE = (0.0, 5.5)
MODELS = ["cnn", "tabular64", "tabular1024", "collab64", "collab1024"]
LABELS = {"cnn": "small CNN, batch 32", "tabular64": "tabular (Adult), batch 64",
          "tabular1024": "tabular (Adult), batch 1024", "collab64": "EmbeddingDotBias, batch 64",
          "collab1024": "EmbeddingDotBias, batch 1024"}
OPT = dict(lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)
SPLIT_NOTE = ("kernel ms, overhead ms, calls: minidl run again in a third process, a plain step and a step "
              "inside minidl.profile() in turn; kernel ms = time inside the backend's functions (the profiled "
              "steps), overhead = plain step time - kernel ms: the Python around the kernels")


def emb_sz_rule(n):
    return min(600, round(1.6 * n ** 0.56))


def make_data(name):
    """numpy inputs and targets, the same in every process."""
    import numpy as np
    rng = np.random.default_rng(0)
    if name == "cnn":
        return (rng.standard_normal((32, 3, 32, 32), dtype=np.float32),), rng.integers(0, 10, 32)
    bs = int(name.removeprefix("tabular").removeprefix("collab"))
    if name.startswith("tabular"):
        x_cat = np.stack([rng.integers(0, c, bs) for c in CARDS], axis=1).astype(np.int64)
        x_cont = rng.standard_normal((bs, N_CONT), dtype=np.float32)
        return (x_cat, x_cont), rng.integers(0, 2, bs)
    x = np.stack([rng.integers(0, N_USERS, bs), rng.integers(0, N_ITEMS, bs)], axis=1).astype(np.int64)
    y = rng.integers(1, 11, (bs, 1)).astype(np.float32) / 2
    return (x,), y


# ---------------------------------------------------------------- minidl

def build_minidl(name):
    import minidl
    from minidl import nn
    from minidl.collab.model import EmbeddingDotBias
    from minidl.optim import AdamW
    from minidl.tabular.model import TabularModel
    minidl.manual_seed(0)
    if name == "cnn":
        layers = []
        for c_in, c_out in [(3, 16), (16, 32), (32, 64)]:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                       nn.MaxPool2d(2)]
        model, loss = nn.Sequential(*layers, nn.Flatten(), nn.Linear(64 * 4 * 4, 10)), nn.CrossEntropyLoss()
    elif name.startswith("tabular"):
        model = TabularModel([(c, emb_sz_rule(c)) for c in CARDS], N_CONT, 2, [200, 100])
        loss = nn.CrossEntropyLoss()
    else:
        model, loss = EmbeddingDotBias(N_FACTORS, N_USERS, N_ITEMS, y_range=Y_RANGE), nn.MSELoss()
    xs, y = make_data(name)
    xs, y = [minidl.tensor(x) for x in xs], minidl.tensor(y)
    opt = AdamW(model.parameters(), **OPT)
    model.train()

    def step():
        out = loss(model(*xs), y)
        out.backward()
        opt.step()
        opt.zero_grad()
    return step


# ---------------------------------------------------------------- torch twins

def build_torch(name):
    import torch
    from torch import nn
    torch.manual_seed(0)

    def fastai_embedding(n, d):  # minidl.tabular.model.Embedding: trunc normal, std 0.01, cut at 2 std
        e = nn.Embedding(n, d)
        with torch.no_grad():
            nn.init.trunc_normal_(e.weight, std=0.01, a=-0.02, b=0.02)
        return e

    class TabularModel(nn.Module):
        def __init__(self, emb_szs, n_cont, out_sz, layers):
            super().__init__()
            self.embeds = nn.ModuleList([fastai_embedding(n, d) for n, d in emb_szs])
            self.bn_cont = nn.BatchNorm1d(n_cont)
            sizes = [sum(d for _, d in emb_szs) + n_cont] + list(layers)
            blocks = []
            for n_in, n_out in zip(sizes[:-1], sizes[1:]):
                blocks += [nn.Linear(n_in, n_out, bias=False), nn.ReLU(), nn.BatchNorm1d(n_out)]
            self.layers = nn.Sequential(*blocks, nn.Linear(sizes[-1], out_sz))

        def forward(self, x_cat, x_cont):
            x = torch.cat([e(x_cat[:, i]) for i, e in enumerate(self.embeds)], 1)
            return self.layers(torch.cat([x, self.bn_cont(x_cont)], 1))

    class EmbeddingDotBias(nn.Module):
        def __init__(self, n_factors, n_users, n_items, y_range):
            super().__init__()
            self.u_weight, self.i_weight = fastai_embedding(n_users, n_factors), fastai_embedding(n_items, n_factors)
            self.u_bias, self.i_bias = fastai_embedding(n_users, 1), fastai_embedding(n_items, 1)
            self.y_range = y_range

        def forward(self, x):
            users, items = x[:, 0], x[:, 1]
            dot = (self.u_weight(users) * self.i_weight(items)).sum(1, keepdim=True)
            res = dot + self.u_bias(users) + self.i_bias(items)
            low, high = self.y_range
            return torch.sigmoid(res) * (high - low) + low

    if name == "cnn":
        layers = []
        for c_in, c_out in [(3, 16), (16, 32), (32, 64)]:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                       nn.MaxPool2d(2)]
        model, loss = nn.Sequential(*layers, nn.Flatten(), nn.Linear(64 * 4 * 4, 10)), nn.CrossEntropyLoss()
    elif name.startswith("tabular"):
        model = TabularModel([(c, emb_sz_rule(c)) for c in CARDS], N_CONT, 2, [200, 100])
        loss = nn.CrossEntropyLoss()
    else:
        model, loss = EmbeddingDotBias(N_FACTORS, N_USERS, N_ITEMS, Y_RANGE), nn.MSELoss()
    xs, y = make_data(name)
    xs, y = [torch.from_numpy(x) for x in xs], torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), **OPT)  # CPU default: the single-tensor for-loop
    model.train()

    def step():
        out = loss(model(*xs), y)
        out.backward()
        opt.step()
        opt.zero_grad()
    return step


# ---------------------------------------------------------------- timing

def busy_cores(seconds=0.5):
    """How many cores' worth of CPU the rest of the machine used over ``seconds`` (from /proc/stat)."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait
    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except OSError:
        return 0.0
    return (os.cpu_count() or 1) * (1 - (i1 - i0) / max(t1 - t0, 1))


def wait_until_quiet(max_wait=30.0, busy=0.3):
    """Wait (at most max_wait s) until other processes use less than ``busy`` of a core; return the last reading."""
    deadline = time.perf_counter() + max_wait
    while True:
        b = busy_cores()
        if b < busy or time.perf_counter() > deadline:
            return b
        time.sleep(1.0)


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def time_steps(step, warmup, steps):
    """Seconds of each of ``steps`` steps, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return times


def profile_steps(step, warmup, steps, top=5):
    """Split the step into time inside kernels and Python overhead with minidl.profile().

    ``steps`` times: one plain timed step, then one step inside its own ``minidl.profile()``
    (interleaved, so both see the same machine). Returns the median plain step (ms), the median
    time inside kernels per profiled step (every function of the backend: the optimizer's update
    too), their difference (the Python overhead), the median kernel calls per step and the
    ``top`` kernels by mean time per step as (name, ms, calls)."""
    import minidl
    for _ in range(warmup):
        step()
    step_seconds, kernel_seconds, calls, per_kernel = [], [], [], {}
    for _ in range(steps):
        t = time.perf_counter()
        step()
        step_seconds.append(time.perf_counter() - t)
        with minidl.profile() as p:
            step()
        kernel_seconds.append(p.kernel_seconds)
        calls.append(sum(s.calls for s in p.kernels.values()))
        for name, s in p.kernels.items():
            total = per_kernel.setdefault(name, [0.0, 0])
            total[0] += s.seconds / steps
            total[1] += s.calls / steps
    step_ms, kernel_ms = median(step_seconds) * 1e3, median(kernel_seconds) * 1e3
    ranked = sorted(per_kernel.items(), key=lambda kv: -kv[1][0])[:top]
    return {"step_ms": step_ms, "kernel_ms": kernel_ms, "overhead_ms": step_ms - kernel_ms,
            "calls": median(calls), "top": [(name, seconds * 1e3, n) for name, (seconds, n) in ranked]}


def child(args):
    """Time (or profile) one library in this process; print JSON {model: result}."""
    if args.only == "torch":
        import torch
        torch.set_num_threads(args.threads)
        build = build_torch
    else:
        from minidl.backend import cpu
        cpu.set_num_threads(args.threads)
        build = build_minidl
    out = {}
    for name in args.models:
        if args.only == "minidl-profile":
            out[name] = profile_steps(build(name), args.warmup, args.steps)
        else:
            out[name] = median(time_steps(build(name), args.warmup, args.steps)) * 1e3
    print(json.dumps(out))


def run_child(only, args):
    cmd = [sys.executable, "-m", "benchmarks.bench_train_step", "--only", only, "--threads", str(args.threads),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--models", *args.models]
    for attempt in range(3):  # the extension may be being rebuilt by someone else: retry briefly
        wait_until_quiet(args.quiet_wait)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode == 0:
            return json.loads(r.stdout.splitlines()[-1])
        time.sleep(5)
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr}")


def measure(models=MODELS, threads=2, steps=30, warmup=5, rounds=2, quiet_wait=8.0):
    """Time each model's step in minidl and in torch, and profile minidl's; returns the numbers:
    {"threads", "steps", "warmup", "rounds", "models": [{"model", "label", "minidl_ms", "torch_ms",
    "kernel_ms", "overhead_ms", "calls", "top": [(kernel, ms, calls), ...]}, ...]}."""
    args = argparse.Namespace(models=list(models), threads=threads, steps=steps, warmup=warmup,
                              quiet_wait=quiet_wait)
    # Other work on a 2-core machine can stall a 2-thread step by 10-100x for seconds at a time, so
    # the processes run ``rounds`` times, interleaved, and each model keeps its fastest round's median.
    res = {"minidl": {}, "torch": {}, "minidl-profile": {}}
    for _ in range(rounds):
        for lib in res:
            for name, r in run_child(lib, args).items():
                key = (lambda v: v["step_ms"]) if lib == "minidl-profile" else (lambda v: v)
                if name not in res[lib] or key(r) < key(res[lib][name]):
                    res[lib][name] = r
    rows = []
    for name in models:
        m, p = res["minidl"][name], res["minidl-profile"][name]
        rows.append({"model": name, "label": LABELS[name], "minidl_ms": m, "torch_ms": res["torch"][name],
                     "kernel_ms": p["kernel_ms"], "overhead_ms": p["overhead_ms"], "calls": p["calls"],
                     "top": p["top"]})
    return {"threads": threads, "steps": steps, "warmup": warmup, "rounds": rounds, "models": rows}


def print_table(data):
    print(f"{'model':<30}{'minidl ms':>10}{'torch ms':>10}{'minidl/torch':>13}"
          f"{'kernel ms':>11}{'overhead ms':>12}{'kernel %':>9}{'calls':>7}")
    for r in data["models"]:
        m, t, k, o = r["minidl_ms"], r["torch_ms"], r["kernel_ms"], r["overhead_ms"]
        print(f"{r['label']:<30}{m:>10.2f}{t:>10.2f}{m / t:>13.2f}{k:>11.2f}{o:>12.2f}"
              f"{100 * k / (k + o):>8.0f}%{r['calls']:>7.0f}")
    print(f"({SPLIT_NOTE})")
    print()
    print("minidl's top 5 kernels by time per step (ms, calls):")
    for r in data["models"]:
        print(f"{r['label']:<30}" + ", ".join(f"{k} {t:.2f} ({c:.0f})" for k, t, c in r["top"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quiet-wait", type=float, default=8.0,
                        help="before each process, wait up to this many seconds for the other processes "
                             "on the machine to go quiet")
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # internal: minidl | torch | minidl-profile
    args = parser.parse_args()
    # Thread counts must be set before numpy (OpenBLAS) and torch start their pools.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if args.only:
        return child(args)
    data = measure(args.models, args.threads, args.steps, args.warmup, args.rounds, args.quiet_wait)
    if args.json:
        print(json.dumps(data))
        return
    print(f"training step (forward, loss, backward, AdamW step, zero grad), ms/step, median of {args.steps} "
          f"after {args.warmup} warm-up (best of {args.rounds} rounds), {args.threads} thread(s), "
          "each library in its own process")
    print_table(data)


if __name__ == "__main__":
    main()
