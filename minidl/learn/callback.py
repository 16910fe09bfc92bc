"""Callbacks: code that runs at the Learner's events, and the exceptions that cancel a step.

The Learner calls ``cb.<event>()`` on every callback, in ``order``, at each event:

    before_fit
      before_epoch
        before_train
          before_batch, after_pred, after_loss, before_backward, after_backward,
          before_step, after_step, after_batch          (once per batch)
        after_train
        before_validate ... (the same batch events, no backward or step) ... after_validate
      after_epoch
    after_fit

Raising Cancel<Stage>Exception in a callback skips the rest of that stage (the
``after_cancel_<stage>`` event then runs, and ``after_<stage>`` still does).
Inside a callback, ``self.model``, ``self.loss``, ``self.epoch``... read the
Learner's attributes; write them with ``self.learn.<name> = ...``.
"""
import math
import re

import numpy as np

from ..nn.utils import clip_grad_norm_


class CancelFitException(Exception):
    """Stop training altogether (after_cancel_fit, after_fit still run)."""


class CancelEpochException(Exception):
    """Skip the rest of this epoch."""


class CancelTrainException(Exception):
    """Skip the rest of this epoch's training batches."""


class CancelValidateException(Exception):
    """Skip this epoch's validation."""


class CancelBatchException(Exception):
    """Skip the rest of this batch."""


class CancelBackwardException(Exception):
    """Skip this batch's backward pass."""


class CancelStepException(Exception):
    """Skip this batch's optimizer step."""


