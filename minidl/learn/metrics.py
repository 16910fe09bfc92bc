"""Metrics: numbers a person reads to judge a model (the loss is for the optimizer).

A metric sees every validation batch and gives one number per epoch. Two kinds:
  * AvgMetric: a per-batch value averaged with batch-size weights (accuracy, error_rate, mae);
  * AccumMetric: predictions and targets of all batches gathered, then one computation
    (needed when the metric is not an average: rmse is a root of a mean, F1 a ratio of counts).
A plain function ``fn(preds, targets) -> tensor`` passed to the Learner becomes an AvgMetric.
"""
import numpy as np

from ..autograd import no_grad
from ..tensor import Tensor


class Metric:
    """reset() before validation, accumulate(preds, targets) per batch, value afterwards."""
    name = "metric"

    def reset(self):
        """Forget everything seen: called before each validation pass."""
        raise NotImplementedError

    def accumulate(self, preds, targets):
        """Take one batch's predictions and targets into account."""
        raise NotImplementedError

    @property
    def value(self):
        raise NotImplementedError


class AvgMetric(Metric):
    def __init__(self, fn, name=None):
        self.fn, self.name = fn, name or fn.__name__

    def reset(self):
        """total = 0, count = 0."""
        self.total, self.count = 0.0, 0

    def accumulate(self, preds, targets):
        """total += fn(preds, targets) * n, count += n, n the batch size: value = total / count is the per-item mean.
        The total stays where fn's result is (on a GPU: no copy to the host per batch), read once by ``value``."""
        n = len(targets)
        v = self.fn(preds, targets)
        self.total = self.total + (v.detach() if hasattr(v, "detach") else float(v)) * n
        self.count += n

    @property
    def value(self):
        return float(self.total) / self.count if self.count else None


class AccumMetric(Metric):
    def __init__(self, fn, name=None, activation=None):
        self.fn, self.name, self.activation = fn, name or fn.__name__, activation

    def reset(self):
        """Drop the gathered predictions and targets."""
        self.preds, self.targets = [], []

    def accumulate(self, preds, targets):
        """Keep this batch's predictions (after ``activation``, if any) and targets as numpy arrays."""
        preds = self.activation(preds) if self.activation is not None else preds
        self.preds.append(preds.detach().numpy().copy())
        self.targets.append(targets.detach().numpy().copy())

    @property
    def value(self):
        if not self.preds:
            return None
        return float(self.fn(np.concatenate(self.preds), np.concatenate(self.targets)))


def as_metric(m):
    """``m`` itself if it is a Metric, else the function ``m(preds, targets)`` wrapped as an AvgMetric."""
    return m if isinstance(m, Metric) else AvgMetric(m)


# ---------------------------------------------------------------- the metrics

@no_grad()
def accuracy(preds, targets, axis=-1):
    """Fraction of rows whose highest score is the target class."""
    return (preds.argmax(dim=axis) == targets).float().mean()


@no_grad()
def error_rate(preds, targets, axis=-1):
    """1 - accuracy: the fraction of mistakes (the number fastai's chapter 1 reports)."""
    return 1 - accuracy(preds, targets, axis)


def _flat(preds, targets):
    return np.asarray(preds, dtype=np.float64).reshape(-1), np.asarray(targets, dtype=np.float64).reshape(-1)


def _rmse(preds, targets):
    p, t = _flat(preds, targets)
    return np.sqrt(np.mean((p - t) ** 2))


def _mae(preds, targets):
    p, t = _flat(preds, targets)
    return np.mean(np.abs(p - t))


rmse = AccumMetric(_rmse, "rmse")   # sqrt of the mean over all rows, not a mean of per-batch roots
mae = AccumMetric(_mae, "mae")


class F1Score(AccumMetric):
    """F1 = 2 * precision * recall / (precision + recall) for a binary problem, over the whole set.

    Predictions are class scores (N, 2) (the arg-max is the prediction) or one logit per
    row (BCEWithLogitsLossFlat's output): positive when sigmoid(logit) > ``thresh``.
    """

    def __init__(self, pos_label=1, thresh=0.5):
        super().__init__(self._f1, "f1_score")
        self.pos_label, self.thresh = pos_label, thresh

    def _f1(self, preds, targets):
        if preds.ndim == 2 and preds.shape[1] > 1:
            decided = preds.argmax(-1)
        else:
            decided = 1 / (1 + np.exp(-preds.reshape(-1))) > self.thresh
        predicted, actual = decided == self.pos_label, targets.reshape(-1) == self.pos_label
        tp = np.sum(predicted & actual)
        fp, fn = np.sum(predicted & ~actual), np.sum(~predicted & actual)
        return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


# ---------------------------------------------------------------- segmentation: a class per pixel

