"""The AWD-LSTM language model's training step, minidl vs the same network in PyTorch: tokens per second.

    .venv/bin/python -m benchmarks.bench_text                      # 2 threads, vocab 10000, batch 32, bptt 72
    .venv/bin/python -m benchmarks.bench_text --vocab 30000 --steps 10 --profile 20

The network is examples/imdb.py's language model at its default sizes: get_language_model(AWD_LSTM)
(text/models.py), embeddings 200, 2 LSTM layers (512 hidden, the last one back to 200), the decoder tied
to the embedding, drop_mult 0.3; its torch twin is benchmarks/torch_twins.py's awd_lstm_lm (the two
parameter counts are printed and must be equal). One step is what fit_one_cycle repeats over a batch of
--bs rows of --bptt tokens: forward in training mode (the five dropouts drawn afresh), cross-entropy over
the flattened scores, backward, AdamW step (fastai_adam's hyper-parameters: the text learners' default
optimizer), zero grad; the hidden state is carried, detached, from step to step.

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

LIBS = ["minidl", "torch"]
SIZES = dict(vocab=10_000, emb=200, hidden=512, layers=2, bs=32, bptt=72)   # the defaults of the flags
DROP_MULT = 0.3                                                             # imdb.py's language model
OPT = dict(lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)        # minidl.optim.fastai_adam's


def make_data(vocab, bs, bptt):
    """Token ids (bs, bptt) and the next tokens as targets, the same in every process."""
    import numpy as np
    ids = np.random.default_rng(0).integers(0, vocab, (bs, bptt + 1))
    return ids[:, :-1], ids[:, 1:]


def build_minidl(vocab, emb, hidden, layers, bs, bptt):
    """(one training step, the number of parameters)."""
    import minidl
    from minidl import nn
    from minidl.optim import AdamW
    from minidl.text.models import get_language_model
    minidl.manual_seed(0)
    model = get_language_model(vocab, dict(emb_sz=emb, n_hid=hidden, n_layers=layers), DROP_MULT)
    loss, opt = nn.CrossEntropyLossFlat(), AdamW(model.parameters(), **OPT)
    x, y = (minidl.tensor(a) for a in make_data(vocab, bs, bptt))
    model.train()

    def step():
        loss(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    return step, sum(p.numel() for p in model.parameters())


def build_torch(vocab, emb, hidden, layers, bs, bptt):
    """(one training step, the number of parameters)."""
    import torch
    from .torch_twins import awd_lstm_lm
    torch.manual_seed(0)
    model = awd_lstm_lm(torch, vocab, emb, hidden, layers, DROP_MULT)
    opt = torch.optim.AdamW(model.parameters(), **OPT)
    x, y = (torch.from_numpy(a) for a in make_data(vocab, bs, bptt))
    model.train()

    def step():
        torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
        opt.step()
        opt.zero_grad()
    return step, sum(p.numel() for p in model.parameters())


def child(args):
    """Time (or profile) one library in this process; print one JSON line."""
    sizes = {k: getattr(args, k) for k in SIZES}
    if args.only == "torch":
        import torch
        torch.set_num_threads(args.threads)
        step, n_params = build_torch(**sizes)
    else:
        import minidl
        from minidl.backend import cpu
        cpu.set_num_threads(args.threads)
        step, n_params = build_minidl(**sizes)
        if args.only == "minidl-profile":
            step()
            with minidl.profile() as p:
                step()
            print(p.table(args.profile))
            print(json.dumps(None))
            return
    print(json.dumps({"seconds": median(time_steps(step, args.warmup, args.steps)), "params": n_params}))


def run_child(only, args):
    cmd = [sys.executable, "-m", "benchmarks.bench_text", "--only", only, "--threads", str(args.threads),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--profile", str(args.profile)]
    cmd += [a for k in SIZES for a in (f"--{k}", str(getattr(args, k)))]
    wait_until_quiet(args.quiet_wait)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr}")
    *text, last = r.stdout.splitlines()
    return json.loads(last), "\n".join(text)


def measure(args):
    """{"threads", the SIZES, "steps", "warmup", "rounds", "seconds": {lib: fastest round's median step},
    "params": {lib: parameter count}, "profile": text}."""
    seconds, params = {}, {}
    for _ in range(args.rounds):
        for lib in LIBS:
            r, _ = run_child(lib, args)
            seconds[lib] = min(r["seconds"], seconds.get(lib, r["seconds"]))
            params[lib] = r["params"]
    assert params["minidl"] == params["torch"], f"the torch twin is not minidl's network: parameters {params}"
    _, table = run_child("minidl-profile", args)
    return {"threads": args.threads, **{k: getattr(args, k) for k in SIZES}, "steps": args.steps,
            "warmup": args.warmup, "rounds": args.rounds, "seconds": seconds, "params": params, "profile": table}


def print_report(data):
    s, tokens = data["seconds"], data["bs"] * data["bptt"]
    print(f"AWD-LSTM language model training step (vocab {data['vocab']}, emb {data['emb']}, hidden {data['hidden']}, "
          f"{data['layers']} layers, batch {data['bs']} x bptt {data['bptt']}, {data['threads']} threads)")
    print("parameters: " + ", ".join(f"{lib} {n:,}" for lib, n in data["params"].items()))
    print(f"{'library':<10}{'s/step':>8}{'tokens/s':>10}")
    for lib in LIBS:
        print(f"{lib:<10}{s[lib]:>8.3f}{tokens / s[lib]:>10.0f}")
    print(f"minidl / torch (time): {s['minidl'] / s['torch']:.2f}")
    print()
    print("minidl's step, profiled:")
    print(data["profile"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for k, v in SIZES.items():
        parser.add_argument(f"--{k}", type=int, default=v)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", type=int, default=15, help="rows of the profile's tables")
    parser.add_argument("--quiet-wait", type=float, default=8.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # internal: minidl | torch | minidl-profile
    args = parser.parse_args()
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if args.only:
        return child(args)
    data = measure(args)
    if args.json:
        print(json.dumps(data))
    else:
        print_report(data)


if __name__ == "__main__":
    main()
