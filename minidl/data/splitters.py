"""Splitters: which samples train the model and which measure it.

A splitter is called on the items (anything with a length, or the length itself) and
returns ``(train_indices, valid_indices)``: two disjoint int64 numpy arrays that
together cover every index. Use them to index your arrays or with ``Subset``:

    train_idx, valid_idx = RandomSplitter(0.2, seed=42)(len(x))
    train_ds, valid_ds = ArrayDataset(x[train_idx], y[train_idx]), ArrayDataset(x[valid_idx], y[valid_idx])
"""
import numbers

import numpy as np

from .. import random as _random


def _length(items, who):
    if isinstance(items, numbers.Integral):
        if items < 0:
            raise ValueError(f"{who}: the number of items must be >= 0, got {items}")
        return int(items)
    try:
        return len(items)
    except TypeError:
        raise TypeError(f"{who}: call it on the items (anything with a len()) or on their number, "
                        f"not on a {type(items).__name__}") from None


def _check_pct(valid_pct, who):
    if not 0 <= valid_pct <= 1:
        raise ValueError(f"{who}: valid_pct is the fraction of items for validation, between 0 and 1; "
                         f"got {valid_pct}")


def _split_by_mask(mask, who):
    """(where the mask is False, where it is True)."""
    mask = np.asarray(mask)
    if mask.dtype.kind in "iu" and np.isin(mask, (0, 1)).all():
        mask = mask.astype(bool)
    if mask.dtype != bool or mask.ndim != 1:
        raise TypeError(f"{who}: the validation mask must be a 1-d bool array (True = validation), "
                        f"got {mask.dtype} of shape {mask.shape}")
    return np.flatnonzero(~mask), np.flatnonzero(mask)


class RandomSplitter:
    """A random ``valid_pct`` of the items for validation, the rest for training (fastai's).

    The items are permuted; the first ``int(valid_pct * n)`` go to validation. With
    ``seed`` the split is always the same; without it, it comes from minidl's generator
    (``minidl.manual_seed``).
    """

    def __init__(self, valid_pct=0.2, seed=None):
        _check_pct(valid_pct, "RandomSplitter")
        self.valid_pct, self.seed = valid_pct, seed

    def __call__(self, items):
        n = _length(items, "RandomSplitter")
        rng = np.random.default_rng(self.seed) if self.seed is not None else _random.generator()
        order = rng.permutation(n)
        cut = int(self.valid_pct * n)
        return order[cut:], order[:cut]

    def __repr__(self):
        return f"RandomSplitter(valid_pct={self.valid_pct}, seed={self.seed})"


class IndexSplitter:
    """The items at ``valid_idx`` for validation, every other one for training."""

    def __init__(self, valid_idx):
        self.valid_idx = np.asarray(valid_idx, dtype=np.int64).reshape(-1)

    def __call__(self, items):
        n = _length(items, "IndexSplitter")
        valid = self.valid_idx
        if len(valid) and (valid.min() < 0 or valid.max() >= n):
            raise IndexError(f"IndexSplitter: validation indices must lie in [0, {n}) for {n} items; "
                             f"got {valid.min()} .. {valid.max()}")
        if len(np.unique(valid)) != len(valid):
            raise ValueError("IndexSplitter: valid_idx repeats an index; each item can be validated once")
        mask = np.zeros(n, dtype=bool)
        mask[valid] = True
        return np.flatnonzero(~mask), valid.copy()

    def __repr__(self):
        return f"IndexSplitter({len(self.valid_idx)} validation indices)"


class MaskSplitter:
    """Items where ``mask`` is True for validation (a bool array or pandas Series, one per item)."""

    def __init__(self, mask):
        self.mask = mask

    def __call__(self, items):
        n = _length(items, "MaskSplitter")
        if len(self.mask) != n:
            raise ValueError(f"MaskSplitter: the mask has {len(self.mask)} values for {n} items; it needs one per item")
        return _split_by_mask(self.mask, "MaskSplitter")

    def __repr__(self):
        return f"MaskSplitter({len(self.mask)} values)"


class ColSplitter:
    """Rows whose column ``col`` is True for validation, called on a table (a pandas DataFrame or a dict of arrays).

    Many data sets ship with their split as a bool column, usually ``is_valid``.
    """

    def __init__(self, col="is_valid"):
        self.col = col

    def __call__(self, table):
        try:
            column = table[self.col]
        except (KeyError, IndexError, TypeError):
            names = list(getattr(table, "columns", table.keys() if hasattr(table, "keys") else []))
            raise KeyError(f"ColSplitter: the table has no column {self.col!r}; its columns are {names}") from None
        return _split_by_mask(column, "ColSplitter")

    def __repr__(self):
        return f"ColSplitter({self.col!r})"


class TimeSplitter:
    """The latest rows for validation: those whose ``values`` (e.g. dates) are >= ``cutoff``.

    Why not a random split for time series: a model is used to predict the *future*.
    A random split puts rows from after the validation rows into training, so the model
    only has to interpolate between neighbouring days it has seen, and the validation
    score promises more than the model will deliver. Validating on the last stretch of
    time asks the question the model will face.

    ``values``: one per row, numbers or datetime64 (a numpy array or a pandas Series).
    Give ``cutoff`` (a value of the same kind; a date string works for datetimes) or
    ``valid_pct``: the cutoff is then the value with ``int(valid_pct * n)`` rows on or
    after it. Rows tied with the cutoff all go to validation, so no moment in time is on
    both sides (the validation set can be a little larger than ``valid_pct``).
    """

    def __init__(self, values, cutoff=None, valid_pct=None):
        if (cutoff is None) == (valid_pct is None):
            raise ValueError("TimeSplitter: give exactly one of cutoff (a time) or valid_pct (the latest fraction)")
        if valid_pct is not None:
            _check_pct(valid_pct, "TimeSplitter")
        self.values = np.asarray(values)
        if self.values.ndim != 1:
            raise ValueError(f"TimeSplitter: values must be 1-d (one per row), got shape {self.values.shape}")
        kind = self.values.dtype.kind
        if kind not in "iufM":
            raise TypeError(f"TimeSplitter: values must be numbers or datetime64, got {self.values.dtype}; "
                            f"convert date strings first (e.g. pandas.to_datetime)")
        missing = np.isnat(self.values) if kind == "M" else np.isnan(self.values) if kind == "f" else None
        if missing is not None and missing.any():
            raise ValueError(f"TimeSplitter: {int(missing.sum())} values are missing (NaN/NaT); "
                             f"fill or drop those rows first")
        if cutoff is not None and kind == "M":
            cutoff = np.datetime64(cutoff)
        self.cutoff, self.valid_pct = cutoff, valid_pct

    def __call__(self, items):
        n = _length(items, "TimeSplitter")
        if n != len(self.values):
            raise ValueError(f"TimeSplitter: {len(self.values)} values for {n} items; it needs one value per item")
        cutoff = self.cutoff
        if cutoff is None:
            k = int(self.valid_pct * n)
            if k == 0:
                return np.arange(n), np.arange(0)
            cutoff = np.sort(self.values)[n - k]
        return _split_by_mask(self.values >= cutoff, "TimeSplitter")

    def __repr__(self):
        how = f"cutoff={self.cutoff!r}" if self.cutoff is not None else f"valid_pct={self.valid_pct}"
        return f"TimeSplitter({len(self.values)} values, {how})"
