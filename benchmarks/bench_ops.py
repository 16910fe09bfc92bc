"""The hot small ops of the chapter-1 training steps: minidl's C++ kernels vs numpy_ref vs torch.

    .venv/bin/python -m benchmarks.bench_ops                  # 2 threads
    .venv/bin/python -m benchmarks.bench_ops --threads 1 --repeat 50

Each row times one kernel call (median of --repeat, after one warm-up) on a shape that one
of the chapter-1 models produces: the tabular model's (64 | 1024, 200) activations, the
small CNN's (32, 16, 32, 32) feature map, EfficientNet-Lite0's (batch 32) feature maps, a
classifier's logits, a U-Net decoder's (8, 64, 90, 120) map doubled in size. "numpy" is the
reference kernel of the same name in minidl/backend/numpy_ref.py; "torch" is the closest aten
call (torch.threshold_backward, softmax, cross_entropy with reduction="none" + its gradient,
batch_norm's training forward / backward through autograd; for channel_affine, eval-mode
batch_norm + relu6 and their backward through autograd; aten's upsample kernels). The cpu
backend uses a C++ kernel only where it beats numpy (see KERNELS in minidl/backend/cpu.py):
the numpy / minidl column says by how much.
"""
import argparse

import numpy as np

from .common import limit_threads, median_time


def cases(rng):
    """(label, minidl call, numpy call, torch call or None) for every row of the table."""
    from minidl.backend import cpu, numpy_ref as ref
    out = []
    for shape in [(64, 200), (1024, 200), (32, 16, 32, 32)]:
        y = np.maximum(rng.standard_normal(shape, dtype=np.float32), 0)
        g = rng.standard_normal(shape, dtype=np.float32)
        out.append((f"relu_backward {shape}", lambda g=g, y=y: cpu.relu_backward(g, y),
                    lambda g=g, y=y: ref.relu_backward(g, y), ("relu_backward", g, y)))
    for shape in [(64, 200), (1024, 200), (1024, 3), (32, 16, 32, 32)]:
        x = rng.standard_normal(shape, dtype=np.float32)
        C = shape[1]
        w, b = np.ones(C, np.float32), np.zeros(C, np.float32)
        _, mean, _, invstd = ref.batch_norm(x, w, b, 1e-5)
        out.append((f"batch_norm {shape}", lambda x=x, w=w, b=b: cpu.batch_norm(x, w, b, 1e-5),
                    lambda x=x, w=w, b=b: ref.batch_norm(x, w, b, 1e-5), ("batch_norm", x)))
        out.append((f"batch_norm_backward {shape}", lambda x=x, w=w, m=mean, i=invstd: cpu.batch_norm_backward(x, x, w, m, i),
                    lambda x=x, w=w, m=mean, i=invstd: ref.batch_norm_backward(x, x, w, m, i),
                    ("batch_norm_backward", x)))
    for shape in [(1024, 200), (32, 240, 28, 28), (32, 1152, 7, 7)]:  # batch norm in eval mode + ReLU6 (Lite0)
        x = rng.standard_normal(shape, dtype=np.float32)
        C = shape[1]
        a, b = rng.standard_normal(C, dtype=np.float32), rng.standard_normal(C, dtype=np.float32) + 3
        y = ref.channel_affine(x, a, b, "relu6")
        out.append((f"channel_affine relu6 {shape}", lambda x=x, a=a, b=b: cpu.channel_affine(x, a, b, "relu6"),
                    lambda x=x, a=a, b=b: ref.channel_affine(x, a, b, "relu6"), ("channel_affine", x, a, b)))
        out.append((f"channel_affine_backward {shape}",
                    lambda x=x, y=y, a=a: cpu.channel_affine_backward(x, x, y, a, "relu6"),
                    lambda x=x, y=y, a=a: ref.channel_affine_backward(x, x, y, a, "relu6"),
                    ("channel_affine_backward", x, a, b)))
    for shape in [(64, 2), (1024, 2), (32, 10), (256, 1000)]:
        x = rng.standard_normal(shape, dtype=np.float32)
        t = rng.integers(0, shape[1], shape[0])
        out.append((f"log_softmax {shape}", lambda x=x: cpu.log_softmax(x, -1), lambda x=x: ref.log_softmax(x, -1),
                    ("log_softmax", x)))
        out.append((f"softmax {shape}", lambda x=x: cpu.softmax(x, -1), lambda x=x: ref.softmax(x, -1),
                    ("softmax", x)))
        out.append((f"cross_entropy {shape}", lambda x=x, t=t: cpu.cross_entropy(x, t),
                    lambda x=x, t=t: ref.cross_entropy(x, t), ("cross_entropy", x, t)))
    x = rng.standard_normal((8, 64, 90, 120), dtype=np.float32)  # a U-Net decoder's map, doubled (resize.cpp)
    g = rng.standard_normal((8, 64, 180, 240), dtype=np.float32)
    out.append(("upsample_nearest2d x2 (8, 64, 90, 120)", lambda: cpu.upsample_nearest2d(x, (180, 240)),
                lambda: ref.upsample_nearest2d(x, (180, 240)), ("upsample_nearest2d", x)))
    out.append(("upsample_nearest2d_backward x2", lambda: cpu.upsample_nearest2d_backward(g, x.shape),
                lambda: ref.upsample_nearest2d_backward(g, x.shape), ("upsample_nearest2d_backward", g, x)))
    out.append(("upsample_bilinear2d x2 (8, 64, 90, 120)", lambda: cpu.upsample_bilinear2d(x, (180, 240), False),
                lambda: ref.upsample_bilinear2d(x, (180, 240), False), ("upsample_bilinear2d", x)))
    out.append(("upsample_bilinear2d_backward x2", lambda: cpu.upsample_bilinear2d_backward(g, x.shape, False),
                lambda: ref.upsample_bilinear2d_backward(g, x.shape, False), ("upsample_bilinear2d_backward", g, x)))
    return out


