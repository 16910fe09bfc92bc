"""Chapter 1's text model, the ULMFiT way: did the reviewer like the film? (IMDb reviews, an AWD-LSTM)

The book's cell fine-tunes fastai's AWD-LSTM, pretrained on Wikipedia, straight into a classifier:

    dls = TextDataLoaders.from_folder(untar_data(URLs.IMDB), valid='test')
    learn = text_classifier_learner(dls, AWD_LSTM, drop_mult=0.5, metrics=accuracy)
    learn.fine_tune(4, 1e-2)

ULMFiT (Howard and Ruder, 2018) puts a step in between, and this example runs it:
  (a) a language model learns the reviews' own English (to predict each next word: no labels
      needed), starting from fastai's WikiText-103 weights with --full (when found or downloadable;
      else, loudly, from random weights), from random weights at the default, smaller, settings;
  (b) a classifier starts from its encoder and is unfrozen gradually: the head alone, then the last
      LSTM layer too, then everything (each earlier layer at lower rates: discriminative rates).

Data: --data PATH, else $MINIDL_DATA, else ~/.minidl/data (in each, the folder itself or the one
named): every labelled review in imdb_reviews/reviews.csv (review,sentiment), imdb_sample/texts.csv
(fastai's sample: label,text,is_valid) and imdb/ (IMDb's train/ and test/ folders of pos/ and neg/
.txt files), pooled, a review found twice kept once. With none of them, IMDb (fastai's archive,
144 MB, md5-checked) is downloaded into the cache; offline (or --no-download) it trains on a
SYNTHETIC stand-in (made-up reviews of liked and disliked films) and says so.

Test set: --hold-out N reviews (default 1200) drawn by --seed and used for nothing else, not even the
language model; or --test FILE, a CSV of review,sentiment (its reviews taken out of the pool). The
rest is split into training and validation (--valid-pct); every choice looks at validation only.
Prints `valid accuracy X` and, last, `test accuracy X`.

Sizes: by default a 2-layer AWD-LSTM (embeddings 200, hidden 512), the language model trained for 4
epochs, then the classifier for 5, all of it at once in one cycle at 5e-3 (about 20 minutes on 2 CPU
cores); --gradual is ULMFiT's gradual unfreezing instead, which after a language model this small
learnt nothing (README, "Reproduced results"); --full is the book's (400, 1152, 3 layers) from
WikiText-103. --no-lm trains the classifier from random weights, for the comparison (one cycle at
5e-3, the recipe that reached 0.8375 in PyTorch).
--ensemble trains a second model that reads every review backwards (its own language model too) and
averages the two models' probabilities, as ULMFiT does. `--no-lm --ensemble` is the recipe that
reaches 0.83 on the held-out reviews (README, "Reproduced results").
--drop-mult scales the classifier's dropouts: 0.5 after a language model (the book's value for a
pretrained encoder), 1.0 from random weights, chosen on validation: at 0.5 classifiers trained from
random weights stayed at chance (a training loss of 0.69 for the whole cycle) or took off late in 6
of 10 runs, at 1.0 all 4 took off in their first two epochs (README, "Reproduced results").
--limit N (at most N reviews for training and validation, N for the test) makes a quick run.
--device cuda trains on a GPU (emu: the CUDA kernels on the CPU); --distributed, under mpirun -n N, gives
each rank a part of every batch (README, "Data-parallel training").
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import minidl
from minidl.data import RandomSplitter
from minidl.data.external import DataNotFoundError, cache_dir, find_data
from minidl.learn import accuracy
from minidl.text.data import TextDataLoaders, read_text_file
from minidl.text.learner import language_model_learner, text_classifier_learner
from minidl.text.models import AWD_LSTM

LABELS = ("negative", "positive")
SMALL = dict(emb=200, hidden=512, layers=2, lm_lr=5e-3)
FULL = dict(emb=400, hidden=1152, layers=3, lm_lr=2e-3)   # fastai's AWD-LSTM (the sizes of its WikiText-103
                                                          # weights), fine-tuned at the book's rate (chapter 10)
EXAMPLES = ["I really liked that movie!", "A dull, predictable film: two hours I will never get back."]


def read_csv(path, text_col, label_col):
    """(review, sentiment) rows of a CSV; an error naming the file and row for an empty review or another label."""
    df = pd.read_csv(path)
    missing = [c for c in (text_col, label_col) if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: no column {missing[0]!r} (it has {list(df.columns)})")
    df = df.rename(columns={text_col: "review", label_col: "sentiment"})[["review", "sentiment"]]
    for i, (review, label) in df.iterrows():
        if not isinstance(review, str) or not review.strip():
            raise ValueError(f"{path}, row {i}: the review is empty")
        if label not in LABELS:
            raise ValueError(f"{path}, row {i}: the sentiment is {label!r}, not one of {LABELS}")
    return df


def read_folders(folder):
    """IMDb's layout: {train,test}/{pos,neg}/*.txt (each file one review, UTF-8)."""
    rows = [(read_text_file(f), label) for split in ("train", "test") for short, label in (("neg", "negative"),
            ("pos", "positive")) for f in sorted((folder / split / short).glob("*.txt"))]
    return pd.DataFrame(rows, columns=["review", "sentiment"])


