"""examples/imdb.py --no-lm trained by PyTorch: the same classifier, on the same batches, to tell whether
minidl's accuracy (about 0.80 valid / 0.82 test) is minidl's or the recipe's.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.imdb_torch --check      # parity with minidl, float64
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.imdb_torch [--epochs 5] [--seed 42] [--torch-seed 42]

The data are examples/imdb.py's (its load_reviews and split_test, RandomSplitter(0.2, seed), minidl's
TextDataLoaders with bs 32, max_len 400): minidl's loaders are iterated and each batch converted with
.numpy(), so order, padding and lengths are minidl's own. The model is get_text_classifier(vocab, 2, 72,
dict(emb_sz=200, n_hid=512, n_layers=2), drop_mult=0.5, lin_ftrs=(50,), ps=(0.1,), max_len=400) in plain
torch.nn, with minidl's parameter names (so state dicts load both ways) and its initialisation (PyTorch's
defaults, the embedding U(-0.1, 0.1)). Training is learn.unfreeze(); learn.fit_one_cycle(5, 5e-3) of a
TextLearner: AdamW (betas (0.9, 0.99), eps 1e-5, decoupled weight decay 0.01, none on parameters named
"*bias" nor on batch norm's), lr cosine from lr/25 up over 25% then down to lr/1e5, beta1 0.8 -> 0.7 -> 0.8.
torch is a dependency of this script only, never of minidl.

It found (benchmarks/NOTES.md, "IMDb from random weights: minidl or the recipe?") that the twin agrees with
minidl to 1e-13 and that, without AR/TAR, PyTorch's runs on these batches did not take off either. Its
defaults are those runs' (drop_mult 0.5, AR and TAR off); minidl's TextLearner has AR and TAR on since.
"""
import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EMB, HIDDEN, LAYERS, BPTT, MAX_LEN, BS, DROP_MULT = 200, 512, 2, 72, 400, 32, 0.5
LIN_FTRS, PS = (50,), (0.1,)
LR, DIV, DIV_FINAL, PCT_START, MOMS, WD = 5e-3, 25.0, 1e5, 0.25, (0.8, 0.7, 0.8), 0.01
BETA2, EPS = 0.99, 1e-5


# ---------------------------------------------------------------- data: examples/imdb.py's, through minidl

def build_data(seed=42, limit=None, cache=None):
    """(dls, test_dl) exactly as examples/imdb.py --no-lm builds them (hold-out 1200, valid 0.2, bs 32)."""
    os.environ.setdefault("MINIDL_DATA", str(ROOT.parent / "shared" / "data"))
    sys.path.insert(0, str(ROOT / "examples"))
    import imdb
    from minidl.data import RandomSplitter
    from minidl.text.data import TextDataLoaders
    df, source = imdb.load_reviews(None, download=False)
    pool, test = imdb.split_test(df, argparse.Namespace(test=None, hold_out=1200, seed=seed, limit=limit))
    train, valid = RandomSplitter(0.2, seed)(len(pool))
    cache = Path(cache) if cache else ROOT / "examples" / "output" / "imdb" / "tokens"   # imdb.py's cache
    dls = TextDataLoaders.from_texts(pool.review, pool.sentiment, splits=(train, valid), bs=BS, seed=seed,
                                     cache=cache, max_len=MAX_LEN)
    test_dl = dls.test_dl(test.review, test.sentiment, cache=cache)
    print(f"data: {source}; {len(df)} reviews: {len(train)} train, {len(valid)} valid, {len(test)} test; "
          f"vocab {len(dls.vocab)}; {len(dls.train)} training batches")
    return dls, test_dl


def torch_batches(torch, dl, epoch=None):
    """minidl's loader's batches as torch tensors (the training loader's order is that of ``epoch``, as the
    Learner sets it: dl.epoch = epoch before iterating)."""
    if epoch is not None:
        dl.epoch = epoch
    for x, y in dl:
        yield torch.from_numpy(np.ascontiguousarray(x.numpy())), torch.from_numpy(np.ascontiguousarray(y.numpy()))


# ---------------------------------------------------------------- the model, in plain torch.nn

