"""Collaborative filtering data: who rated what, and how much.

A ratings table has one row per (user, item, rating). Users and items are categories,
so the tabular machinery does the work: Categorify gives every user and every item an
integer code fitted on the training rows (0 is `#na#`, which also takes a user or an
item that only appears in the validation rows), and the rating is a regression target.
A batch is ``(x, y)``: x int64 (bs, 2) holding [user code, item code], y float32 (bs, 1).

    ratings = read_movielens("ml-latest-small")          # user, title, rating
    dls = CollabDataLoaders.from_df(ratings, seed=42)     # or .from_movielens(folder)
    dls.classes["title"][:3]                              # ['#na#', "'71 (2014)", ...]
"""
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import ArrayDataset, DataLoaders, RandomSplitter
from ..tabular import Categorify, TabularDataLoaders, TabularPandas
from ..tabular.core import describe_rows, pop_read_csv_kwargs

# The two MovieLens layouts we read: (ratings file, items file) for each.
MOVIELENS_LAYOUTS = {
    "ml-latest-small": ("ratings.csv", "movies.csv"),
    "ml-100k": ("u.data", "u.item"),
}


def read_movielens(folder):
    """A MovieLens folder as a DataFrame with the columns user, title, rating (one row per rating).

    Reads either layout, whichever the folder holds:

    * ml-latest-small: ``ratings.csv`` (userId,movieId,rating,timestamp with a header) and
      ``movies.csv`` (movieId,title,genres);
    * ml-100k: ``u.data`` (user, item, rating, timestamp; tab-separated, no header) and
      ``u.item`` (item id|title|...; pipe-separated, latin-1).

    The titles are merged in, so items are named by title as in fastai's chapter 8 (two
    movies that share a title become one item, as in the book). Both layouts number the
    users, the items and the ratings: text (or a gap) in those columns is refused, naming
    the file, the column and the rows, rather than read as strings or NaN ratings.
    """
    folder = Path(folder).expanduser()
    layout = _layout(folder)
    ratings_file, items_file = (folder / f for f in MOVIELENS_LAYOUTS[layout])
    if layout == "ml-latest-small":
        ratings = pd.read_csv(ratings_file, usecols=["userId", "movieId", "rating"])
        items = pd.read_csv(items_file, usecols=["movieId", "title"])
        for column in ("userId", "movieId", "rating"):
            ratings[column] = _numbers(ratings, column, f"column {column!r}", ratings_file)
        items["movieId"] = _numbers(items, "movieId", "column 'movieId'", items_file)
        ratings = ratings.rename(columns={"userId": "user", "movieId": "item"})
        items = items.rename(columns={"movieId": "item"})
    else:
        ratings = pd.read_csv(ratings_file, sep="\t", header=None, usecols=[0, 1, 2],
                              names=["user", "item", "rating"])
        items = pd.read_csv(items_file, sep="|", header=None, usecols=[0, 1], names=["item", "title"],
                            encoding="latin-1")
        for column, name in [("user", "column 1 (user id)"), ("item", "column 2 (item id)"),
                             ("rating", "column 3 (rating)")]:
            ratings[column] = _numbers(ratings, column, name, ratings_file)
        items["item"] = _numbers(items, "item", "column 1 (item id)", items_file)
    unknown = ~ratings["item"].isin(items["item"])
    if unknown.any():
        raise ValueError(f"read_movielens: {unknown.sum()} ratings in {ratings_file} are for item ids not in "
                         f"{items_file} (e.g. {ratings['item'][unknown].iloc[0]}); the files do not belong together")
    items = items.drop_duplicates("item")  # one title per id, so the merge cannot duplicate ratings
    df = ratings.merge(items, on="item", how="left")  # a left merge keeps the ratings' order
    return pd.DataFrame({"user": df["user"].to_numpy(), "title": df["title"].to_numpy(),
                         "rating": df["rating"].to_numpy(np.float32)})


def _numbers(table, column, name, file):
    """``table[column]`` as numbers; text, a gap or inf -> ValueError naming the file, the column and rows."""
    values = pd.to_numeric(table[column], errors="coerce")
    bad = pd.Series(~np.isfinite(values.to_numpy(np.float64, na_value=np.nan)), index=table.index)
    if bad.any():
        raise ValueError(f"read_movielens: {name} of {file} must hold numbers: {describe_rows(table[column], bad)} "
                         f"(rows count the data lines from 0); correct or delete those lines")
    return values


def _layout(folder):
    for layout, files in MOVIELENS_LAYOUTS.items():
        if all((folder / f).is_file() for f in files):
            return layout
    wanted = " or ".join(" + ".join(files) for files in MOVIELENS_LAYOUTS.values())
    if not folder.is_dir():
        raise FileNotFoundError(f"read_movielens: {folder} is not a folder; pass the folder holding {wanted}")
    hint = ""
    inside = [folder / name for name in MOVIELENS_LAYOUTS if (folder / name).is_dir()]
    if inside:
        hint = f" It has a sub-folder {inside[0].name}/: did you mean {inside[0]}?"
    raise FileNotFoundError(f"read_movielens: {folder} holds neither MovieLens layout: it needs {wanted} "
                            f"(ml-latest-small or ml-100k from https://grouplens.org/datasets/movielens/).{hint}")