@no_grad()
def foreground_acc(preds, targets, bkg_idx=0, axis=1):
    """Accuracy over the pixels whose target is not ``bkg_idx`` (fastai's foreground_acc; preds (N, C, H, W))."""
    decided, targets = preds.argmax(dim=axis).numpy(), targets.numpy()
    keep = targets != bkg_idx
    return float((decided[keep] == targets[keep]).mean()) if keep.any() else 0.0


def _bincount(xp, ids, weights, n):
    """How many of ``ids`` (where ``weights`` is True) are 0, 1, ..., n - 1 (ids >= n are not counted)."""
    return xp.bincount(ids, weights=weights.astype(np.float64), minlength=n)[:n]


class _PixelCounts(Metric):
    """Counts over every pixel of the validation set (not per-batch means), optionally leaving out
    the pixels whose target is ``ignore_index`` (a void class). Predictions: scores (N, C, H, W).
    The counts are kept where the predictions are (numpy, or CuPy on a GPU: no copy per batch) and
    read once, by ``value``."""

    def __init__(self, ignore_index=None, axis=1):
        self.ignore_index, self.axis = ignore_index, axis

    def _counts(self, preds, targets):
        """(per-class counts of the kept pixels' predictions, of their targets, of the pixels right), as arrays
        of the predictions' device: bincounts weighted by "kept" (no boolean indexing, which on a GPU waits
        to learn the result's size)."""
        n, backend = preds.shape[self.axis], preds.backend
        xp = getattr(backend, "xp", np)
        decided, targets = preds.argmax(dim=self.axis).data.ravel(), targets.data.ravel()
        kept = (targets != self.ignore_index) if self.ignore_index is not None else xp.ones(targets.shape, bool)
        right = kept & (decided == targets)
        return (_bincount(xp, decided, kept, n), _bincount(xp, targets, kept, n), _bincount(xp, targets, right, n),
                preds.device)

    @staticmethod
    def _read(array, device):
        return Tensor._make(array, device).numpy()


class PixelAccuracy(_PixelCounts):
    """Global pixel accuracy: right pixels / all pixels of the set, void left out (CamVid's "global accuracy")."""
    name = "pixel_accuracy"

    def reset(self):
        """right = seen = 0."""
        self.right, self.seen, self.device = 0, 0, None

    def accumulate(self, preds, targets):
        """Count this batch's pixels and how many the arg-max got right."""
        _, seen, right, self.device = self._counts(preds, targets)
        self.right, self.seen = self.right + right.sum(), self.seen + seen.sum()

    @property
    def value(self):
        if self.device is None:
            return None
        right, seen = (float(self._read(v, self.device)) for v in (self.right, self.seen))
        return right / seen if seen else None


class JaccardCoeffMulti(_PixelCounts):
    """Mean intersection over union across classes (mIoU; fastai's JaccardCoeffMulti), over the whole set.

    For class c: IoU_c = |pred = c and target = c| / |pred = c or target = c|, the counts summed
    over every pixel; the mean is over the classes that occur (in targets or predictions).
    ``per_class``: each class's IoU (nan for a class never seen)."""
    name = "jaccard_coeff_multi"

    def reset(self):
        """Zero the per-class intersection and union counts."""
        self.counts, self.device = None, None

    def accumulate(self, preds, targets):
        """Add this batch's per-class predictions, targets and intersections."""
        *counts, self.device = self._counts(preds, targets)
        self.counts = counts if self.counts is None else [a + b for a, b in zip(self.counts, counts)]

    @property
    def inter(self):
        """Per class: the pixels predicted c whose target is c."""
        return self._read(self.counts[2], self.device).astype(np.int64)

    @property
    def union(self):
        """Per class: the pixels predicted c or whose target is c (void's own class, if in range, scores 0)."""
        predicted, target = (self._read(c, self.device).astype(np.int64) for c in self.counts[:2])
        union = predicted + target - self.inter
        if self.ignore_index is not None and 0 <= self.ignore_index < len(union):  # void is not a class to score
            union[self.ignore_index] = 0
        return union

    @property
    def per_class(self):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.union > 0, self.inter / np.maximum(self.union, 1), np.nan)

    @property
    def value(self):
        return None if self.counts is None or not (self.union > 0).any() else float(np.nanmean(self.per_class))


class DiceMulti(JaccardCoeffMulti):
    """Mean Dice coefficient across classes (fastai's DiceMulti): 2 |pred = c and target = c| / (|pred = c| +
    |target = c|) per class from counts over the whole set, averaged over the classes that occur."""
    name = "dice_multi"

    @property
    def per_class(self):
        total = self.union + self.inter            # |pred = c| + |target = c|
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, 2 * self.inter / np.maximum(total, 1), np.nan)