def torch_call(torch, spec):
    """A torch function doing what the minidl kernel does (its forward, or its backward alone)."""
    F = torch.nn.functional
    kind, *arrays = spec
    ts = [torch.from_numpy(a) for a in arrays]
    if kind == "relu_backward":
        g, y = ts
        return lambda: torch.ops.aten.threshold_backward(g, y, 0)
    if kind == "softmax":
        return lambda: torch.softmax(ts[0], -1)
    if kind == "log_softmax":
        return lambda: torch.log_softmax(ts[0], -1)
    if kind.startswith("upsample"):  # aten's own resize kernels, forward or backward alone
        a, x = ts[0], ts[-1]
        size, shape = [2 * n for n in x.shape[2:]], list(x.shape)
        return {"upsample_nearest2d": lambda: torch.ops.aten.upsample_nearest2d(a, size),
                "upsample_nearest2d_backward": lambda: torch.ops.aten.upsample_nearest2d_backward(a, size, shape),
                "upsample_bilinear2d": lambda: torch.ops.aten.upsample_bilinear2d(a, size, False),
                "upsample_bilinear2d_backward":
                    lambda: torch.ops.aten.upsample_bilinear2d_backward(a, size, shape, False)}[kind]
    if kind == "cross_entropy":  # the loss per row and its gradient, as minidl's kernel gives both
        x, t = ts

        def ce():
            xg = x.detach().requires_grad_()
            loss = F.cross_entropy(xg, t, reduction="none")
            loss.backward(torch.ones_like(loss))
            return loss, xg.grad
        return ce
    x = ts[0]
    C = x.shape[1]
    if kind.startswith("channel_affine"):  # eval-mode batch norm (mean 0, var 1 - eps: the same affine map) + ReLU6
        w, b = (t.detach().requires_grad_() for t in ts[1:])
        mean, var = torch.zeros(C), torch.full((C,), 1 - 1e-5)
        if kind == "channel_affine":
            return lambda: F.relu6(F.batch_norm(x, mean, var, w, b, training=False))
        xg = x.detach().requires_grad_()
        y = F.relu6(F.batch_norm(xg, mean, var, w, b, training=False))
        return lambda: torch.autograd.grad(y, (xg, w, b), x, retain_graph=True)
    w, b = torch.ones(C, requires_grad=True), torch.zeros(C, requires_grad=True)
    if kind == "batch_norm":
        return lambda: F.batch_norm(x, None, None, w, b, training=True)
    xg = x.detach().requires_grad_()
    y = F.batch_norm(xg, None, None, w, b, training=True)
    return lambda: torch.autograd.grad(y, (xg, w, b), x, retain_graph=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    torch = limit_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"hot ops of the chapter-1 steps, float32, {args.threads} thread(s), us per call (median of {args.repeat})")
    print()
    print(f"{'kernel and shape':<44}{'minidl us':>11}{'numpy us':>10}{'torch us':>10}{'numpy/minidl':>14}"
          f"{'torch/minidl':>14}")
    for label, mine, ref, spec in cases(rng):
        t_mine = median_time(mine, args.repeat) * 1e6
        t_ref = median_time(ref, args.repeat) * 1e6
        t_torch = median_time(torch_call(torch, spec), args.repeat) * 1e6 if torch else float("nan")
        print(f"{label:<44}{t_mine:>11.1f}{t_ref:>10.1f}{t_torch:>10.1f}{t_ref / t_mine:>14.2f}"
              f"{t_torch / t_mine:>14.2f}")
    print()
    print("(numpy/minidl > 1: the C++ kernel is faster than the numpy reference; torch/minidl > 1: faster than torch)")


if __name__ == "__main__":
    main()