def torch_classifier(torch, vocab, n_class=2, emb=EMB, hidden=HIDDEN, layers=LAYERS, drop_mult=DROP_MULT,
                     bptt=BPTT, pad_idx=1, max_len=MAX_LEN, lin_ftrs=LIN_FTRS, ps=PS):
    """minidl's get_text_classifier (text/models.py) in plain torch.nn, with the same parameter names:
    SentenceEncoder(AWD_LSTM) then PoolingLinearClassifier, awd_lstm_clas_config's dropouts times drop_mult."""
    from minidl.text.models import awd_lstm_clas_config
    tnn, F = torch.nn, torch.nn.functional
    p = {k: v * drop_mult for k, v in awd_lstm_clas_config.items() if k.endswith("_p")}

    def rnn_dropout(x, p, training):   # minidl's RNNDropout: one mask (batch, 1, features) per sequence
        if not training or p == 0:
            return x
        return x * F.dropout(x.new_ones(x.shape[0], 1, x.shape[2]), p)

    class WeightDropout(tnn.Module):   # DropConnect on weight_hh_l0, kept raw as weight_hh_l0_raw
        def __init__(self, module, weight_p):
            super().__init__()
            self.module, self.weight_p = module, weight_p
            self.weight_hh_l0_raw = module._parameters.pop("weight_hh_l0")

        def forward(self, x, state):
            weight = F.dropout(self.weight_hh_l0_raw, self.weight_p, self.training)
            return torch.func.functional_call(self.module, {"weight_hh_l0": weight}, (x, state))

    class AWD_LSTM(tnn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = tnn.Embedding(vocab, emb)            # no padding_idx: minidl's has none
            tnn.init.uniform_(self.encoder.weight, -0.1, 0.1)
            sizes = [emb] + [hidden] * (layers - 1) + [emb]
            # torch's LSTM init is minidl's: every weight and bias U(-1/sqrt(hidden), 1/sqrt(hidden))
            self.rnns = tnn.ModuleList([WeightDropout(tnn.LSTM(a, b, batch_first=True), p["weight_p"])
                                        for a, b in zip(sizes, sizes[1:])])
            self.reset()

        def reset(self):
            self.hidden = None

        def forward(self, ids):
            if self.hidden is not None and self.hidden[0][0].shape[1] != ids.shape[0]:
                self.reset()
            weight = self.encoder.weight
            if self.training and p["embed_p"]:   # EmbeddingDropout: whole rows (words) dropped
                weight = weight * F.dropout(weight.new_ones(weight.shape[0], 1), p["embed_p"])
            x = rnn_dropout(F.embedding(ids, weight), p["input_p"], self.training)
            new_hidden = []
            for k, rnn in enumerate(self.rnns):
                x, (h, c) = rnn(x, None if self.hidden is None else self.hidden[k])
                new_hidden.append((h.detach(), c.detach()))   # gradients stop at each chunk's start
                if k < layers - 1:
                    x = rnn_dropout(x, p["hidden_p"], self.training)
            self.hidden = new_hidden
            return x

    class SentenceEncoder(tnn.Module):
        def __init__(self):
            super().__init__()
            self.module = AWD_LSTM()

        def forward(self, ids):
            self.module.reset()
            length = ids.shape[1]
            outputs = []
            for start in range(0, length, bptt):
                out = self.module(ids[:, start:start + bptt])
                if max_len is None or start + bptt > length - max_len:
                    outputs.append(out)
            out = torch.cat(outputs, 1)
            return out, ids[:, -out.shape[1]:] == pad_idx

    def masked_concat_pool(output, mask):
        keep = 1 - mask.to(output.dtype).unsqueeze(-1)
        mean = (output * keep).sum(1) / keep.sum(1)
        maximum = (output - (1 - keep) * 1e9).amax(1)
        return torch.cat([output[:, -1], maximum, mean], 1)

    class PoolingLinearClassifier(tnn.Module):
        def __init__(self, dims, ps):
            super().__init__()
            mods = []
            for k, (a, b, q) in enumerate(zip(dims[:-1], dims[1:], ps)):
                mods += [tnn.BatchNorm1d(a), tnn.Dropout(q), tnn.Linear(a, b)]   # BN momentum 0.1, eps 1e-5
                if k < len(ps) - 1:
                    mods.append(tnn.ReLU())
            self.layers = tnn.Sequential(*mods)

        def forward(self, encoded):
            return self.layers(masked_concat_pool(*encoded))

    head_ps = [awd_lstm_clas_config["output_p"] * drop_mult] + [q * drop_mult for q in ps]
    return tnn.Sequential(SentenceEncoder(), PoolingLinearClassifier([emb * 3] + list(lin_ftrs) + [n_class], head_ps))


def no_decay(torch, model):
    """The parameters minidl's Learner gives no weight decay (wd_bn_bias=False): names ending in "bias"
    (the LSTMs' bias_ih_l0/bias_hh_l0 do not: they are decayed, as in fastai) and batch norm's."""
    bn = {id(q) for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d) for q in m.parameters()}
    return {name for name, q in model.named_parameters() if name.endswith("bias") or id(q) in bn}


