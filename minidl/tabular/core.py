"""Tabular data: a DataFrame turned into numbers a network can use.

Three preprocessing steps ("procs"), each *fitted on the training rows only* and then
applied to every row (validation, test, a single row to predict), so nothing about the
validation set leaks into the model:

  FillMissing  continuous NaNs -> the training median, plus a `<col>_na` True/False column
  Categorify   category -> integer code; 0 is `#na#`, which also takes unseen levels
  Normalize    continuous -> (x - training mean) / training std

TabularPandas holds the processed table; TabularDataLoaders.from_df / from_csv build
it and its DataLoaders in one call, as in fastai.
"""
import numpy as np
import pandas as pd

from ..data import ArrayDataset, DataLoader, DataLoaders, RandomSplitter

NA = "#na#"


class TabularProc:
    """One step of preparing a table (fastai's procs): ``setup`` learns from the training rows,
    ``encode`` applies it to any rows; procs run in ``order``.
    """
    order = 0

    def setup(self, to, train):
        """Learn what the proc needs from the training rows ``train`` (a DataFrame)."""

    def encode(self, to, df):
        """Transform ``df`` in place with what setup learned."""
        raise NotImplementedError


class FillMissing(TabularProc):
    """Fill missing continuous values with the training median and flag them in `<col>_na`."""
    order = 0

    def setup(self, to, train):
        missing = [c for c in to.cont_names if train[c].isna().any()]
        self.fill = {c: float(train[c].median()) for c in missing}
        self.na_cols = [f"{c}_na" for c in missing]
        to.cat_names = to.cat_names + [c for c in self.na_cols if c not in to.cat_names]

    def encode(self, to, df):
        for c, value in self.fill.items():
            df[f"{c}_na"] = df[c].isna()
            df[c] = df[c].fillna(value)


class Categorify(TabularProc):
    """Replace each category by its index in a vocabulary of the training levels.

    Index 0 is `#na#`: missing values and levels never seen in training map to it.
    """
    order = 1

    def setup(self, to, train):
        self.classes = {c: [NA] + sorted(train[c].dropna().unique().tolist(), key=_sort_key)
                        for c in to.cat_names}

    def encode(self, to, df):
        for c, vocab in self.classes.items():
            codes = {v: i for i, v in enumerate(vocab)}
            df[c] = df[c].map(codes).fillna(0).astype(np.int64)

    def decode(self, col, codes):
        """Codes of column ``col`` back to the category values: vocab[code] (code 0 is #na#)."""
        vocab = self.classes[col]
        return [vocab[int(i)] for i in codes]


class Normalize(TabularProc):
    """Scale each continuous column to mean 0, std 1 with the training mean and std."""
    order = 2

    def setup(self, to, train):
        self.means = {c: float(train[c].mean()) for c in to.cont_names}
        self.stds = {c: float(train[c].std(ddof=0)) + 1e-7 for c in to.cont_names}

    def encode(self, to, df):
        for c in to.cont_names:
            df[c] = (df[c].astype(np.float64) - self.means[c]) / self.stds[c]

    def decode(self, col, values):
        """values * std + mean of column ``col``: the inverse of encode."""
        return np.asarray(values) * self.stds[col] + self.means[col]


def _sort_key(v):
    return (str(type(v)), v)  # mixed types (True/False and strings) sort without errors


def _proc(p):
    return p() if isinstance(p, type) else p