SOURCES = [  # (folder name, what it holds, how to read it)
    ("imdb_reviews", "reviews.csv", lambda f: read_csv(f / "reviews.csv", "review", "sentiment")),
    ("imdb_sample", "texts.csv", lambda f: read_csv(f / "texts.csv", "text", "label")),
    ("imdb", "train/pos", read_folders),
]


def synthetic_reviews(n=1600, seed=0, prefix=""):
    """A stand-in for offline runs: n made-up reviews, each a few sentences of neutral film talk with
    words of its sentiment (and now and then one of the other) mixed in; a DataFrame review, sentiment.
    ``prefix`` (formatted with seed and k) starts review k, to tell apart reviews of different seeds."""
    rng = np.random.default_rng(seed)
    neutral = ("the film", "this movie", "the plot", "the actors", "the ending", "the director", "the music",
               "the story", "my friends", "the second half", "the cast", "the script")
    verbs = ("was", "seemed", "felt", "turned out")
    words = {"positive": ("wonderful", "moving", "brilliant", "great", "funny", "beautiful", "superb", "gripping"),
             "negative": ("boring", "dull", "awful", "terrible", "predictable", "bad", "clumsy", "tedious")}
    rows = []
    for k in range(n):
        label = LABELS[k % 2]
        other = LABELS[1 - k % 2]
        sentences = []
        for _ in range(rng.integers(3, 8)):
            kind = label if rng.random() < 0.9 else other
            sentences.append(f"{rng.choice(neutral).capitalize()} {rng.choice(verbs)} {rng.choice(words[kind])}.")
        rows.append((prefix.format(seed=seed, k=k) + " ".join(sentences), label))
    return pd.DataFrame(rows, columns=["review", "sentiment"])


def load_reviews(data, download=True):
    """Every labelled review found (a DataFrame review, sentiment, duplicates dropped) and where they came from."""
    if data is not None:
        roots = [Path(data)]
    else:
        roots = [Path(os.environ["MINIDL_DATA"])] if os.environ.get("MINIDL_DATA") else []
        roots.append(cache_dir())
    frames, found = [], []
    for name, holds, read in SOURCES:
        folder = next((f for root in roots for f in (root / name, root) if (f / holds).exists()), None)
        if folder is not None:
            frames.append(read(folder))
            found.append(f"{folder} ({len(frames[-1])})")
    if not frames:
        looked = ", ".join(str(r) for r in roots)
        try:
            folder = find_data("imdb", data, download=download)   # downloads IMDb when no folder was given
        except DataNotFoundError as e:
            if data is not None:
                sys.exit(f"imdb: no reviews in {looked} (none of imdb_reviews/reviews.csv, imdb_sample/texts.csv, "
                         f"imdb/).\n{e}")
            print(f"{e}\n\n*** No IMDb reviews found in {looked}: training on a SYNTHETIC stand-in (made-up "
                  "reviews). Its accuracy says nothing about IMDb's. ***", file=sys.stderr)
            return synthetic_reviews(), "synthetic stand-in (no data found)"
        frames, found = [read_folders(folder)], [str(folder)]
    df = pd.concat(frames, ignore_index=True).drop_duplicates("review", ignore_index=True)
    return df, ", ".join(found)


def split_test(df, args):
    """(pool, test): the test reviews (--test FILE, else --hold-out N drawn by --seed) and the rest."""
    if args.test:
        test = read_csv(args.test, "review", "sentiment").drop_duplicates("review", ignore_index=True)
        pool = df[~df.review.isin(set(test.review))].reset_index(drop=True)
    else:
        if not 0 < args.hold_out < len(df):
            raise SystemExit(f"imdb: --hold-out {args.hold_out} of {len(df)} reviews leaves nothing to train on")
        order = np.random.default_rng(args.seed).permutation(len(df))
        test, pool = df.iloc[order[:args.hold_out]], df.iloc[order[args.hold_out:]]
    return pool.iloc[:args.limit].reset_index(drop=True), test.iloc[:args.limit].reset_index(drop=True)


