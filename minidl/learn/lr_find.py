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
    order = 60  # after the Recorder (50) has smoothed this batch's loss

    def __init__(self, start_lr=1e-7, end_lr=10.0, num_it=100, stop_div=True):
        if not 0 < start_lr < end_lr:
            raise ValueError(f"lr_find: need 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
        self.start_lr, self.end_lr, self.num_it, self.stop_div = start_lr, end_lr, num_it, stop_div

    def before_fit(self):
        self.best_loss = math.inf

    def before_batch(self):
        if self.training:
            pct = self.train_iter / self.num_it
            self.opt.set_hyper("lr", self.start_lr * (self.end_lr / self.start_lr) ** pct)

    def after_batch(self):
        if not self.training:
            return
        smooth = self.recorder.smooth_losses[-1]
        self.best_loss = min(self.best_loss, smooth)
        diverged = self.stop_div and (smooth > 4 * self.best_loss or not math.isfinite(smooth))
        if diverged or self.train_iter >= self.num_it:
            raise CancelFitException()

    def before_validate(self):
        raise CancelValidateException()


def minimum(lrs, losses):
    """A tenth of the rate with the lowest loss (the minimum itself is already too high)."""
    return lrs[int(np.argmin(losses))] / 10


def steep(lrs, losses):
    """The rate where the loss falls fastest against log(lr)."""
    slopes = np.gradient(np.asarray(losses), np.log(np.asarray(lrs)))
    return lrs[int(np.argmin(slopes))]


def valley(lrs, losses):
    """fastai's default: the longest stretch over which the loss keeps falling, and a point
    a bit past its first third (far enough down the valley, safely before its bottom)."""
    n = len(losses)
    # longest[i]: length of the longest strictly decreasing subsequence ending at i
    longest, start_of = [1] * n, list(range(n))
    for i in range(n):
        for j in range(i):
            if losses[i] < losses[j] and longest[j] + 1 > longest[i]:
                longest[i], start_of[i] = longest[j] + 1, start_of[j]
    end = int(np.argmax(longest))
    start = start_of[end]
    section = (end - start) / 3
    return lrs[start + int(section) + int(section / 2)]


def suggest(lrs, losses, num_it):
    """All three suggestions from a recorded sweep, as fastai computes them: without the first
    tenth (the smoothed loss is still settling) and the last 5 points (usually diverging)."""
    start, end = num_it // 10, len(lrs) - 5
    if end - start < 3:
        start, end = 0, len(lrs)
    lrs, losses = list(lrs[start:end]), list(losses[start:end])
    return SuggestedLRs(valley(lrs, losses), minimum(lrs, losses), steep(lrs, losses))
