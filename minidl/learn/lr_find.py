"""The learning-rate finder (Leslie Smith's range test, as fastai runs it).

Train for up to ``num_it`` batches while the learning rate grows exponentially from
``start_lr`` to ``end_lr``, recording the smoothed loss; stop early once the loss
diverges. A good learning rate sits where the loss still falls steeply, well before
the minimum. Learner.lr_find then puts the model and optimizer back exactly as they were.
"""
import math
from collections import namedtuple

import numpy as np

from .callback import Callback, CancelFitException, CancelValidateException

SuggestedLRs = namedtuple("SuggestedLRs", ["valley", "minimum", "steep"])


class LRFinder(Callback):
    """The callback of Learner.lr_find: lr grows as start_lr * (end_lr / start_lr)^(iter / num_it), training stops
    after num_it batches or once the smoothed loss exceeds 4 x its best (stop_div).
    """
    order = 60  # after the Recorder (50) has smoothed this batch's loss

    def __init__(self, start_lr=1e-7, end_lr=10.0, num_it=100, stop_div=True):
        if not 0 < start_lr < end_lr:
            raise ValueError(f"lr_find: need 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
        self.start_lr, self.end_lr, self.num_it, self.stop_div = start_lr, end_lr, num_it, stop_div

    def before_fit(self):
        """Reset the best smoothed loss seen."""
        self.best_loss = math.inf

    def before_batch(self):
        """Set lr = start_lr * (end_lr / start_lr)^(train_iter / num_it): an exponential sweep."""
        if self.training:
            pct = self.train_iter / self.num_it
            self.opt.set_hyper("lr", self.start_lr * (self.end_lr / self.start_lr) ** pct)

    def after_loss(self):
        """Stop the sweep at a NaN or infinite loss: it has diverged, and there is nothing to record."""
        if self.training and not math.isfinite(self.loss.item()):
            raise CancelFitException()

    def after_batch(self):
        """Stop (CancelFitException) after num_it batches, or once the smoothed loss diverges:
        above 4 x its best, or not finite."""
        if not self.training:
            return
        smooth = self.recorder.smooth_losses[-1]
        self.best_loss = min(self.best_loss, smooth)
        diverged = self.stop_div and (smooth > 4 * self.best_loss or not math.isfinite(smooth))
        if diverged or self.train_iter >= self.num_it:
            raise CancelFitException()

    def before_validate(self):
        """Skip validation: the sweep only needs training losses."""
        raise CancelValidateException()


def minimum(lrs, losses):
    """A tenth of the rate with the lowest loss (the minimum itself is already too high)."""
    return float(lrs[int(np.argmin(losses))] / 10)


def steep(lrs, losses):
    """The rate where the loss falls fastest against log(lr) (forward differences, as fastai)."""
    slopes = np.diff(losses) / np.diff(np.log(lrs))
    return float(lrs[int(np.argmin(slopes))])


def valley(lrs, losses):
    """fastai's default: find the longest run of falling losses (a longest decreasing
    subsequence), and take a point half-way into its middle third: far enough down the
    valley to learn fast, safely before its bottom."""
    n = len(losses)
    longest = [1] * n  # longest[i]: the longest decreasing subsequence that ends at i
    end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j]:
                longest[i] = max(longest[i], longest[j] + 1)
        if longest[i] > longest[end]:
            end = i
    start = end - longest[end]  # fastai's estimate of where the valley begins
    section = (end - start) / 3
    return float(lrs[start + int(section) + int(section / 2)])


def suggest(lrs, losses, num_it):
    """All three suggestions from a recorded sweep, as fastai computes them: without the first
    tenth (the smoothed loss is still settling), the last 5 points (usually diverging) and
    anything after a loss stopped being finite."""
    lrs, losses = np.asarray(lrs[num_it // 10:-5], dtype=np.float64), np.asarray(losses[num_it // 10:-5])
    finite = np.isfinite(losses)
    if not finite.all():
        lrs, losses = lrs[:np.argmin(finite)], losses[:np.argmin(finite)]
    if len(lrs) < 3:
        raise ValueError(f"lr_find: only {len(lrs)} usable points were recorded; use num_it >= {num_it // 10 + 8} "
                         f"(and a training set of more batches), or a smaller end_lr")
    return SuggestedLRs(valley(lrs, losses), minimum(lrs, losses), steep(lrs, losses))