def make_opt(torch, model):
    """fastai_adam over the model: AdamW, betas (0.9, 0.99), eps 1e-5, decoupled wd 0.01 but for no_decay.
    (awd_lstm_clas_split's four groups all get the same lr here, so two groups, decay and none, suffice.)"""
    skip = no_decay(torch, model)
    params = list(model.named_parameters())
    groups = [{"params": [q for n, q in params if n not in skip], "weight_decay": WD},
              {"params": [q for n, q in params if n in skip], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=LR / DIV, betas=(MOMS[0], BETA2), eps=EPS, foreach=False)


def one_cycle_at(pct, lr_max=LR):
    """(lr, beta1) of fit_one_cycle at the fraction ``pct`` of training (fastai's formulas, written afresh)."""
    def cos(a, b, t):
        return a + (1 + math.cos(math.pi * (1 - t))) * (b - a) / 2
    if pct < PCT_START:
        t = pct / PCT_START
        return cos(lr_max / DIV, lr_max, t), cos(MOMS[0], MOMS[1], t)
    t = (pct - PCT_START) / (1 - PCT_START)
    return cos(lr_max, lr_max / DIV_FINAL, t), cos(MOMS[1], MOMS[2], t)


def set_hypers(opt, lr, mom):
    for g in opt.param_groups:
        g["lr"], g["betas"] = lr, (mom, BETA2)


# ---------------------------------------------------------------- training and evaluation

def evaluate(torch, model, dl):
    """(item-weighted mean cross-entropy, accuracy) over a loader, in eval mode."""
    F = torch.nn.functional
    model.eval()
    total, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for x, y in torch_batches(torch, dl):
            out = model(x)
            total += float(F.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            n += len(y)
    return total / n, correct / n


def train(torch, args):
    torch.set_num_threads(args.threads)
    dls, test_dl = build_data(args.seed, args.limit, args.cache)
    torch.manual_seed(args.torch_seed)
    model = torch_classifier(torch, len(dls.vocab), len(dls.classes), pad_idx=dls.vocab.stoi["xxpad"])
    opt = make_opt(torch, model)
    F = torch.nn.functional
    n_batches, epochs = len(dls.train), args.epochs
    short = len(dls.train.texts) % BS != 0
    if args.drop_last and short:   # fastai's training loader drops its last, incomplete batch (drop_last=shuffle)
        n_batches -= 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); data seed {args.seed}, torch seed "
          f"{args.torch_seed}; {sum(q.numel() for q in model.parameters())} parameters; AR alpha {args.alpha}, "
          f"TAR beta {args.beta}; drop_last {args.drop_last}")
    print(f"{'epoch':>5} {'train_loss':>10} {'(mean)':>8} {'valid_loss':>10} {'accuracy':>8} {'time':>7}")
    smooth, count = 0.0, 0
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        losses = []
        batches = torch_batches(torch, dls.train, epoch)
        if args.drop_last:
            batches = ((x, y) for x, y in batches if len(y) == BS)
        for it, (x, y) in enumerate(batches):
            set_hypers(opt, *one_cycle_at(min((epoch + it / n_batches) / epochs, 1.0)))
            encoded = model[0](x)
            loss = F.cross_entropy(model[1](encoded), y)
            loss_grad = loss
            if args.alpha:   # AR and TAR as fastai's RNNRegularizer: on the encoder's outputs (padding included)
                loss_grad = loss_grad + args.alpha * encoded[0].pow(2).mean()
            if args.beta and encoded[0].shape[1] > 1:
                loss_grad = loss_grad + args.beta * (encoded[0][:, 1:] - encoded[0][:, :-1]).pow(2).mean()
            loss_grad.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            count += 1
            smooth = 0.98 * smooth + 0.02 * losses[-1]    # the Recorder's smoothed loss (beta 0.98, debiased)
        valid_loss, valid_acc = evaluate(torch, model, dls.valid)
        print(f"{epoch:>5} {smooth / (1 - 0.98 ** count):>10.4f} {np.mean(losses):>8.4f} {valid_loss:>10.4f} "
              f"{valid_acc:>8.4f} {time.perf_counter() - start:>6.1f}s", flush=True)
    _, valid_acc = evaluate(torch, model, dls.valid)
    _, test_acc = evaluate(torch, model, test_dl)
    print(f"valid accuracy {valid_acc:.4f}")
    print(f"test accuracy {test_acc:.4f}")
    return valid_acc, test_acc


