"""A tour of the Learner: the same kind of network as 00, trained the fastai way.

Data in a DataLoaders, a model, a Learner; lr_find suggests a learning rate, and
fit_one_cycle trains with fastai's schedule and prints its table. The code between
the "README" markers is the README's ten-line example.
Run it with `make demo` or `python examples/01_learner_tour.py [--epochs 5] [--device cpu|cuda|emu]`.
"""
import argparse


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default="examples/output", help="folder for the lr_find plot")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "emu"],
                        help="where the batches go; the Learner puts the model on the loaders' device")
    args = parser.parse_args(argv)

    # README:start
    import numpy as np
    import minidl, minidl.nn as nn
    from minidl.data import ArrayDataset, DataLoaders, RandomSplitter
    from minidl.learn import Learner, accuracy

    minidl.set_seed(42)
    x = np.random.default_rng(0).standard_normal((4000, 8)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] + np.sin(2 * x[:, 2]) > 0).astype(np.int64)     # a curved boundary
    train, valid = RandomSplitter(valid_pct=0.2, seed=42)(len(x))
    dls = DataLoaders.from_dsets(ArrayDataset(x[train], y[train]), ArrayDataset(x[valid], y[valid]), bs=64,
                                 device=args.device)      # 'cpu', 'cuda' or 'emu'
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.BatchNorm1d(64), nn.Linear(64, 2))
    learn = Learner(dls, model, metrics=accuracy, path=args.out)
    print(learn.lr_find())                  # SuggestedLRs(valley=..., minimum=..., steep=...), lr_find.png
    learn.fit_one_cycle(args.epochs, lr_max=1e-2)
    # README:end
    return learn.validate()[1]


if __name__ == "__main__":
    main()