class Callback:
    """Code run at the Learner's events: define before_fit, after_batch... (see the module docstring);
    ``order`` sets when it runs among the others, and unknown attributes are read from ``self.learn``.
    """
    order = 0
    learn = None

    def __getattr__(self, name):
        # Only called for names the callback itself lacks: read them from the Learner.
        if name != "learn" and self.learn is not None:
            return getattr(self.learn, name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def name(self):
        """ProgressCallback -> "progress", LRFinder -> "lr_finder": how the Learner exposes it."""
        base = re.sub(r"Callback$", "", type(self).__name__) or type(self).__name__
        words = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", base)
        return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", words).lower()


class TrainEvalCallback(Callback):
    """Puts the model in train or eval mode, counts training iterations and finished epochs."""
    order = -10

    def before_fit(self):
        """Start counting: train_iter = 0, epochs_done = the epoch training starts from."""
        self.learn.train_iter = 0
        self.learn.epochs_done = self.learn.start_epoch

    def after_epoch(self):
        """Record the epoch as done (epochs_done = epoch + 1)."""
        self.learn.epochs_done = self.epoch + 1

    def before_train(self):
        """Training mode: learn.training = True and model.train() (dropout on, batch statistics)."""
        self.learn.training = True
        self.model.train()

    def before_validate(self):
        """Evaluation mode: learn.training = False and model.eval() (dropout off, running statistics)."""
        self.learn.training = False
        self.model.eval()

    def after_batch(self):
        """Count one more training iteration (train_iter += 1) after a training batch."""
        if self.training:
            self.learn.train_iter += 1


def on_host(t):
    """True when reading a tensor's value costs nothing: its array is a numpy array ("cpu", "emu")."""
    return isinstance(t.data, np.ndarray)


def read_numbers(tensors):
    """The values of one-value tensors as Python floats, all read at once.

    Reading a GPU tensor waits until everything queued before it has run, so reading each batch's
    loss every batch would keep the GPU from running ahead of Python: losses are kept on the device
    (detached) and read together, once per epoch or when someone asks (lr_find, every batch).
    """
    if all(on_host(t) for t in tensors):
        return [float(t.item()) for t in tensors]
    from ..ops.shape import stack
    return [float(v) for v in stack([t.reshape(()) for t in tensors]).numpy().tolist()]


class NonFiniteLossError(FloatingPointError):
    """Training stopped because the loss became NaN or infinite (see TerminateOnNaN)."""


class TerminateOnNaN(Callback):
    """Stops training at the first batch whose loss is NaN or infinite, before its backward pass and step.

    A NaN spreads: one bad step makes every weight NaN, and from then on the epoch table
    prints ``nan`` while nothing is learned. The Learner adds this callback by default
    (``learn.terminate_on_nan``); ``learn.remove_cbs(learn.terminate_on_nan)`` turns it off.
    The error names the stage, epoch and batch, the last finite training loss, and what to try.
    On a GPU reading a loss waits for the GPU to drain its queue, so there the losses are
    read in groups of ``device_every`` batches (and at each epoch's end): a NaN is then caught
    up to that many batches late, and the error says which batch it first appeared in.
    """
    order = 70  # after the lr finder (60), which ends its sweep at a non-finite loss instead
    name = "terminate_on_nan"  # (the rule in Callback.name would make it terminate_on_na_n)
    device_every = 16

    def __init__(self):
        self.last_finite, self.pending = None, []

    def before_fit(self):
        """Forget the last finite loss of an earlier fit."""
        self.last_finite, self.pending = None, []

    def after_loss(self):
        """Raise NonFiniteLossError if this batch's loss is not a finite number (on a GPU: if one of the last
        device_every batches' losses was not)."""
        self.pending.append((self.training, self.epoch, self.iter, self.loss.detach()))
        if on_host(self.loss) or len(self.pending) >= self.device_every or self.iter + 1 >= len(self.dl):
            self._check()

    def after_epoch(self):
        """Check the losses still unread (after a cancelled batch or stage)."""
        self._check()

    def _check(self):
        pending, self.pending = self.pending, []
        for (training, epoch, i, _), loss in zip(pending, read_numbers([p[3] for p in pending])):
            if not math.isfinite(loss):
                self._stop(training, epoch, i, loss, late=(training, epoch, i) != (self.training, self.epoch, self.iter))
            if training:
                self.last_finite = (epoch, i, loss)

    def _stop(self, training, epoch, i, loss, late):
        stage = "training" if training else "validation"
        last = ("no finite training loss was seen in this fit" if self.last_finite is None else
                "the last finite training loss was {2:.6g} (epoch {0}, batch {1})".format(*self.last_finite))
        lr = f"it is {self.opt.param_groups[-1]['lr']:.3g} now; " if self.opt is not None else ""
        stopped = (f"Training stopped at batch {self.iter} of epoch {self.epoch} (on a GPU the losses are read "
                   f"every {self.device_every} batches)." if late else
                   "Training stopped before this batch's backward pass and step.")
        raise NonFiniteLossError(
            f"{type(self.learn).__name__}: the {stage} loss is {loss} at epoch {epoch}, batch {i} "
            f"(of {len(self.dl)}); {last}. {stopped}"
            f"\nTry: a lower learning rate ({lr}learn.lr_find() suggests one), inputs and "
            f"targets without NaN or inf (check the data), a loss that suits the targets. To train on "
            f"regardless: learn.remove_cbs(learn.terminate_on_nan).")


class GradientClip(Callback):
    """fastai's GradientClip: before each step, the gradients of the trained parameters scaled down so their
    total norm is at most ``max_norm`` (minidl.nn.clip_grad_norm_). Text learners use it (max_norm 0.1 as
    fastai's RNN learners did): one batch of long reviews can otherwise throw an LSTM far off."""
    def __init__(self, max_norm=1.0, norm_type=2.0):
        self.max_norm, self.norm_type = max_norm, norm_type

    def before_step(self):
        """Clip the gradients of the parameters the optimizer will step (data parallel: the averaged ones)."""
        params = [p for group in self.opt.param_groups for p in group["params"] if p.grad is not None]
        if params:
            clip_grad_norm_(params, self.max_norm, self.norm_type)


class ParamScheduler(Callback):
    """Sets optimizer hyper-parameters from schedules of training progress before each batch.

    ``scheds`` maps a hyper-parameter name ("lr", "mom") to a function of pct in [0, 1]
    (see minidl.optim.schedule); pct is learn.pct_train.
    """
    order = 1

    def __init__(self, scheds):
        self.scheds = scheds

    def before_fit(self):
        """Set each scheduled hyper-parameter to sched(pct_train) before the first batch."""
        self._set(self.learn.pct_train)

    def before_batch(self):
        """Set each scheduled hyper-parameter to sched(pct_train), pct_train in [0, 1], before a training batch."""
        if self.training:
            self._set(self.learn.pct_train)

    def _set(self, pct):
        for name, fn in self.scheds.items():
            self.opt.set_hyper(name, fn(min(pct, 1.0)))


class TrackerCallback(Callback):
    """Tracks a recorded value (valid_loss by default) and notices improvements."""
    order = 60  # after the Recorder has computed the epoch's values

    def __init__(self, monitor="valid_loss", comp=None, min_delta=0.0):
        self.monitor, self.min_delta = monitor, abs(min_delta)
        if comp is None:
            comp = np.less if "loss" in monitor or "error" in monitor else np.greater
        self.comp = comp

    def before_fit(self):
        """Check the monitored name is recorded (and measurable), and reset best to the worst value (+-inf)."""
        names = self.recorder.metric_names
        if self.monitor not in names:
            raise ValueError(f"{type(self).__name__}: cannot monitor {self.monitor!r}; recorded values are "
                             f"{[n for n in names if n not in ('epoch', 'time')]}")
        if self.monitor != "train_loss" and self.dls.valid is None:
            raise ValueError(f"{type(self).__name__}: {self.monitor!r} is measured on the validation set, "
                             f"and these DataLoaders have none; monitor 'train_loss' or add a validation set")
        self.best = np.inf if self.comp is np.less else -np.inf
        self.improved = False

    def after_epoch(self):
        """improved = comp(value -+ min_delta, best): better than the best by more than min_delta?
        If so, value becomes the new best."""
        value = self.recorder.last_values[self.monitor]
        delta = -self.min_delta if self.comp is np.less else self.min_delta
        self.improved = value is not None and bool(self.comp(value - delta, self.best))
        if self.improved:
            self.best = value


class SaveModelCallback(TrackerCallback):
    """Saves the model (and optionally optimizer) whenever the monitored value improves,
    and loads the best one at the end; ``every_epoch`` saves ``{fname}_{epoch}`` each epoch."""

    def __init__(self, monitor="valid_loss", comp=None, min_delta=0.0, fname="model",
                 every_epoch=False, at_end=False, with_opt=False):
        super().__init__(monitor, comp, min_delta)
        self.fname, self.every_epoch, self.at_end, self.with_opt = fname, every_epoch, at_end, with_opt

    def after_epoch(self):
        """Save the model when the monitored value improved (or every epoch, as ``{fname}_{epoch}``)."""
        if self.every_epoch:
            self.learn.save(f"{self.fname}_{self.epoch}", with_opt=self.with_opt)
            return
        super().after_epoch()
        if self.improved and not self.at_end:
            print(f"Better model found at epoch {self.epoch} with {self.monitor} value: {self.best:.6g}.")
            self.learn.save(self.fname, with_opt=self.with_opt)

    def after_fit(self):
        """Save the final model (at_end), or load back the best one saved."""
        if self.at_end:
            self.learn.save(self.fname, with_opt=self.with_opt)
        elif not self.every_epoch and np.isfinite(self.best):
            self.learn.load(self.fname, with_opt=self.with_opt, resume=False)  # weights only: time goes on


class EarlyStoppingCallback(TrackerCallback):
    """Stops training when the monitored value has not improved for ``patience`` epochs."""

    def __init__(self, monitor="valid_loss", comp=None, min_delta=0.0, patience=1):
        super().__init__(monitor, comp, min_delta)
        self.patience = patience

    def before_fit(self):
        """Reset the tracking and the count of epochs without improvement."""
        super().before_fit()
        self.waited = 0

    def after_epoch(self):
        """Count the epochs without improvement; after ``patience`` of them, stop (CancelFitException)."""
        super().after_epoch()
        self.waited = 0 if self.improved else self.waited + 1
        if self.waited >= self.patience:
            print(f"No improvement since epoch {self.epoch - self.waited}: early stopping")
            raise CancelFitException()