class TabularPandas:
    """A processed table: integer category codes, normalised continuous columns, encoded targets.

    ``splits`` = (train_indices, valid_indices) (positions, not labels); the procs are
    fitted on the training rows. The target is a classification (its vocabulary in
    ``classes``) when it holds strings, categories or booleans, else a regression,
    unless ``y_block`` says "category" or "regression".
    """

    def __init__(self, df, procs=(), cat_names=(), cont_names=(), y_names=(), splits=None, y_block=None):
        self.cat_names, self.cont_names = list(cat_names), list(cont_names)
        self.y_names = [y_names] if isinstance(y_names, str) else list(y_names)
        missing = [c for c in self.cat_names + self.cont_names + self.y_names if c not in df.columns]
        if missing:
            raise KeyError(f"TabularPandas: columns {missing} are not in the DataFrame; it has {list(df.columns)}")
        self.splits = splits if splits is not None else (np.arange(len(df)), np.array([], dtype=np.int64))
        self.procs = sorted((_proc(p) for p in procs), key=lambda p: p.order)
        train = df.iloc[self.splits[0]]
        if y_block is None:
            y = train[self.y_names[0]] if self.y_names else None
            is_category = y is not None and (not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y))
            y_block = "category" if is_category else "regression"
        if y_block not in ("category", "regression"):
            raise ValueError(f"TabularPandas: y_block must be 'category' or 'regression', not {y_block!r}")
        self.y_block = y_block
        for p in self.procs:
            p.setup(self, train)
            train = self._apply(train, [p])
        if self.y_names and y_block == "category":
            self.vocab = sorted(df.iloc[self.splits[0]][self.y_names[0]].dropna().unique().tolist(), key=_sort_key)
        else:
            self.vocab = None
        self.items = self.process(df)

    def _apply(self, df, procs):
        df = df.copy()
        for p in procs:
            p.encode(self, df)
        return df

    def process(self, df):
        """Apply the fitted procs (and target encoding) to new rows: validation, test, one row."""
        df = self._apply(df, self.procs)
        if self.vocab is not None and all(c in df.columns for c in self.y_names):
            codes = {v: i for i, v in enumerate(self.vocab)}
            y = df[self.y_names[0]].map(codes)
            if y.isna().any():
                unknown = sorted(set(df[self.y_names[0]][y.isna()].astype(str)))[:5]
                raise ValueError(f"TabularPandas: target values {unknown} were not in the training targets {self.vocab}")
            df[self.y_names[0]] = y.astype(np.int64)
        return df

    @property
    def proc(self):
        return {type(p).__name__: p for p in self.procs}

    def arrays(self, df):
        """(categories int64 (N, n_cat), continuous float32 (N, n_cont), targets) of processed rows."""
        cats = df[self.cat_names].to_numpy(np.int64).reshape(len(df), len(self.cat_names))
        conts = df[self.cont_names].to_numpy(np.float32).reshape(len(df), len(self.cont_names))
        if not self.y_names or not all(c in df.columns for c in self.y_names):
            return cats, conts
        if self.y_block == "category":
            return cats, conts, df[self.y_names[0]].to_numpy(np.int64)
        return cats, conts, df[self.y_names].to_numpy(np.float32)

    def dataset(self, idx):
        """An ArrayDataset of (cats, conts, targets) for the processed rows at positions ``idx``."""
        return ArrayDataset(*self.arrays(self.items.iloc[idx]))

    @property
    def train(self):
        return self.items.iloc[self.splits[0]]

    @property
    def valid(self):
        return self.items.iloc[self.splits[1]]

    def decode(self, df):
        """Processed rows back to readable values: category names, un-normalised numbers, labels."""
        out = pd.DataFrame(index=df.index)
        categorify, normalize = self.proc.get("Categorify"), self.proc.get("Normalize")
        for c in self.cat_names:
            out[c] = categorify.decode(c, df[c]) if categorify else df[c]
        for c in self.cont_names:
            out[c] = normalize.decode(c, df[c]) if normalize else df[c]
        for c in self.y_names:
            if c in df.columns:
                out[c] = [self.vocab[int(i)] for i in df[c]] if self.vocab is not None else df[c]
        return out

    def dataloaders(self, bs=64, device="cpu", seed=None, **kwargs):
        """TabularDataLoaders over the training and validation splits, batches of ``bs`` rows."""
        return TabularDataLoaders(self, bs=bs, device=device, seed=seed, **kwargs)


class TabularDataLoaders(DataLoaders):
    """Training and validation DataLoaders over a TabularPandas; batches are (cats, conts, y)."""

    def __init__(self, to, bs=64, device="cpu", seed=None, **kwargs):
        train_ds, valid_ds = to.dataset(to.splits[0]), to.dataset(to.splits[1]) if len(to.splits[1]) else None
        dls = DataLoaders.from_dsets(train_ds, valid_ds, bs=bs, device=device, seed=seed, **kwargs)
        super().__init__(dls.train, dls.valid, device=device)
        self.to_pandas, self.vocab, self.n_inputs = to, to.vocab, 2

    @classmethod
    def from_df(cls, df, path=".", procs=(Categorify, FillMissing, Normalize), cat_names=(), cont_names=(),
                y_names=(), valid_pct=0.2, seed=None, bs=64, y_block=None, valid_idx=None, device="cpu", **kwargs):
        """fastai's TabularDataLoaders.from_df: a random split (or ``valid_idx``), procs fitted on train."""
        if valid_idx is not None:
            valid = np.asarray(valid_idx, dtype=np.int64)
            splits = (np.setdiff1d(np.arange(len(df)), valid), valid)
        else:
            splits = RandomSplitter(valid_pct, seed=seed)(len(df))
        to = TabularPandas(df, procs, cat_names, cont_names, y_names, splits=splits, y_block=y_block)
        dls = cls(to, bs=bs, device=device, seed=seed, **kwargs)
        dls.path = path
        return dls

    @classmethod
    def from_csv(cls, csv, skipinitialspace=True, **kwargs):
        """from_df on a CSV file (whitespace after the commas dropped, as in fastai's adult.csv)."""
        return cls.from_df(pd.read_csv(csv, skipinitialspace=skipinitialspace), **kwargs)

    def test_dl(self, df, bs=None):
        """A DataLoader over new rows (a test set), processed with the procs fitted on training."""
        to = self.to_pandas
        return DataLoader(ArrayDataset(*to.arrays(to.process(df))), batch_size=bs or self.train.batch_size,
                          device=self.device)

    def show_results(self, ds_idx, idx, batch, decoded, **kwargs):
        """Prints rows ``idx`` of the training (0) or validation (1) set, decoded, with a ``<target>_pred``
        column of the model's ``decoded`` predictions beside each target (fastai's show_results)."""
        to = self.to_pandas
        table = to.decode(to.items.iloc[np.asarray(to.splits[ds_idx])[idx]])
        decoded = decoded.numpy().reshape(len(table), -1)
        for k, name in enumerate(to.y_names):
            table[f"{name}_pred"] = ([to.vocab[int(i)] for i in decoded[:, 0]] if to.vocab is not None
                                     else decoded[:, k])
        with pd.option_context("display.max_columns", None, "display.width", 200):
            print(table.to_string(index=False))

    def show_batch(self, max_n=10):
        """The first training rows, decoded back to readable values (printed and returned)."""
        to = self.to_pandas
        rows = to.train.iloc[:max_n]
        table = to.decode(rows)
        with pd.option_context("display.max_columns", None, "display.width", 200):
            print(table.to_string(index=False))
        return table