def gradual_unfreezing(learn, epochs, lr):
    """ULMFiT's schedule: one cycle for the head alone, one with the last LSTM layer too, the rest for everything,
    at half the head's rate; each group 2.6 times slower than the one above it (discriminative rates: what the
    language model learnt in the lower layers is the most general). ULMFiT ends at lr / 20, after a language
    model trained on Wikipedia as well; one trained on these reviews alone needs more of the rest to change."""
    learn.freeze()
    learn.fit_one_cycle(1, lr)
    n_groups = len(learn.opt.param_groups)
    rates = slice(lr / 2 / 2.6 ** (n_groups - 1), lr / 2)
    learn.freeze_to(-2)
    learn.fit_one_cycle(1, rates)
    learn.unfreeze()
    learn.fit_one_cycle(epochs - 2, rates)


def ulmfit(pool, splits, config, settings, args, tokens, backwards=False):
    """(a) the language model, on the training reviews' text (validated on the validation's), unless --no-lm;
    (b) the classifier, with its vocabulary and encoder. ``backwards``: both read every review from its end."""
    suffix = "_bwd" if backwards else ""
    vocab = None
    if not args.no_lm:
        dls_lm = TextDataLoaders.from_texts(pool.review, splits=splits, is_lm=True, bs=args.bs, seq_len=args.bptt,
                                            seed=args.seed, cache=tokens, device=args.device, backwards=backwards)
        lm = language_model_learner(dls_lm, AWD_LSTM, config=config, drop_mult=0.3,
                                    pretrained=args.full and not backwards, path=args.out)
        if args.distributed:
            lm.to_distributed()
        if not all(p.requires_grad for p in lm.model.parameters()):   # WikiText-103 loaded, its LSTM frozen:
            lm.fit_one_cycle(1, 2e-2)                                 # the new words' embeddings first
            lm.unfreeze()
        lm.fit_one_cycle(args.lm_epochs, settings["lm_lr"])
        lm.save_encoder("imdb_encoder" + suffix)
        vocab = dls_lm.vocab
    dls = TextDataLoaders.from_texts(pool.review, pool.sentiment, splits=splits, vocab=vocab, bs=args.bs,
                                     seed=args.seed, cache=tokens, max_len=args.max_len, device=args.device,
                                     backwards=backwards)
    learn = text_classifier_learner(dls, AWD_LSTM, seq_len=args.bptt, config=config, drop_mult=args.drop_mult,
                                    pretrained=False, metrics=accuracy, max_len=args.max_len, path=args.out)
    if args.distributed:
        learn.to_distributed()
    if not args.no_lm:
        learn.load_encoder("imdb_encoder" + suffix)
    if args.no_lm or not args.gradual:    # everything at once, at half the head's rate (5e-3 by default)
        learn.unfreeze()
        learn.fit_one_cycle(args.epochs, args.lr / 2)
    else:
        gradual_unfreezing(learn, args.epochs, args.lr)
    return learn


