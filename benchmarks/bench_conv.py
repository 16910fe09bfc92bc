"""Convolution and pooling, forward + backward, on ResNet-18 layer shapes: minidl's C++ kernels vs torch.

    .venv/bin/python -m benchmarks.bench_conv                   # batch 8, 2 threads
    .venv/bin/python -m benchmarks.bench_conv --batch 16 --threads 1 --repeat 5
    .venv/bin/python -m benchmarks.bench_conv --passes --repeat 9   # + per-pass times
    .venv/bin/python -m benchmarks.bench_conv --unet --passes       # the CamVid U-Net's decoder convolutions

For each shape: the median time (of --repeat rounds, after one warm-up) of forward + both
backward passes (conv2d, conv2d_backward_data, conv2d_backward_weight; pooling: forward +
backward), minidl vs torch (F.conv2d + autograd, same thread count), GFLOP/s
(3 passes x 2*N*O*OH*OW*C/G*kh*kw) and the ratio torch / minidl (above 1: minidl faster):
the median of the ratios within each round, minidl and torch taking turns (common.interleaved).
--passes adds a line per conv with each pass timed on its own (forward, backward data,
backward weight; torch's through aten.convolution_backward with one output asked for),
to see which pass is behind.  On a shared machine time each run a few times and compare
medians: a thread of a 2-thread run that loses its core stalls a whole parallel region.
"""
import argparse

from .common import interleaved, limit_threads, median_time

