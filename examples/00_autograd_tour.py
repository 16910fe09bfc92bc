"""A tour of autograd: a two-layer network learns two interleaved spirals.

Nothing but tensors, operators and .backward(): the parameters are plain tensors
with requires_grad=True, and SGD is three lines. Run it with `make demo` or
`python examples/00_autograd_tour.py [--epochs 40] [--seed 0] [--device cpu|cuda|emu]`.
"""
import argparse
import math
import time

import numpy as np

import minidl
import minidl.nn.functional as F


def spirals(n_per_class, noise, rng):
    """Two spirals winding around each other: no straight line separates them."""
    t = np.sqrt(rng.random(n_per_class)) * 3 * math.pi          # angle along the arm
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * math.pi)
    xs = np.concatenate([arm, -arm]) + noise * rng.standard_normal((2 * n_per_class, 2))
    ys = np.concatenate([np.zeros(n_per_class), np.ones(n_per_class)])
    order = rng.permutation(2 * n_per_class)
    return xs[order].astype(np.float32), ys[order].astype(np.int64)


def init_layer(n_in, n_out, device="cpu"):
    """Kaiming-uniform weights (PyTorch's default for Linear), zero biases, on ``device``."""
    bound = 1 / math.sqrt(n_in)
    w = (minidl.rand(n_out, n_in, device=device) * 2 - 1) * bound * math.sqrt(6)
    return w.requires_grad_(), minidl.zeros(n_out, device=device, requires_grad=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--points", type=int, default=1000, help="training points per spiral (quick runs: fewer)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "emu"],
                        help="where the tensors live and the kernels run (emu: the CUDA kernels on the CPU)")
    args = parser.parse_args(argv)

    minidl.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x_train, y_train = spirals(args.points, 0.02, rng)
    x_valid, y_valid = spirals(max(args.points // 4, 1), 0.02, rng)
    x_train, y_train = minidl.tensor(x_train, device=args.device), minidl.tensor(y_train, device=args.device)
    x_valid, y_valid = minidl.tensor(x_valid, device=args.device), minidl.tensor(y_valid, device=args.device)

    w1, b1 = init_layer(2, args.hidden, args.device)
    w2, b2 = init_layer(args.hidden, args.hidden, args.device)
    w3, b3 = init_layer(args.hidden, 2, args.device)
    params = [w1, b1, w2, b2, w3, b3]

    def model(x):
        h = F.relu(x @ w1.T + b1)
        h = F.relu(h @ w2.T + b2)
        return h @ w3.T + b3                               # two scores per point

    print(f"spirals: {len(x_train)} training and {len(x_valid)} validation points, "
          f"a 2-{args.hidden}-{args.hidden}-2 ReLU network, SGD lr={args.lr}, batch 32, on {args.device!r}")
    start = time.perf_counter()
    batch = 32
    for epoch in range(args.epochs):
        order = minidl.randperm(len(x_train), device=args.device)
        for i in range(0, len(x_train), batch):            # --- the whole training loop ---
            idx = order[i:i + batch]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()                                 # fills p.grad for every parameter
            with minidl.no_grad():                          # the update is not part of the graph
                for p in params:
                    p -= args.lr * p.grad
                    p.grad = None
        with minidl.no_grad():
            train_loss = F.cross_entropy(model(x_train), y_train).item()
            accuracy = (model(x_valid).argmax(dim=1) == y_valid).float().mean().item()
        print(f"epoch {epoch + 1:3d}  train loss {train_loss:.4f}  valid accuracy {accuracy:.4f}")
    print(f"final valid accuracy: {accuracy:.4f} ({time.perf_counter() - start:.1f} s)")
    return accuracy


if __name__ == "__main__":
    main()
