"""Tabular data: a DataFrame turned into numbers a network can use.

Three preprocessing steps ("procs"), each *fitted on the training rows only* and then
applied to every row (validation, test, a single row to predict), so nothing about the
validation set leaks into the model:

  FillMissing  continuous NaNs -> the training median, plus a `<col>_na` True/False column
               for the columns that had NaNs in training
  Categorify   category -> integer code; 0 is `#na#`, which also takes unseen levels
  Normalize    continuous -> (x - training mean) / training std

TabularPandas holds the processed table; TabularDataLoaders.from_df / from_csv build
it and its DataLoaders in one call, as in fastai.

Rows are checked before the procs see them, in training and at predict / test_dl time
alike: a continuous column must hold numbers (NaN is allowed: FillMissing fills it) and
no inf; a regression target must be a finite number, a class target must be present.
Otherwise one bad cell ends in nan losses or nan probabilities that nobody notices.
"""
import inspect

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
    """Fill missing continuous values with the training median; flag them in `<col>_na`.

    Every continuous column gets a fill value (``fill``), because a value can be missing in
    a row to predict even where the training column was complete; left as NaN it would
    make the model's answer nan. The `<col>_na` indicator columns, which are inputs of the
    model, exist only for the columns that had NaNs in training (``na_cols``), as in fastai.
    """
    order = 0

    def setup(self, to, train):
        self.fill = {c: float(train[c].median()) for c in to.cont_names}
        empty = [c for c, value in self.fill.items() if np.isnan(value)]
        if empty:
            raise ValueError(f"FillMissing: the continuous columns {empty} have no value in the training rows, "
                             f"so there is no median to fill them with; leave them out of cont_names")
        self.na_cols = [f"{c}_na" for c in to.cont_names if train[c].isna().any()]
        to.cat_names = to.cat_names + [c for c in self.na_cols if c not in to.cat_names]

    def encode(self, to, df):
        for c, value in self.fill.items():
            if f"{c}_na" in self.na_cols:
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


def describe_rows(values, mask, n=3):
    """The first ``n`` rows where ``mask`` holds, as "row <index label>: <value>", and how many in all."""
    bad = values[mask]
    plain = [(i, v.item() if isinstance(v, np.generic) else v) for i, v in bad.iloc[:n].items()]
    text = ", ".join(f"row {i!r}: {v!r}" for i, v in plain)
    return text if len(bad) <= n else f"{text} ({len(bad)} rows in all)"


def continuous_as_numbers(df, names, op, training=False):
    """A copy of ``df`` with the continuous columns ``names`` as numbers; text or inf -> ValueError.

    Missing values (NaN, None) pass: FillMissing fills them. Text would otherwise stop
    pandas with a message naming no column (training) or turn silently into NaN
    (predict); inf passes every proc and turns Normalize's statistics or the model's
    outputs into inf and nan. The error names ``op``, the column, the rows and the fix.
    """
    df = df.copy()
    for c in [c for c in names if c in df.columns]:
        raw = df[c]
        values = pd.to_numeric(raw, errors="coerce")
        text = values.isna() & raw.notna()
        if text.any():
            words = sorted({str(v) for v in raw[text]})[:3]
            fix = (f"read them as missing values with from_csv(..., na_values={words}) (pd.read_csv's na_values) "
                   f"for FillMissing to fill, correct them, or move {c!r} to cat_names if it is a category"
                   if training else "pass a number, or NaN/None for a missing value (FillMissing fills it)")
            raise ValueError(f"{op}: continuous column {c!r} holds values that are not numbers: "
                             f"{describe_rows(raw, text)}; {fix}")
        inf = pd.Series(np.isinf(values.to_numpy(np.float64, na_value=np.nan)), index=df.index)
        if inf.any():
            raise ValueError(f"{op}: continuous column {c!r} holds infinite values: {describe_rows(values, inf)}; "
                             f"replace them with finite numbers, or with NaN for FillMissing to fill "
                             f"(df[{c!r}].replace([np.inf, -np.inf], np.nan))")
        df[c] = values
    return df