# (name, x shape without batch, weight shape, stride, padding, groups)
CONVS = [
    ("conv1 7x7/2", (3, 224, 224), (64, 3, 7, 7), 2, 3, 1),
    ("layer1 3x3", (64, 56, 56), (64, 64, 3, 3), 1, 1, 1),
    ("layer2 3x3/2", (64, 56, 56), (128, 64, 3, 3), 2, 1, 1),
    ("layer2 1x1/2 down", (64, 56, 56), (128, 64, 1, 1), 2, 0, 1),
    ("layer2 3x3", (128, 28, 28), (128, 128, 3, 3), 1, 1, 1),
    ("layer3 3x3", (256, 14, 14), (256, 256, 3, 3), 1, 1, 1),
    ("layer4 3x3", (512, 7, 7), (512, 512, 3, 3), 1, 1, 1),
    ("depthwise 3x3 (MobileNet)", (128, 28, 28), (128, 1, 3, 3), 1, 1, 128),
]
# The CamVid U-Net's decoder (examples/camvid.py, 180 x 240 scenes): the 3x3 convolutions of each
# size, the joined (upsampled + skip) channels in, then the block's width.
UNET_CONVS = [
    ("unet 1/32 320->256", (320, 6, 8), (256, 320, 3, 3), 1, 1, 1),
    ("unet 1/32 256->256", (256, 6, 8), (256, 256, 3, 3), 1, 1, 1),
    ("unet 1/16 368->128", (368, 12, 15), (128, 368, 3, 3), 1, 1, 1),
    ("unet 1/16 128->128", (128, 12, 15), (128, 128, 3, 3), 1, 1, 1),
    ("unet 1/8 168->96", (168, 23, 30), (96, 168, 3, 3), 1, 1, 1),
    ("unet 1/8 96->96", (96, 23, 30), (96, 96, 3, 3), 1, 1, 1),
    ("unet 1/4 120->64", (120, 45, 60), (64, 120, 3, 3), 1, 1, 1),
    ("unet 1/4 64->64", (64, 45, 60), (64, 64, 3, 3), 1, 1, 1),
    ("unet 1/2 80->32", (80, 90, 120), (32, 80, 3, 3), 1, 1, 1),
    ("unet 1/2 32->32", (32, 90, 120), (32, 32, 3, 3), 1, 1, 1),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--passes", action="store_true", help="also time forward / dx / dw separately")
    parser.add_argument("--unet", action="store_true", help="the U-Net decoder's shapes instead of ResNet-18's")
    args = parser.parse_args()
    torch = limit_threads(args.threads)
    if torch is None:
        raise SystemExit("bench_conv compares with PyTorch: pip install torch==2.13.0")
    import numpy as np
    import torch.nn.functional as F

    from minidl.backend import cpu
    rng = np.random.default_rng(0)
    N = args.batch
    print(f"batch={N}, threads={args.threads}, float32, fwd + bwd (data + weight), median of {args.repeat} "
          "rounds, minidl and torch taking turns")
    print(f"{'layer':<27}{'minidl ms':>10}{'GFLOP/s':>9}{'torch ms':>10}{'torch/minidl':>13}")
    for name, xs, ws, s, p, g in UNET_CONVS if args.unet else CONVS:
        x = rng.standard_normal((N,) + xs).astype(np.float32)
        w = (rng.standard_normal(ws) * 0.1).astype(np.float32)
        st, pd, dl = (s, s), (p, p), (1, 1)
        out = cpu.conv2d(x, w, st, pd, dl, g)
        gr = rng.standard_normal(out.shape).astype(np.float32)

        def f_minidl():
            cpu.conv2d(x, w, st, pd, dl, g)
            cpu.conv2d_backward_data(gr, w, x.shape, st, pd, dl, g)
            cpu.conv2d_backward_weight(gr, x, w.shape, st, pd, dl, g)

        tx = torch.from_numpy(x).requires_grad_()
        tw = torch.from_numpy(w).requires_grad_()
        tg = torch.from_numpy(gr)

        def f_torch():
            tx.grad = tw.grad = None
            F.conv2d(tx, tw, stride=s, padding=p, groups=g).backward(tg)

        t_m, t_t, ratio = interleaved(f_minidl, f_torch, args.repeat)
        flops = 3 * 2 * N * ws[0] * out.shape[2] * out.shape[3] * ws[1] * ws[2] * ws[3]
        print(f"{name:<27}{t_m * 1e3:>10.2f}{flops / t_m / 1e9:>9.1f}{t_t * 1e3:>10.2f}{ratio:>13.2f}")
        if args.passes:
            back = torch.ops.aten.convolution_backward
            conv_args = (st, pd, dl, False, (0, 0), g)
            m = [median_time(f, args.repeat) * 1e3 for f in (
                lambda: cpu.conv2d(x, w, st, pd, dl, g),
                lambda: cpu.conv2d_backward_data(gr, w, x.shape, st, pd, dl, g),
                lambda: cpu.conv2d_backward_weight(gr, x, w.shape, st, pd, dl, g))]
            t = [median_time(f, args.repeat) * 1e3 for f in (
                lambda: F.conv2d(tx, tw, stride=s, padding=p, groups=g),
                lambda: back(tg, tx, tw, None, *conv_args, (True, False, False)),
                lambda: back(tg, tx, tw, None, *conv_args, (False, True, False)))]
            print(f"{'':<4}fwd / dx / dw ms: minidl {m[0]:.2f} / {m[1]:.2f} / {m[2]:.2f}"
                  f"   torch {t[0]:.2f} / {t[1]:.2f} / {t[2]:.2f}")

    for name, xs, k, s, p, kind in [] if args.unet else [("maxpool 3x3/2 (stem)", (64, 112, 112), 3, 2, 1, "max"),
                                                         ("avgpool 2x2/2", (128, 28, 28), 2, 2, 0, "avg")]:
        x = rng.standard_normal((N,) + xs).astype(np.float32)
        kk, st, pd = (k, k), (s, s), (p, p)
        if kind == "max":
            out, win = cpu.max_pool2d(x, kk, st, pd)
            gr = rng.standard_normal(out.shape).astype(np.float32)

            def f_minidl():
                _, wn = cpu.max_pool2d(x, kk, st, pd)
                cpu.max_pool2d_backward(gr, wn, x.shape, kk, st, pd)
            pool = F.max_pool2d
        else:
            out = cpu.avg_pool2d(x, kk, st, pd)
            gr = rng.standard_normal(out.shape).astype(np.float32)

            def f_minidl():
                cpu.avg_pool2d(x, kk, st, pd)
                cpu.avg_pool2d_backward(gr, x.shape, kk, st, pd)
            pool = F.avg_pool2d
        tx, tg = torch.from_numpy(x).requires_grad_(), torch.from_numpy(gr)

        def f_torch():
            tx.grad = None
            pool(tx, k, s, p).backward(tg)

        t_m, t_t, ratio = interleaved(f_minidl, f_torch, args.repeat)
        print(f"{name:<27}{t_m * 1e3:>10.2f}{'':>9}{t_t * 1e3:>10.2f}{ratio:>13.2f}")


if __name__ == "__main__":
    main()