def synthetic_ratings(n_users=300, n_items=200, n_factors=4, density=0.3, noise=0.3, seed=0):
    """A made-up ratings table (user, title, rating) for offline demos and tests.

    Each user and item has a few latent factors and a bias; a rating is
    3.5 + user bias + item bias + factors dot product + noise, rounded to halves in [0.5, 5].
    A model that learns the factors beats "predict the mean" by a wide margin.
    """
    rng = np.random.default_rng(seed)
    u_fac, i_fac = rng.normal(0, 0.6, (n_users, n_factors)), rng.normal(0, 0.6, (n_items, n_factors))
    u_bias, i_bias = rng.normal(0, 0.4, n_users), rng.normal(0, 0.5, n_items)
    rated = rng.random((n_users, n_items)) < density
    users, items = np.nonzero(rated)
    score = 3.5 + u_bias[users] + i_bias[items] + (u_fac[users] * i_fac[items]).sum(1)
    rating = np.clip(np.round(2 * (score + rng.normal(0, noise, len(users)))) / 2, 0.5, 5.0)
    order = rng.permutation(len(users))
    return pd.DataFrame({"user": users[order] + 1, "title": [f"Movie {i + 1}" for i in items[order]],
                         "rating": rating[order].astype(np.float32)})


class CollabDataLoaders(DataLoaders):
    """Training and validation batches of ratings: x int64 (bs, 2) = [user, item] codes, y float32 (bs, 1).

    ``to_pandas`` is the TabularPandas that coded them; ``classes`` maps the user and
    item column names to their vocabularies (index 0 is `#na#`).
    """

    def __init__(self, to, bs=64, device="cpu", seed=None, **kwargs):
        self.to_pandas = to
        self.user_name, self.item_name = to.cat_names
        self.rating_name = to.y_names[0]
        train_ds, valid_ds = self.dataset(to.splits[0]), self.dataset(to.splits[1]) if len(to.splits[1]) else None
        dls = DataLoaders.from_dsets(train_ds, valid_ds, bs=bs, device=device, seed=seed, **kwargs)
        super().__init__(dls.train, dls.valid, device=device)
        self.n_inputs = 1  # the model takes one (bs, 2) tensor

    def dataset(self, idx):
        """An ArrayDataset of ([user, item] codes (N, 2), ratings (N, 1)) for the rows at positions ``idx``."""
        cats, _, ratings = self.to_pandas.arrays(self.to_pandas.items.iloc[idx])  # no continuous columns
        return ArrayDataset(cats, ratings)

    @property
    def classes(self):
        return self.to_pandas.proc["Categorify"].classes

    @classmethod
    def from_df(cls, ratings, user_name=None, item_name=None, rating_name=None, valid_pct=0.2, seed=None,
                bs=64, device="cpu", path=".", **kwargs):
        """fastai's CollabDataLoaders.from_df: the user, item and rating columns are the first three
        unless named; a random ``valid_pct`` of the ratings (fixed by ``seed``) is for validation."""
        if len(ratings.columns) < 3 and None in (user_name, item_name, rating_name):
            raise ValueError(f"CollabDataLoaders.from_df: the ratings need user, item and rating columns "
                             f"(the first three unless named); got {list(ratings.columns)}")
        user_name = ratings.columns[0] if user_name is None else user_name
        item_name = ratings.columns[1] if item_name is None else item_name
        rating_name = ratings.columns[2] if rating_name is None else rating_name
        if not pd.api.types.is_numeric_dtype(ratings[rating_name]):
            raise TypeError(f"CollabDataLoaders.from_df: the rating column {rating_name!r} holds "
                            f"{ratings[rating_name].dtype} values; it must hold numbers")
        splits = RandomSplitter(valid_pct, seed=seed)(len(ratings))
        to = TabularPandas(ratings, [Categorify], cat_names=[user_name, item_name], y_names=[rating_name],
                           splits=splits, y_block="regression")
        dls = cls(to, bs=bs, device=device, seed=seed, **kwargs)
        dls.path = Path(path)
        return dls

    @classmethod
    def from_csv(cls, csv, **kwargs):
        """from_df on a CSV file; keywords of pd.read_csv (``na_values``, ``sep``, ...) go to pandas."""
        read_kwargs = pop_read_csv_kwargs(kwargs)
        return cls.from_df(pd.read_csv(csv, **read_kwargs), **kwargs)

    @classmethod
    def from_movielens(cls, folder, **kwargs):
        """from_df on ``read_movielens(folder)``: users and movie titles (ml-latest-small or ml-100k)."""
        return cls.from_df(read_movielens(folder), path=folder, **kwargs)

    # Ratings are rows of a TabularPandas too: users, items, the rating and the rating_pred column.
    show_results = TabularDataLoaders.show_results

    def show_batch(self, max_n=10):
        """The first training ratings, with user and item names (printed and returned)."""
        table = self.to_pandas.decode(self.to_pandas.train.iloc[:max_n])
        print(table.to_string(index=False))
        return table
