"""The LSTM as one op (ops/rnn.py, csrc/cpu/lstm.cpp) vs torch.nn.LSTM on the CPU, and vs the LSTM composed of ops.

    .venv/bin/python -m benchmarks.bench_lstm                  # 2 threads, 5 rounds
    .venv/bin/python -m benchmarks.bench_lstm --threads 1 --repeat 9 --no-composed
    .venv/bin/python -m benchmarks.bench_lstm --no-composed --repeat 3 --json   # what python -m benchmarks reads

For each shape (batch, seq, input, hidden, layers): the median time of a forward pass (no graph
recorded: inference) and of a forward + backward pass (gradients of every weight and of the input),
minidl's nn.LSTM vs torch.nn.LSTM with the same weights and thread count, float32, taking turns
(common.interleaved), and the ratio torch / minidl (above 1: minidl faster), the median of the
ratios within each round. "composed" is the LSTM as minidl had it before the op: the same steps
written with minidl's ops (a matmul, four activations and the products per step), autograd doing
backpropagation through time; it is timed alone (median of half as many rounds). --json prints the
numbers as one JSON object instead of the table.
"""
import argparse
import json

from .common import interleaved, limit_threads, median_time

# (batch, seq, input, hidden, layers): a small LSTM, and AWD-LSTM's layers (400 in, 1152 hidden)
SHAPES = [(32, 70, 200, 512, 1), (64, 70, 200, 512, 2), (32, 70, 400, 1152, 1), (64, 70, 400, 1152, 2)]


def composed_lstm(lstm, x):
    """minidl's nn.LSTM forward before the op (git history: minidl/nn/rnn.py): per step, the gates from
    a matmul and activations, autograd recording every op; (outputs, None)."""
    from minidl.nn import functional as F
    from minidl.ops.shape import stack
    from minidl.tensor import zeros
    H = lstm.hidden_size
    for k in range(lstm.num_layers):
        w_hh = getattr(lstm, f"weight_hh_l{k}")
        projected = F.linear(x, getattr(lstm, f"weight_ih_l{k}"), getattr(lstm, f"bias_ih_l{k}"))
        projected = projected + getattr(lstm, f"bias_hh_l{k}")
        h = c = zeros(x.shape[0], H, dtype=x.dtype)
        outputs = []
        for t in range(x.shape[1]):
            gates = projected[:, t] + h.matmul(w_hh.T)
            i, f, g, o = (gates[:, j * H:(j + 1) * H] for j in range(4))
            c = i.sigmoid() * g.tanh() + f.sigmoid() * c
            h = o.sigmoid() * c.tanh()
            outputs.append(h)
        x = stack(outputs, 1)
    return x, None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-composed", action="store_true", help="skip the (slow) composed-of-ops LSTM")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args()
    torch = limit_threads(args.threads)
    if torch is None:
        raise SystemExit("bench_lstm compares with PyTorch: pip install torch==2.13.0")
    import numpy as np

    import minidl
    from minidl import nn
    rng = np.random.default_rng(0)
    rows = []
    if not args.json:
        print(f"threads={args.threads}, float32, median of {args.repeat} rounds, minidl and torch taking turns; "
              f"fwd: no graph, fwd+bwd: gradients of the weights and the input")
        print(f"{'batch seq in hidden layers':<28}{'pass':<9}{'minidl ms':>10}{'torch ms':>10}{'torch/minidl':>13}"
              f"{'composed ms':>12}{'composed/minidl':>16}")
    for B, T, I, H, L in SHAPES:
        ref = torch.nn.LSTM(I, H, num_layers=L, batch_first=True)
        ours = nn.LSTM(I, H, num_layers=L)
        ours.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
        x = rng.standard_normal((B, T, I)).astype(np.float32)
        grad = rng.standard_normal((B, T, H)).astype(np.float32)
        xm, gm = minidl.tensor(x, requires_grad=True), minidl.tensor(grad)
        xt, gt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(grad)

        def fwd_minidl():
            with minidl.no_grad():
                ours(xm)

        def fwd_torch():
            with torch.no_grad():
                ref(xt)

        def train(forward, model, x_in, g):
            def step():
                x_in.grad = None
                for p in model.parameters():
                    p.grad = None
                forward(x_in)[0].backward(g)
            return step

        def fwd_composed():
            with minidl.no_grad():
                composed_lstm(ours, xm)

        label = f"{B:>5} {T:>3} {I:>3} {H:>6} {L:>6}"
        for name, f_minidl, f_torch, composed in (
                ("fwd", fwd_minidl, fwd_torch, fwd_composed),
                ("fwd+bwd", train(ours, ours, xm, gm), train(ref, ref, xt, gt),
                 train(lambda v: composed_lstm(ours, v), ours, xm, gm))):
            t_m, t_t, ratio = interleaved(f_minidl, f_torch, args.repeat)
            row = {"shape": [B, T, I, H, L], "pass": name, "minidl_ms": t_m * 1e3, "torch_ms": t_t * 1e3,
                   "torch_over_minidl": ratio}
            line = f"{label:<28}{name:<9}{t_m * 1e3:>10.1f}{t_t * 1e3:>10.1f}{ratio:>13.2f}"
            if not args.no_composed:
                t_c = median_time(composed, max(1, args.repeat // 2))
                row["composed_ms"] = t_c * 1e3
                line += f"{t_c * 1e3:>12.1f}{t_c / t_m:>16.2f}"
            rows.append(row)
            if not args.json:
                print(line, flush=True)
    if args.json:
        print(json.dumps({"threads": args.threads, "repeat": args.repeat, "rows": rows}))


if __name__ == "__main__":
    main()
