"""The Learner: data + model + loss + optimizer, and the training loop that joins them.

The loop itself is short (``_do_one_batch``): predict, compute the loss, backward,
step, zero the gradients. Everything else (switching train/eval, recording losses,
printing the table, schedules, early stopping, the lr finder) is a callback that runs
at the loop's events (see callback.py). fastai's API, so the book's code reads the same:

    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    learn.fit_one_cycle(3, lr_max=1e-2)
"""
import contextlib
import copy
import math
import pathlib

import numpy as np

from .. import distributed, random
from ..autograd import no_grad
from ..data import collate
from ..io import CheckpointError, load_checkpoint, save_checkpoint
from ..nn import BatchNorm1d, BatchNorm2d, CrossEntropyLossFlat, MSELossFlat
from ..optim import fastai_adam, lr_for_groups
from ..optim.schedule import one_cycle
from ..tensor import Tensor, is_float
from .callback import (CancelBackwardException, CancelBatchException, CancelEpochException,
                       CancelFitException, CancelStepException, CancelTrainException,
                       CancelValidateException, ParamScheduler, TerminateOnNaN, TrainEvalCallback)
from .lr_find import LRFinder, suggest
from .recorder import ProgressCallback, Recorder


def trainable_params(model):
    """The default splitter: one parameter group holding every parameter."""
    return [list(model.parameters())]


