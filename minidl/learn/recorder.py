"""What training looked like: the Recorder keeps it, ProgressCallback prints it.

Per training batch: the loss, its smoothed value, the learning rate and momentum.
Per epoch: train_loss (the smoothed loss at the end of the epoch, as fastai shows),
valid_loss (the mean over the validation set), each metric, and the wall time.
The batches' losses stay on the model's device until they are needed (each epoch's end, or
whoever reads ``losses`` / ``smooth_losses``, as lr_find does every batch): on a GPU, reading
a number waits for all the work queued before it, so reading one per batch would stall it.
"""
import math
import os
import sys
import time

from .callback import Callback, read_numbers
from .metrics import as_metric


class Recorder(Callback):
    """Records each training batch's loss, smoothed loss s_t = (beta s_(t-1) + (1 - beta) loss_t) / (1 - beta^t), lr
    and momentum, and each epoch's train_loss, valid_loss (item-weighted mean) and metrics.
    """
    order = 50
    beta = 0.98  # smoothing of the training loss: an exponential moving average, debiased

    def __init__(self, metrics=()):
        self.metrics = [as_metric(m) for m in metrics]
        self.lrs, self.moms, self._losses, self._smooth_losses, self.values = [], [], [], [], []
        self._unread = []  # training losses (detached tensors) not yet read as numbers

    @property
    def losses(self):
        """Each training batch's loss, as Python floats."""
        self._read_losses()
        return self._losses

    @property
    def smooth_losses(self):
        """Each training batch's smoothed loss, as Python floats."""
        self._read_losses()
        return self._smooth_losses

    def _read_losses(self):
        """Read the unread training losses, all at once, and extend the smoothed curve with them."""
        unread, self._unread = self._unread, []
        for loss in read_numbers(unread):
            self._losses.append(loss)
            self._count += 1
            self._average = self.beta * self._average + (1 - self.beta) * loss
            self._smooth_losses.append(self._average / (1 - self.beta ** self._count))

    @property
    def metric_names(self):
        return ["epoch", "train_loss", "valid_loss"] + [m.name for m in self.metrics] + ["time"]

    @property
    def last_values(self):
        """The last epoch's row as a dict: {"train_loss": ..., "valid_loss": ..., metric names...}."""
        return dict(zip(self.metric_names[1:-1], self.values[-1])) if self.values else {}

    def before_fit(self):
        """Start empty lists of losses, rates and epoch rows, and restart the loss smoothing."""
        self.lrs, self.moms, self._losses, self._smooth_losses, self.values = [], [], [], [], []
        self._unread, self._average, self._count = [], 0.0, 0
        self.valid_values = [None] * (1 + len(self.metrics))

    def before_epoch(self):
        """Start the epoch's clock."""
        self.start_time = time.perf_counter()

    def after_batch(self):
        """Record a training batch's loss, smoothed loss, lr and momentum; add a validation batch's
        loss and predictions to the running sums and metrics."""
        if self.loss is None:  # cancelled before the loss, or no targets
            return
        if self.training:
            self._record_train_batch()
        else:
            self._record_valid_batch()

    def _record_train_batch(self):
        self._unread.append(self.loss.detach())  # read later (losses, smooth_losses), with the others
        self.lrs.append(self.opt.param_groups[-1]["lr"])
        self.moms.append(self.opt.param_groups[-1].get("mom"))

    def before_validate(self):
        """Zero the validation loss sum and reset every metric."""
        self._valid_losses, self._valid_count = [], 0
        for m in self.metrics:
            m.reset()

    def _record_valid_batch(self):
        n = len(self.yb[0])
        self._valid_losses.append((self.loss.detach(), n))  # read together in after_validate
        self._valid_count += n
        for m in self.metrics:
            m.accumulate(self.pred, *self.yb)

    def after_validate(self):
        """valid_loss = sum of batch loss * batch size / items seen, and each metric's value."""
        losses = read_numbers([loss for loss, _ in self._valid_losses])
        valid_total = sum(loss * n for loss, (_, n) in zip(losses, self._valid_losses))
        valid_loss = valid_total / self._valid_count if self._valid_count else None
        self.valid_values = [valid_loss] + [m.value for m in self.metrics]

    def after_epoch(self):
        """Append the epoch's row: train_loss (the last smoothed loss), valid_loss, metrics; and its time."""
        train_loss = self.smooth_losses[-1] if self.smooth_losses else None
        self.values.append([train_loss] + self.valid_values)
        self.epoch_time = time.perf_counter() - self.start_time
        self.valid_values = [None] * (1 + len(self.metrics))

    # ---------------------------------------------------------------- plots (PNG files)
    def plot_loss(self, path="loss.png", skip_start=5, with_valid=True):
        """Training loss per batch (and validation loss at each epoch's end)."""
        fig, ax = _figure()
        start = min(skip_start, max(len(self.losses) - 1, 0))
        ax.plot(range(start, len(self.losses)), self.losses[start:], label="train")
        valid = [(i, row[1]) for i, row in zip(self._epoch_ends(), self.values) if row[1] is not None]
        if with_valid and valid:
            ax.plot(*zip(*valid), marker="o", label="valid")
        ax.set_xlabel("batches processed")
        ax.set_ylabel("loss")
        ax.legend()
        return _save(fig, path)

    def _epoch_ends(self):
        per_epoch = len(self.losses) / max(len(self.values), 1)
        return [round(per_epoch * (i + 1)) for i in range(len(self.values))]

    def plot_lr_find(self, path="lr_find.png", skip_end=5, suggestions=None):
        """Smoothed loss against the learning rate (log scale), with suggested rates marked."""
        fig, ax = _figure()
        end = max(len(self.lrs) - skip_end, 1)
        ax.plot(self.lrs[:end], self.smooth_losses[:end])
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss (smoothed)")
        for (name, lr), color in zip((suggestions or {}).items(), ("C1", "C2", "C3", "C4")):
            ax.axvline(lr, color=color, linestyle="--", label=f"{name}: {lr:.2e}")
        if suggestions:
            ax.legend()
        return _save(fig, path)

    def plot_sched(self, path="schedule.png"):
        """The learning rate and momentum of each training batch."""
        fig, axes = _figure(ncols=2)
        axes[0].plot(self.lrs)
        axes[0].set_title("learning rate")
        axes[1].plot(self.moms)
        axes[1].set_title("momentum")
        for ax in axes:
            ax.set_xlabel("batch")
        return _save(fig, path)