# ---------------------------------------------------------------- parity with minidl (float64)

def check(torch, args):
    """minidl's classifier and the torch twin, float64, the same weights: outputs, loss, every parameter's
    gradient and batch norm's running statistics on two real training batches (dropout off, batch norm in
    training mode), then three optimizer steps of fastai_adam (minidl's Learner's groups, wd exclusions) against
    torch's AdamW, and the one-cycle schedule against minidl's. Returns the largest relative difference."""
    import minidl
    from minidl.learn import accuracy
    from minidl.nn import BatchNorm1d
    from minidl.optim.schedule import one_cycle
    from minidl.text.learner import text_classifier_learner
    from minidl.text.models import AWD_LSTM
    torch.set_num_threads(args.threads)
    dls, _ = build_data(args.seed, args.limit, args.cache)
    minidl.set_seed(args.seed)
    learn = text_classifier_learner(dls, AWD_LSTM, seq_len=BPTT, config=dict(emb_sz=EMB, n_hid=HIDDEN, n_layers=LAYERS),
                                    drop_mult=DROP_MULT, pretrained=False, metrics=accuracy, max_len=MAX_LEN)
    ours = learn.model
    torch.manual_seed(args.torch_seed)
    fresh = dict(torch_classifier(torch, len(dls.vocab), len(dls.classes)).named_parameters())
    print("initialisation, minidl vs torch twin (min, max, std):")
    for name, q in ours.named_parameters():
        a, b = q.numpy(), fresh[name].detach().numpy()
        print(f"  {name:<38} ({a.min():+.4f}, {a.max():+.4f}, {a.std():.4f})  ({b.min():+.4f}, {b.max():+.4f}, "
              f"{b.std():.4f})")
    for t in list(ours.parameters()) + list(ours.buffers()):
        if t.dtype.kind == "f":
            t.data = t.data.astype(np.float64)
    twin = torch_classifier(torch, len(dls.vocab), len(dls.classes), pad_idx=dls.vocab.stoi["xxpad"]).double()
    state = {k: torch.from_numpy(v.numpy().copy()) for k, v in ours.state_dict().items()}
    twin.load_state_dict(state, strict=True)
    assert set(dict(twin.named_parameters())) == set(dict(ours.named_parameters())), "parameter names differ"
    print(f"loaded minidl's {len(state)} tensors into the twin (same names); "
          f"dropouts of the twin: {[m.p for m in twin.modules() if isinstance(m, torch.nn.Dropout)]}")

    def eval_but_bn(model, bn_type):
        model.eval()
        for m in model.modules():
            if isinstance(m, bn_type):
                m.train()

    eval_but_bn(ours, BatchNorm1d)
    eval_but_bn(twin, torch.nn.BatchNorm1d)
    worst = 0.0

    def compare(what, a, b):
        nonlocal worst
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        diff = float(np.abs(a - b).max()) if a.size else 0.0
        rel = diff / max(float(np.abs(b).max()), 1e-300)
        worst = max(worst, rel)
        flag = "" if rel < 1e-8 else "   <-- MISMATCH"
        print(f"  {what:<42} max|diff| {diff:.2e}  max|torch| {float(np.abs(b).max()):.2e}  rel {rel:.1e}{flag}")

    batches = list(zip(range(2), dls.train))
    F = torch.nn.functional
    for k, (_, (x, y)) in enumerate(batches):
        print(f"batch {k}: ids {tuple(x.shape)}, {int((x.numpy() == dls.vocab.stoi['xxpad']).sum())} pads")
        out = ours(x)
        loss = learn.loss_func(out, y)
        loss.backward()
        tx, ty = torch.from_numpy(x.numpy()), torch.from_numpy(y.numpy())
        tout = twin(tx)
        tloss = F.cross_entropy(tout, ty)
        tloss.backward()
        compare("logits", out.numpy(), tout.detach().numpy())
        compare("loss", loss.numpy(), tloss.detach().numpy())
        tgrads = dict(twin.named_parameters())
        for name, q in ours.named_parameters():
            compare(f"grad {name}", q.grad.numpy(), tgrads[name].grad.numpy())
        tbufs = dict(twin.named_buffers())
        for name, b in ours.named_buffers():
            if "running" in name:
                compare(f"buffer {name}", b.numpy(), tbufs[name].numpy())
        ours.zero_grad()
        twin.zero_grad()

    # the optimizer: minidl's Learner's own (create_opt after unfreeze) against make_opt, three steps
    learn.unfreeze()
    opt = learn.create_opt()
    ours_skip = {n for n, q in ours.named_parameters() if id(q) in opt.no_weight_decay}
    twin_skip = no_decay(torch, twin)
    print(f"no weight decay, minidl: {sorted(ours_skip)}")
    print(f"  the same set in the twin: {ours_skip == twin_skip}; wd {opt.param_groups[0]['wd']}, eps "
          f"{opt.param_groups[0]['eps']}, sqr_mom {opt.param_groups[0]['sqr_mom']}, "
          f"{len(opt.param_groups)} groups, AdamW (decoupled): {type(opt).__name__}")
    topt = make_opt(torch, twin)
    sched = one_cycle(LR, div=DIV, div_final=DIV_FINAL, pct_start=PCT_START, moms=learn.moms)
    n_steps = 5 * len(dls.train)
    sched_diff = max(max(abs(sched["lr"](i / n_steps) - one_cycle_at(i / n_steps)[0]) / LR,
                         abs(sched["mom"](i / n_steps) - one_cycle_at(i / n_steps)[1])) for i in range(n_steps))
    print(f"one-cycle schedule over {n_steps} steps, minidl's one_cycle vs this script's: max rel diff "
          f"{sched_diff:.1e} (moms {learn.moms})")
    for step, (x, y) in zip(range(3), dls.train):
        lr, mom = one_cycle_at(step / n_steps * 40)        # larger steps than the first ones of a cycle
        opt.set_hyper("lr", lr)
        opt.set_hyper("mom", mom)
        set_hypers(topt, lr, mom)
        learn.loss_func(ours(x), y).backward()
        opt.step()
        opt.zero_grad()
        F.cross_entropy(twin(torch.from_numpy(x.numpy())), torch.from_numpy(y.numpy())).backward()
        topt.step()
        topt.zero_grad()
    tparams = dict(twin.named_parameters())
    print("after 3 optimizer steps (lr up to %.1e):" % lr)
    for name, q in ours.named_parameters():
        compare(f"param {name}", q.numpy(), tparams[name].detach().numpy())
    print(f"largest relative difference: {worst:.1e} ({'parity' if worst < 1e-8 else 'MISMATCH'})")
    return worst


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42, help="the data's: hold-out, split and batch order")
    parser.add_argument("--torch-seed", type=int, help="torch's initialisation and dropout (default: --seed)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, help="at most this many reviews (a quick run)")
    parser.add_argument("--cache", help="token cache folder (default: imdb.py's, examples/output/imdb/tokens)")
    parser.add_argument("--alpha", type=float, default=0.0, help="AR (fastai's RNNRegularizer alpha: 2); default off, "
                        "as the minidl runs that gave 0.80 valid / 0.82 test")
    parser.add_argument("--beta", type=float, default=0.0, help="TAR (fastai's RNNRegularizer beta: 1); default off")
    parser.add_argument("--drop-last", action="store_true", help="skip the training set's last, incomplete batch "
                        "(fastai's default; minidl keeps it: 1669 reviews give a batch of 5)")
    parser.add_argument("--check", action="store_true", help="parity with minidl in float64, then stop")
    args = parser.parse_args(argv)
    if args.torch_seed is None:
        args.torch_seed = args.seed
    import torch
    return check(torch, args) if args.check else train(torch, args)


if __name__ == "__main__":
    main()