def pop_read_csv_kwargs(kwargs):
    """Take the keywords that pd.read_csv knows (na_values, sep, dtype, ...) out of ``kwargs``, for from_csv."""
    names = inspect.signature(pd.read_csv).parameters
    return {k: kwargs.pop(k) for k in list(kwargs) if k in names}


class TabularPandas:
    """A processed table: integer category codes, normalised continuous columns, encoded targets.

    ``splits`` = (train_indices, valid_indices) (positions, not labels); the procs are
    fitted on the training rows. The target is a classification (its vocabulary in
    ``classes``) when it holds strings, categories or booleans, else a regression,
    unless ``y_block`` says "category" or "regression". Every row is checked first
    (``check``): bad values are refused with the column and the row, not trained on.
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
        df = self.check(df, "TabularPandas", training=True)
        train = df.iloc[self.splits[0]]
        for p in self.procs:
            p.setup(self, train)
            train = self._apply(train, [p])
        if self.y_names and y_block == "category":
            self.vocab = sorted(df.iloc[self.splits[0]][self.y_names[0]].dropna().unique().tolist(), key=_sort_key)
        else:
            self.vocab = None
        self.items = self._encode(df, "TabularPandas")

    def _apply(self, df, procs):
        df = df.copy()
        for p in procs:
            p.encode(self, df)
        return df

    def check(self, df, op, training=False):
        """A copy of ``df`` with continuous columns and regression targets as numbers, or a ValueError
        naming ``op``, the column and the rows: text or inf in a continuous column, a NaN or inf
        regression target, a missing class target. (A nan target makes every loss nan; a row
        with no class has nothing to learn from.)"""
        df = continuous_as_numbers(df, self.cont_names, op, training)
        for c in [c for c in self.y_names if c in df.columns]:
            if self.y_block == "regression":
                y = pd.to_numeric(df[c], errors="coerce")
                bad = pd.Series(~np.isfinite(y.to_numpy(np.float64, na_value=np.nan)), index=df.index)
                if bad.any():
                    raise ValueError(f"{op}: target column {c!r} must hold finite numbers (a regression): "
                                     f"{describe_rows(df[c], bad)}; drop those rows (df[np.isfinite(df[{c!r}])]) "
                                     f"or correct them, as one NaN or inf target makes the loss nan")
                df[c] = y
            elif df[c].isna().any():
                raise ValueError(f"{op}: target column {c!r} is missing at {describe_rows(df[c], df[c].isna())}; each "
                                 f"row needs a class: drop those rows (df.dropna(subset=[{c!r}])) or fill them")
        return df

    def process(self, df, op="TabularPandas.process"):
        """Check new rows (validation, test, one row) and apply the fitted procs and target encoding;
        ``op`` (predict, test_dl) names the caller in errors."""
        return self._encode(self.check(df, op), op)

    def _encode(self, df, op):
        df = self._apply(df, self.procs)
        nan = df[self.cont_names].isna()
        if nan.any().any():
            c = nan.any().idxmax()
            raise ValueError(f"{op}: continuous column {c!r} is missing (NaN) at {describe_rows(df[c], nan[c])} and no "
                             f"proc fills it: add FillMissing to procs, or drop those rows")
        if self.vocab is not None and all(c in df.columns for c in self.y_names):
            codes = {v: i for i, v in enumerate(self.vocab)}
            y = df[self.y_names[0]].map(codes)
            if y.isna().any():
                raise ValueError(f"{op}: target column {self.y_names[0]!r} holds classes that are not among the "
                                 f"training targets {self.vocab}: {describe_rows(df[self.y_names[0]], y.isna())}")
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
        """from_df on a CSV file (whitespace after the commas dropped, as in fastai's adult.csv).
        Keywords of pd.read_csv (``na_values=['?']``, ``sep``, ...) go to pandas, the others to from_df."""
        read_kwargs = pop_read_csv_kwargs(kwargs)
        return cls.from_df(pd.read_csv(csv, skipinitialspace=skipinitialspace, **read_kwargs), **kwargs)

    def test_dl(self, df, bs=None):
        """A DataLoader over new rows (a test set), checked and processed with the procs fitted on training."""
        to = self.to_pandas
        return DataLoader(ArrayDataset(*to.arrays(to.process(df, "test_dl"))), batch_size=bs or self.train.batch_size,
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
