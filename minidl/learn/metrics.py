"""Metrics: numbers a person reads to judge a model (the loss is for the optimizer).

A metric sees every validation batch and gives one number per epoch. Two kinds:
  * AvgMetric: a per-batch value averaged with batch-size weights (accuracy, error_rate, mae);
  * AccumMetric: predictions and targets of all batches gathered, then one computation
    (needed when the metric is not an average: rmse is a root of a mean, F1 a ratio of counts).
A plain function ``fn(preds, targets) -> tensor`` passed to the Learner becomes an AvgMetric.
"""
import numpy as np

from ..autograd import no_grad


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
        """total += fn(preds, targets) * n, count += n, n the batch size: value = total / count is the per-item mean."""
        n = len(targets)
        self.total += float(self.fn(preds, targets)) * n
        self.count += n

    @property
    def value(self):
        return self.total / self.count if self.count else None


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
