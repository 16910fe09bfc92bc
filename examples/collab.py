"""Collaborative filtering on MovieLens: fastai's chapter-1 recommender, interpreted as in chapter 8.

Every user and every movie gets 50 learned factors and a bias; a rating is predicted
from their dot product. After 5 epochs of fit_one_cycle (lr 5e-3, weight decay 0.1) the
validation MSE on ml-latest-small is about 0.71 (0.708; PyTorch with the same recipe,
split and batches: 0.705).
Then the movies with the lowest and highest bias, and a PCA map of the movie factors.

    python examples/collab.py --data PATH    # a folder with ml-latest-small or ml-100k's files
    python examples/collab.py                # finds ml-latest-small (MINIDL_DATA, cache, download)

With no data anywhere it trains on a synthetic ratings table, and says so.
--device cpu|cuda|emu picks where the model trains; --limit N keeps the first N ratings (quick runs).
--distributed trains data-parallel: mpirun -n 2 python examples/collab.py --distributed.
"""
import argparse
import sys
import time
from pathlib import Path


def find_movielens(data):
    """The folder holding MovieLens' files (--data, else find_data), or None when there is none."""
    from minidl.collab.core import MOVIELENS_LAYOUTS
    from minidl.data import DataNotFoundError, find_data

    if data is not None and any(all((data / f).is_file() for f in files) for files in MOVIELENS_LAYOUTS.values()):
        return data
    try:
        return find_data("ml-latest-small", data)  # also looks in data/ml-latest-small, MINIDL_DATA, the cache
    except DataNotFoundError as e:
        print(f"{e}\n", file=sys.stderr)
        print("#" * 78 + "\n# No MovieLens data: training on a SYNTHETIC ratings table instead.\n"
              "# Its MSE is NOT comparable with the book's or with ml-latest-small's.\n" + "#" * 78,
              file=sys.stderr)
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="folder with ratings.csv + movies.csv (ml-latest-small) or u.data + u.item (ml-100k)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--wd", type=float, default=0.1)
    parser.add_argument("--factors", type=int, default=50)
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=Path("examples/output"), help="folder for item_pca.png")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "emu"],
                        help="where the batches and the model go (emu: the CUDA kernels on the CPU)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N ratings (quick runs)")
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel training on the ranks of mpirun -n N ... --distributed (README)")
    args = parser.parse_args(argv)

    import minidl
    from minidl.collab import CollabDataLoaders, collab_learner, synthetic_ratings
    from minidl.collab.core import read_movielens

    if args.distributed:  # mpirun -n 2 python examples/collab.py --distributed; only rank 0 prints
        minidl.distributed.init(device=args.device, only_rank0_prints=True)
    minidl.set_seed(args.seed)
    start = time.perf_counter()
    folder = find_movielens(args.data)
    if folder is not None:
        ratings = read_movielens(folder)
    else:
        ratings = synthetic_ratings(n_users=600, n_items=1000, density=0.1, seed=0)
    if args.limit is not None:
        ratings = ratings.iloc[:args.limit].reset_index(drop=True)
    dls = CollabDataLoaders.from_df(ratings, valid_pct=0.2, seed=args.seed, bs=args.bs, device=args.device,
                                    path=folder or ".")
    n_train, n_valid = len(dls.train.dataset), len(dls.valid.dataset)
    print(f"{n_train + n_valid:,} ratings ({n_valid:,} for validation) of {len(dls.classes[dls.user_name]) - 1:,} "
          f"users for {len(dls.classes[dls.item_name]) - 1:,} movies, from {folder or 'the synthetic table'}")
    dls.show_batch(5)

    learn = collab_learner(dls, n_factors=args.factors, y_range=(0, 5.5))
    if args.distributed:
        learn.to_distributed()
    learn.fit_one_cycle(args.epochs, args.lr, wd=args.wd)

    lowest, highest = learn.top_biases(5)
    print("\nLowest item bias among the 1000 most rated (disliked even by those who like their kind):")
    print(lowest.to_string(index=False, float_format="%.3f"))
    print("\nHighest item bias (liked even by those who do not usually like their kind):")
    print(highest.to_string(index=False, float_format="%.3f"))
    if minidl.distributed.is_main_process():
        plot = learn.plot_item_pca(str(args.out / "item_pca.png"), n=50)
        print(f"\nPCA of the movie factors: {plot}")

    preds, targets = learn.get_preds()
    mse = float(((preds.numpy() - targets.numpy()) ** 2).mean())
    print(f"wall time: {time.perf_counter() - start:.1f} s")
    if folder is None:
        print("SYNTHETIC data: this MSE is not comparable with the book's or with ml-latest-small's")
    print(f"valid mse: {mse:.4f}")
    return mse


if __name__ == "__main__":
    main()