def _figure(ncols=1):
    # A Figure without pyplot: no global state, no GUI backend needed.
    from matplotlib.figure import Figure
    fig = Figure(figsize=(5 * ncols, 3.5), tight_layout=True)
    axes = fig.subplots(ncols=ncols)
    return fig, axes


def _save(fig, path):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _bar_stream():
    """Where a live progress bar can go: stderr on a terminal, stdout in a Jupyter kernel (a notebook
    redraws a line on "\r"), else nowhere (a CI log or a file would keep every redraw)."""
    if sys.stderr.isatty():
        return sys.stderr
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return sys.stdout if type(shell).__name__ == "ZMQInteractiveShell" else None


class ProgressCallback(Callback):
    """Prints fastai's per-epoch table, and a progress bar over batches on a terminal or in Jupyter."""
    order = 55  # after the Recorder (50), before callbacks that may stop training in after_epoch (60)

    def __init__(self, out=None):
        self.out, self.show, self.header_printed, self.bar = out, True, False, None

    @property
    def _stream(self):
        return self.out or sys.stdout

    def before_fit(self):
        """Read learn.show_progress; the table header is printed at the first epoch."""
        self.show = getattr(self.learn, "show_progress", True)
        self.header_printed = False
        self.bar = _bar_stream() if self.show else None

    def before_epoch(self):
        """Print the table header (epoch, train_loss, valid_loss, metrics, time) once per fit."""
        if self.show and not self.header_printed:
            print(self._row(self.recorder.metric_names), file=self._stream)
            self.header_printed = True

    def after_batch(self):
        """Redraw the progress bar (done / batches), on a terminal or in a notebook."""
        if self.bar is not None:
            n = len(self.dl)
            done = self.iter + 1
            bar = "#" * (20 * done // n)
            stage = "train" if self.training else "valid"
            print(f"\r{stage} [{bar:<20}] {done}/{n}", end="" if done < n else "\r" + " " * 40 + "\r",
                  file=self.bar, flush=True)

    def after_epoch(self):
        """Print the epoch's row of the table."""
        if not self.show:
            return
        row = [str(self.epoch)] + [_fmt(v) for v in self.recorder.values[-1]] + [_clock(self.recorder.epoch_time)]
        print(self._row(row), file=self._stream, flush=True)

    def _row(self, cells):
        """Cells left-aligned in columns 12 wide, or as wide as the column's name and two spaces."""
        widths = [max(12, len(name) + 2) for name in self.recorder.metric_names]
        return "".join(f"{cell:<{w}}" for cell, w in zip(cells, widths)).rstrip()


def _fmt(v):
    if v is None:
        return "None"
    return f"{v:.6f}" if isinstance(v, float) and math.isfinite(v) else str(v)


def _clock(seconds):
    return f"{int(seconds) // 60:02d}:{int(seconds) % 60:02d}"
