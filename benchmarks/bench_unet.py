"""The CamVid U-Net's training step, minidl vs the same network in PyTorch (default and channels-last layouts).

    .venv/bin/python -m benchmarks.bench_unet                      # 2 threads, batch 8, 180 x 240
    .venv/bin/python -m benchmarks.bench_unet --size 360 --steps 5 --profile 20

The network is examples/camvid.py's: DynamicUnet (vision/models/unet.py) over EfficientNet-Lite0's body
without its head convolution (unet_learner's cut), decoder widths 256 -> 128/96/64/32, scores at half
size resized bilinearly, 12 classes; its torch twin is benchmarks/torch_twins.py's torch_unet. One step
is what fine_tune's unfrozen epochs repeat: forward in training mode, cross-entropy over the class axis
with the void class ignored, backward through the whole network, AdamW step, zero grad.

Each library runs in its own process with the same thread count, --rounds times, interleaved; each
keeps the median of --steps timed steps (after --warmup), the fastest round counts. A last minidl
process runs one step inside ``minidl.profile()`` and prints its --profile top ops and kernels.
"""
import argparse
import json
import os
import subprocess
import sys

from .bench_train_step import median, time_steps, wait_until_quiet

LIBS = ["minidl", "torch", "torch-channels-last"]
N_CLASSES, VOID = 12, 11
OPT = dict(lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)


def make_data(bs, size):
    import numpy as np
    rng = np.random.default_rng(0)
    h, w = size, size * 4 // 3
    return rng.standard_normal((bs, 3, h, w), dtype=np.float32), rng.integers(0, N_CLASSES, (bs, h, w))


def build_minidl(bs, size):
    import minidl
    from minidl import nn
    from minidl.optim import AdamW
    from minidl.vision.models import create_body, efficientnet_lite0, model_meta
    from minidl.vision.models.unet import DynamicUnet
    minidl.manual_seed(0)
    body = create_body(efficientnet_lite0, pretrained=False, cut=model_meta[efficientnet_lite0]["unet_cut"])
    model = DynamicUnet(body, N_CLASSES, last_cross=False)
    loss, opt = nn.CrossEntropyLossFlat(axis=1, ignore_index=VOID), AdamW(model.parameters(), **OPT)
    x, y = (minidl.tensor(a) for a in make_data(bs, size))
    model.train()

    def step():
        loss(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    return step


def build_torch(bs, size, channels_last):
    import torch
    from .torch_twins import torch_unet
    torch.manual_seed(0)
    model = torch_unet(torch, "efficientnet_lite0", N_CLASSES, last_cross=False)
    x, y = (torch.from_numpy(a) for a in make_data(bs, size))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    loss, opt = torch.nn.CrossEntropyLoss(ignore_index=VOID), torch.optim.AdamW(model.parameters(), **OPT)
    model.train()

    def step():
        loss(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    return step


def child(args):
    """Time (or profile) one library in this process; print one JSON line."""
    if args.only.startswith("torch"):
        import torch
        torch.set_num_threads(args.threads)
        step = build_torch(args.bs, args.size, channels_last=args.only == "torch-channels-last")
    else:
        import minidl
        from minidl.backend import cpu
        cpu.set_num_threads(args.threads)
        step = build_minidl(args.bs, args.size)
        if args.only == "minidl-profile":
            step()
            with minidl.profile() as p:
                step()
            print(p.table(args.profile))
            print(json.dumps(None))
            return
    print(json.dumps(median(time_steps(step, args.warmup, args.steps))))


def run_child(only, args):
    cmd = [sys.executable, "-m", "benchmarks.bench_unet", "--only", only, "--threads", str(args.threads),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--bs", str(args.bs), "--size", str(args.size),
           "--profile", str(args.profile)]
    wait_until_quiet(args.quiet_wait)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr}")
    *text, last = r.stdout.splitlines()
    return json.loads(last), "\n".join(text)


def measure(threads=2, bs=8, size=180, steps=5, warmup=2, rounds=2, quiet_wait=8.0, profile=15):
    """{"threads", "bs", "size", "seconds": {lib: fastest round's median step}, "profile": text}."""
    args = argparse.Namespace(threads=threads, bs=bs, size=size, steps=steps, warmup=warmup, quiet_wait=quiet_wait,
                              profile=profile)
    seconds = {}
    for _ in range(rounds):
        for lib in LIBS:
            s, _ = run_child(lib, args)
            seconds[lib] = min(s, seconds.get(lib, s))
    _, table = run_child("minidl-profile", args)
    return {"threads": threads, "bs": bs, "size": size, "seconds": seconds, "profile": table}


def print_report(data):
    s = data["seconds"]
    best = min(s["torch"], s["torch-channels-last"])
    h = data["size"]
    print(f"U-Net training step (Lite0 body, batch {data['bs']}, {h} x {h * 4 // 3}, {data['threads']} threads)")
    print(f"{'library':<22}{'s/step':>8}{'minidl / it':>13}")
    for lib in LIBS:
        print(f"{lib:<22}{s[lib]:>8.3f}{s['minidl'] / s[lib]:>13.2f}")
    print(f"minidl / torch's best: {s['minidl'] / best:.2f}")
    print()
    print("minidl's step, profiled:")
    print(data["profile"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bs", type=int, default=8)
    parser.add_argument("--size", type=int, default=180, help="height; width is 4/3 of it")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", type=int, default=15, help="rows of the profile's tables")
    parser.add_argument("--quiet-wait", type=float, default=8.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # internal: minidl | torch | torch-channels-last | minidl-profile
    args = parser.parse_args()
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if args.only:
        return child(args)
    data = measure(args.threads, args.bs, args.size, args.steps, args.warmup, args.rounds, args.quiet_wait,
                   args.profile)
    if args.json:
        print(json.dumps(data))
    else:
        print_report(data)


if __name__ == "__main__":
    main()