def accuracy_of(learners, make_dl=None):
    """The accuracy of the learners' mean probabilities on the validation set (or on ``make_dl(dls)``'s texts),
    each learner reading them its own way (forwards, backwards); with one learner, its accuracy. Printed per
    learner when there are several."""
    probs = []
    for learn in learners:
        dl = make_dl(learn.dls) if make_dl is not None else None
        p, y = learn.get_preds(dl=dl)
        probs.append(p.numpy())
        if len(learners) > 1:
            name = "backwards" if learn.dls.backwards else "forwards"
            print(f"  {name}: {'test' if make_dl else 'valid'} accuracy {float((p.numpy().argmax(1) == y.numpy()).mean()):.4f}")
        if len(probs) > 1 and not np.array_equal(y.numpy(), targets):
            raise RuntimeError("imdb: the two directions' loaders ordered the reviews differently")
        targets = y.numpy()
    return float((np.mean(probs, axis=0).argmax(1) == targets).mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="folder holding the reviews (default: $MINIDL_DATA, the cache, a download)")
    parser.add_argument("--hold-out", type=int, default=1200, help="reviews set aside as the test set")
    parser.add_argument("--test", help="a CSV (review,sentiment) to test on instead of a hold-out")
    parser.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                        help="download IMDb when no reviews are found (--no-download: the synthetic stand-in)")
    parser.add_argument("--valid-pct", type=float, default=0.2)
    parser.add_argument("--full", action="store_true", help="the book's AWD-LSTM, from WikiText-103 weights")
    parser.add_argument("--no-lm", action="store_true", help="no language model: the classifier from random weights")
    parser.add_argument("--gradual", action=argparse.BooleanOptionalAction, default=False,
                        help="ULMFiT's gradual unfreezing after the language model (default: everything trains "
                             "from the start, one cycle at half --lr, as with --no-lm)")
    parser.add_argument("--emb", type=int, help=f"embedding size (default {SMALL['emb']}, --full {FULL['emb']})")
    parser.add_argument("--hidden", type=int, help=f"LSTM size (default {SMALL['hidden']}, --full {FULL['hidden']})")
    parser.add_argument("--layers", type=int, help=f"LSTM layers (default {SMALL['layers']}, --full {FULL['layers']})")
    parser.add_argument("--lm-epochs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5, help="the classifier's (--gradual: at least 3: head, last "
                                                             "layer, all)")
    parser.add_argument("--lm-lr", type=float, help=f"default {SMALL['lm_lr']}, --full {FULL['lm_lr']}")
    parser.add_argument("--lr", type=float, default=1e-2, help="the classifier's, for the head")
    parser.add_argument("--ensemble", action="store_true",
                        help="ULMFiT's two models: the same again reading every review backwards, probabilities averaged")
    parser.add_argument("--drop-mult", type=float, help="the classifier's dropouts x this (fastai's knob; default: "
                                                         "0.5 after a language model, 1.0 from random weights)")
    parser.add_argument("--bs", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=72, help="tokens per window (language model) or chunk (classifier)")
    parser.add_argument("--max-len", type=int, default=400, help="the classifier reads a review's last MAX_LEN tokens")
    parser.add_argument("--limit", type=int, help="at most this many reviews to train and validate on, and to test")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default="examples/output/imdb", help="folder for the encoder and the token cache")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "emu"],
                        help="where the batches and the model go (emu: the CUDA kernels on the CPU)")
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel training on the ranks of mpirun -n N ... --distributed (README)")
    args = parser.parse_args(argv)
    if args.distributed:  # rank 0 prints "world size: N" and writes the encoder; the other ranks stay quiet
        minidl.distributed.init(device=args.device, only_rank0_prints=True)
    if args.epochs < 3 and args.gradual and not args.no_lm:
        parser.error("--epochs: gradual unfreezing needs at least 3 (the head, the last layer, everything)")
    settings = {k: getattr(args, k) or (FULL if args.full else SMALL)[k] for k in SMALL}
    if args.drop_mult is None:
        args.drop_mult = 1.0 if args.no_lm else 0.5
    config = dict(emb_sz=settings["emb"], n_hid=settings["hidden"], n_layers=settings["layers"])

    df, source = load_reviews(args.data, args.download)
    pool, test = split_test(df, args)
    train, valid = RandomSplitter(args.valid_pct, args.seed)(len(pool))
    print(f"data: {source}; {len(df)} distinct reviews: {len(train)} to train on, {len(valid)} to validate, "
          f"{len(test)} to test ({'from ' + args.test if args.test else 'held out'})")
    start_from = "no language model" if args.no_lm else \
        f"a language model from {'WikiText-103 (--full)' if args.full else 'random weights'}"
    print(f"AWD-LSTM: embeddings {settings['emb']}, hidden {settings['hidden']}, {settings['layers']} layers; "
          f"{start_from}")
    tokens = Path(args.out) / "tokens"
    start = time.perf_counter()
    minidl.set_seed(args.seed)

    directions = (False, True) if args.ensemble else (False,)
    learners = [ulmfit(pool, (train, valid), config, settings, args, tokens, backwards) for backwards in directions]
    train_time = time.perf_counter() - start

    valid_accuracy, test_accuracy = (accuracy_of(learners, dl) for dl in (
        None, lambda dls: dls.test_dl(test.review, test.sentiment, cache=tokens)))
    learn = learners[0]
    for text in EXAMPLES:
        label, _, probs = learn.predict(text)
        print(f"predict({text!r}): {label} ({float(probs.numpy().max()):.3f})")
    print(f"wall time: {train_time:.1f} s to train on {os.cpu_count()} CPU cores")
    print(f"valid accuracy {valid_accuracy:.4f}")
    print(f"test accuracy {test_accuracy:.4f}")
    return valid_accuracy, test_accuracy


if __name__ == "__main__":
    main()