class Learner:
    """A model, its data, loss and optimizer, and the training loop whose events callbacks hook into
    (fastai's Learner)."""

    def __init__(self, dls, model, loss_func=None, opt_func=fastai_adam, lr=1e-3, splitter=trainable_params,
                 cbs=None, metrics=None, path=".", model_dir="models", wd=None, wd_bn_bias=False, train_bn=True,
                 moms=(0.95, 0.85, 0.95)):
        """``dls``: DataLoaders (train, valid); ``loss_func``: picked from the targets' dtype when
        None (integers: CrossEntropyLossFlat, floats: MSELossFlat); ``opt_func(param_groups, lr)``
        builds the optimizer (fastai's Adam by default); ``splitter(model)`` returns the
        parameter groups (body, head...) that freezing and discriminative rates act on.
        Biases and batch norm weights get no weight decay unless wd_bn_bias (fastai's default)."""
        self.dls, self.model = dls, model
        first = dls.train.one_batch()
        self.n_inputs = getattr(dls, "n_inputs", None) or len(first) - 1  # the rest of a batch: targets
        _check_dtypes(first[:self.n_inputs], model)
        self.loss_func = loss_func if loss_func is not None else self._default_loss(first[-1])
        self.opt_func, self.lr, self.splitter, self.wd, self.wd_bn_bias = opt_func, lr, splitter, wd, wd_bn_bias
        self.train_bn, self.moms = train_bn, moms
        self.path, self.model_dir = pathlib.Path(path), model_dir
        self.opt, self.training, self.show_progress = None, False, True
        self.epoch, self.n_epoch, self.iter, self.train_iter, self.epochs_done = 0, 1, 0, 0, 0
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            metrics = [metrics]
        self.cbs = []
        self.add_cbs([TrainEvalCallback(), Recorder([copy.copy(m) for m in metrics or []]), ProgressCallback(),
                      TerminateOnNaN()])
        self.add_cbs(cbs or [])
        if dls.device is not None:
            self.model.to(dls.device)

    @staticmethod
    def _default_loss(y):
        if not is_float(y.dtype):
            return CrossEntropyLossFlat()
        return MSELossFlat()

    # ---------------------------------------------------------------- callbacks and events
    def add_cbs(self, cbs):
        """Add callbacks (instances or classes), each also reachable as ``learn.<cb.name>``; returns self."""
        for cb in cbs if isinstance(cbs, (list, tuple)) else [cbs]:
            cb = cb() if isinstance(cb, type) else cb
            cb.learn = self
            setattr(self, cb.name, cb)   # learn.recorder, learn.progress, ...
            self.cbs.append(cb)
        return self

    def remove_cbs(self, cbs):
        """Remove callbacks (one or a list) added with add_cbs, and their ``learn.<cb.name>`` attribute."""
        for cb in cbs if isinstance(cbs, (list, tuple)) else [cbs]:
            self.cbs.remove(cb)
            if getattr(self, cb.name, None) is cb:
                delattr(self, cb.name)

    @contextlib.contextmanager
    def added_cbs(self, cbs):
        """A context manager: the callbacks are added for the ``with`` block only (fit's ``cbs``)."""
        cbs = cbs if isinstance(cbs, (list, tuple)) else [cbs] if cbs is not None else []
        cbs = [cb() if isinstance(cb, type) else cb for cb in cbs]
        self.add_cbs(cbs)
        try:
            yield
        finally:
            self.remove_cbs(cbs)

    def __call__(self, event):
        for cb in sorted(self.cbs, key=lambda c: c.order):
            method = getattr(type(cb), event, None)
            if method is not None:
                method(cb)

    def _with_events(self, fn, stage, cancel):
        try:
            self(f"before_{stage}")
            fn()
        except cancel:
            self(f"after_cancel_{stage}")
        self(f"after_{stage}")

    # ---------------------------------------------------------------- the loop
    def _do_one_batch(self):
        self.pred = self.model(*self.xb)
        self("after_pred")
        if self.yb:
            # loss is what the Recorder records; loss_grad is what backward differentiates: the same, unless a
            # callback adds a penalty to it in after_loss (RNNRegularizer), as fastai has them
            self.loss = self.loss_grad = self.loss_func(self.pred, *self.yb)
            self("after_loss")
        if not self.training or not self.yb:
            return
        self._with_events(self.loss_grad.backward, "backward", CancelBackwardException)
        self._with_events(self.opt.step, "step", CancelStepException)
        self.opt.zero_grad()

    def _all_batches(self):
        for self.iter, batch in enumerate(self.dl):
            self.xb, self.yb = tuple(batch[:self.n_inputs]), tuple(batch[self.n_inputs:])
            self.pred = self.loss = self.loss_grad = None  # set by the batch, unless a callback cancels it first
            self._with_events(self._do_one_batch, "batch", CancelBatchException)

    def _do_epoch_train(self):
        self.dl = self.dls.train
        if hasattr(self.dl, "epoch"):
            self.dl.epoch = self.epoch  # a seeded loader's order depends on the epoch: resuming replays it
        self._with_events(self._all_batches, "train", CancelTrainException)

    def _do_epoch_validate(self, dl=None):
        self.dl = dl if dl is not None else self.dls.valid
        if self.dl is None:
            return
        with no_grad():
            self._with_events(self._all_batches, "validate", CancelValidateException)

    def _do_epoch(self):
        self._do_epoch_train()
        self._do_epoch_validate()

    def _do_fit(self):
        for self.epoch in range(self.start_epoch, self.n_epoch):
            self._with_events(self._do_epoch, "epoch", CancelEpochException)

    @property
    def pct_train(self):
        """How far training has got, from 0 to 1 (what schedules are functions of)."""
        done_in_epoch = self.iter / len(self.dls.train) if self.training else 0
        return (self.epoch + done_in_epoch) / max(self.n_epoch, 1)

    def fit(self, n_epoch, lr=None, wd=None, cbs=None, start_epoch=0):
        """Train for ``n_epoch`` epochs at ``lr`` (the Learner's lr by default); ``start_epoch``
        skips the epochs a checkpoint already holds (learn.load(...).epochs_done)."""
        if len(self.dls.train) == 0:
            raise ValueError(f"fit: the training DataLoader has no batches ({len(self.dls.train.dataset)} samples, "
                             f"batch size {self.dls.train.batch_size}, drop_last={self.dls.train.drop_last})")
        if self.opt is None:
            self.create_opt()
        self.opt.set_hyper("lr", lr_for_groups(self.lr if lr is None else lr, len(self.opt.param_groups)))
        if wd is not None or self.wd is not None:
            self.opt.set_hyper("wd", wd if wd is not None else self.wd)
        self.n_epoch, self.start_epoch = n_epoch, start_epoch
        self.epoch, self.iter = start_epoch, 0
        with self.added_cbs(cbs):
            try:
                self._with_events(self._do_fit, "fit", CancelFitException)
            except BaseException:   # an error, a NaN, Ctrl-C: leave nothing half-done for the next fit
                self._clean_up_after_error()
                raise

    def _clean_up_after_error(self):
        """What a fit that did not finish leaves behind, put right: after_fit runs (a callback's own error
        there is dropped, so the first error is the one raised), no gradient of the stopped batch is left
        to be added into the next fit's first step, and the model is in eval mode."""
        with contextlib.suppress(Exception):
            self("after_fit")
        self.model.zero_grad()
        self.model.eval()
        self.training = False

    def fit_one_cycle(self, n_epoch, lr_max=None, div=25.0, div_final=1e5, pct_start=0.25, wd=None,
                      moms=None, cbs=None, start_epoch=0):
        """fit with the one-cycle schedule: lr warms up (cosine) from lr_max/div to lr_max over
        pct_start of training, then anneals to lr_max/div_final; momentum does the opposite."""
        if self.opt is None:
            self.create_opt()
        lr_max = lr_for_groups(self.lr if lr_max is None else lr_max, len(self.opt.param_groups))
        scheds = one_cycle(lr_max, div=div, div_final=div_final, pct_start=pct_start, moms=moms or self.moms)
        if self.opt.param_groups[0].get("mom", 0) == 0:
            scheds.pop("mom")  # an optimizer without momentum (plain SGD) keeps it off, as in fastai
        self.fit(n_epoch, wd=wd, cbs=[ParamScheduler(scheds)] + list(cbs or []), start_epoch=start_epoch)

    def fine_tune(self, epochs, base_lr=2e-3, freeze_epochs=1, lr_mult=100, pct_start=0.3, div=5.0, **kwargs):
        """fastai's transfer-learning recipe: train the head with the body frozen, then everything,
        the body at rates lr_mult times lower than the head (discriminative learning rates)."""
        self.freeze()
        self.fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99, **kwargs)
        base_lr /= 2
        self.unfreeze()
        self.fit_one_cycle(epochs, slice(base_lr / lr_mult, base_lr), pct_start=pct_start, div=div, **kwargs)

    def to_distributed(self, sync_bn=False, bucket_mb=4.0):
        """Train data-parallel over the ranks mpirun started (learn/distributed.py); returns self."""
        from .distributed import to_distributed
        return to_distributed(self, sync_bn, bucket_mb)

    # ---------------------------------------------------------------- optimizer and freezing
    def create_opt(self):
        """Build the optimizer from opt_func over the splitter's parameter groups, with weight decay wd
        (none for biases and batch norm weights unless wd_bn_bias).
        """
        self.opt = self.opt_func([{"params": list(g)} for g in self.splitter(self.model)], self.lr)
        if self.wd is not None:
            self.opt.set_hyper("wd", self.wd)
        if not self.wd_bn_bias:
            self.opt.exclude_from_weight_decay(p for name, p in self.model.named_parameters()
                                               if name.endswith("bias") or id(p) in self._bn_params())
        return self.opt

    def _bn_params(self):
        return {id(p) for m in self.model.modules() if isinstance(m, (BatchNorm1d, BatchNorm2d))
                for p in m.parameters(recurse=False)}

    def freeze_to(self, n):
        """Train only parameter groups n, n+1, ... (batch norm layers stay trainable when train_bn).

        A negative ``n`` counts from the end, so ``freeze_to(-1)`` (``freeze``) keeps the last group
        training; on a model with a single group that freezes nothing (as in fastai: ``fine_tune``
        on a collab model trains it whole in its first epoch too)."""
        if self.opt is None:
            self.create_opt()
        groups = [g["params"] for g in self.opt.param_groups]
        first_trained = n if n >= 0 else max(len(groups) + n, 0)
        if first_trained >= len(groups):
            raise ValueError(f"freeze_to({n}): the model has {len(groups)} parameter group(s), so that would "
                             f"freeze all of them and nothing would train; give n < {len(groups)}")
        bn_params = self._bn_params()
        frozen = set(range(first_trained))
        for i, group in enumerate(groups):
            for p in group:
                p.requires_grad_(i not in frozen or (self.train_bn and id(p) in bn_params))
                if not p.requires_grad:
                    p.grad = None

    def freeze(self):
        """Freeze every group but the last (the head)."""
        self.freeze_to(-1)

    def unfreeze(self):
        """Make every parameter group trainable again (freeze_to(0))."""
        self.freeze_to(0)

    # ---------------------------------------------------------------- the learning-rate finder
    def lr_find(self, start_lr=1e-7, end_lr=10.0, num_it=100, stop_div=True, plot="lr_find.png"):
        """Sweep the learning rate up exponentially and return SuggestedLRs(valley, minimum, steep).

        The model and the optimizer are put back as they were (as in fastai), and so is the
        random generator, so lr_find changes nothing about the training that follows.
        """
        if len(self.dls.train) == 0:
            raise ValueError("lr_find: the training DataLoader has no batches")
        snapshot, shown = self._snapshot(), self.show_progress
        n_epoch = math.ceil(num_it / len(self.dls.train))
        self.show_progress = False
        try:
            self.fit(n_epoch, cbs=[LRFinder(start_lr, end_lr, num_it, stop_div)])
        finally:
            self.show_progress = shown
            self._restore(snapshot)
        suggestions = suggest(self.recorder.lrs, self.recorder.smooth_losses, num_it)
        if plot and distributed.is_main_process():
            self.recorder.plot_lr_find(str(self.path / plot), suggestions=suggestions._asdict())
        return suggestions

    def _snapshot(self):
        return {"model": {k: v.numpy().copy() for k, v in self.model.state_dict().items()},
                "opt": copy.deepcopy(self.opt.state_dict()) if self.opt is not None else None,
                "rng": copy.deepcopy(random.generator().bit_generator.state),
                "training": [m.training for m in self.model.modules()],
                "requires_grad": [p.requires_grad for p in self.model.parameters()]}

    def _restore(self, snapshot):
        self.model.load_state_dict(snapshot["model"])
        self.model.zero_grad()
        if snapshot["opt"] is None:
            self.opt = None
        else:
            self.opt.load_state_dict(snapshot["opt"])
        random.generator().bit_generator.state = snapshot["rng"]
        for m, mode in zip(self.model.modules(), snapshot["training"]):
            m.training = mode
        for p, flag in zip(self.model.parameters(), snapshot["requires_grad"]):
            p.requires_grad = flag

    # ---------------------------------------------------------------- predictions
    def _inference_dl(self, ds_idx, dl, who):
        """The DataLoader to predict on: ``dl``, or dls[ds_idx] in order and complete (no shuffle, no drop)."""
        if dl is not None:
            return dl
        dl = self.dls[ds_idx]
        if dl is None or len(dl.dataset) == 0:
            raise ValueError(f"{who}: there is no {'validation' if ds_idx == 1 else 'training'} data; "
                             f"pass dl=... (e.g. dls.test_dl(rows))")
        return dl.new(shuffle=False, drop_last=False)

    def get_preds(self, ds_idx=1, dl=None, with_decoded=False, act=None):
        """(predictions, targets) over a whole DataLoader (the validation set by default).

        Predictions go through the loss's activation (softmax for classification) unless
        ``act`` is given; with_decoded adds the decisions (class indices)."""
        dl = self._inference_dl(ds_idx, dl, "get_preds")
        preds, targets = [], []
        self.model.eval()
        with no_grad():
            for batch in dl:
                xb, yb = batch[:self.n_inputs], batch[self.n_inputs:]
                preds.append(self.model(*xb).numpy())
                if yb:
                    targets.append(yb[0].numpy())
        out = Tensor(np.concatenate(preds), device=dl.device)
        act = act or getattr(self.loss_func, "activation", None)
        probs = act(out) if act is not None else out
        result = [probs, Tensor(np.concatenate(targets)) if targets else None]
        if with_decoded:
            decodes = getattr(self.loss_func, "decodes", lambda o: o)
            result.append(decodes(probs))
        return tuple(result)

    def predict(self, item):
        """Predict one item (the inputs of one sample, as the dataset gives them):
        returns (decoded, decoded index or value, probabilities)."""
        items = item if isinstance(item, tuple) else (item,)
        xb = collate([items], device=self.dls.device or "cpu")
        self.model.eval()
        with no_grad():
            out = self.model(*xb)
        act = getattr(self.loss_func, "activation", lambda o: o)
        decodes = getattr(self.loss_func, "decodes", lambda o: o)
        probs = act(out)
        decoded = decodes(probs)[0]
        probs = probs[0]
        vocab = getattr(self.dls, "vocab", None)
        label = vocab[int(decoded.item())] if vocab is not None and decoded.numel() == 1 else decoded
        return label, decoded, probs

    def show_results(self, ds_idx=1, max_n=9, shuffle=True, **kwargs):
        """A few samples with their targets and the model's predictions (fastai's show_results).

        ``max_n`` samples of the validation set (``ds_idx=0``: the training set), drawn at random
        unless ``shuffle=False`` by a generator of their own (training's random state is left
        alone). The DataLoaders show them: ``dls.show_results(ds_idx, idx, batch, decoded, **kwargs)``
        prints a table of rows (tabular, collab) or draws a PNG of images (vision)."""
        dl = self._inference_dl(ds_idx, None, "show_results")
        n = len(dl.dataset)
        idx = np.random.default_rng().permutation(n)[:max_n] if shuffle else np.arange(min(max_n, n))
        batch = dl.batch_of(idx)
        self.model.eval()
        with no_grad():
            out = self.model(*batch[:self.n_inputs])
        act = getattr(self.loss_func, "activation", lambda o: o)
        decodes = getattr(self.loss_func, "decodes", lambda o: o)
        return self.dls.show_results(ds_idx, idx, batch, decodes(act(out)), **kwargs)

    def validate(self, ds_idx=1, dl=None):
        """[valid_loss, *metrics] on a DataLoader (the validation set by default)."""
        self._do_epoch_validate(self._inference_dl(ds_idx, dl, "validate"))
        return self.recorder.valid_values

    # ---------------------------------------------------------------- checkpoints
    def _checkpoint_path(self, name):
        return self.path / self.model_dir / f"{name}.ckpt"

    def save(self, name, with_opt=True):
        """Save model (and optimizer) state, the number of epochs done and the random state,
        atomically, to path/model_dir/name.ckpt. To resume:
        ``learn.load(name); learn.fit_one_cycle(n, lr, start_epoch=learn.epochs_done)``.
        Data parallel (to_distributed): call it on every rank; rank 0 writes, the others wait for it."""
        path = self._checkpoint_path(name)
        if distributed.is_main_process():  # data parallel: rank 0 writes, the others wait until it has
            tree = {"model": {k: v.numpy() for k, v in self.model.state_dict().items()},
                    "opt": self.opt.state_dict() if with_opt and self.opt is not None else None,
                    "epochs_done": self.epochs_done, "rng": random.generator().bit_generator.state}
            path = save_checkpoint(path, tree)
        if distributed.is_initialized():
            distributed.barrier()
        return path

    def load(self, name, with_opt=True, strict=True, resume=True):
        """Load a checkpoint written by save (a clear error if it does not fit the model).

        resume=True also restores epochs_done and the random state, so training continues
        exactly; resume=False loads only the weights (and optimizer), e.g. the best model so far."""
        path = self._checkpoint_path(name) if not str(name).endswith(".ckpt") else name
        tree = load_checkpoint(path)
        needed = ["model", "opt", "epochs_done", "rng"] if resume else ["model"]
        lacking = [k for k in needed if not isinstance(tree, dict) or k not in tree]
        if lacking or not isinstance(tree["model"], dict):
            raise CheckpointError(f"Learner.load: {path} is a minidl checkpoint but not a Learner's (learn.save): "
                                  f"it lacks {lacking or ['a model state dict']}; load_checkpoint(path) reads it")
        self.model.load_state_dict(tree["model"], strict=strict)
        if with_opt and tree.get("opt") is not None:
            if self.opt is None:
                self.create_opt()
            opt_state = dict(tree["opt"], state={int(k): v for k, v in tree["opt"]["state"].items()})
            self.opt.load_state_dict(opt_state)
        if resume:
            random.generator().bit_generator.state = tree["rng"]
            self.epochs_done = tree["epochs_done"]
        return self


def _check_dtypes(inputs, model):
    """Float inputs must match the model's parameters; say so before training starts."""
    params = {p.dtype for p in model.parameters()}
    for x in inputs:
        if is_float(x.dtype) and params and x.dtype not in params:
            raise TypeError(f"Learner: the data is {x.dtype} but the model's parameters are "
                            f"{', '.join(map(str, params))}; convert the arrays (e.g. x.astype(np.float32)) "
                            f"or the model")
