"""Loss modules, PyTorch's and fastai's "Flat" ones.

fastai's losses flatten predictions and targets first (so a (N, T, C) sequence model
and an (N, C) classifier use the same loss), and know how to turn raw outputs into
probabilities (``activation``) and decisions (``decodes``), which Learner.predict and
get_preds use.
"""

from . import functional as F
from ..ops.elementwise import clamp, where
from ..tensor import zeros
from .module import Module


class CrossEntropyLoss(Module):
    def __init__(self, reduction="mean", label_smoothing=0.0, ignore_index=None):
        super().__init__()
        self.reduction, self.label_smoothing, self.ignore_index = reduction, label_smoothing, ignore_index

    def forward(self, input, target):
        """mean_i of -log softmax(input_i)[target_i], input (N, C) raw scores, target (N,) class ids
        (with label smoothing e: (1 - e) * that + e * mean_j of -log softmax(input_i)_j).

        Rows whose target is ``ignore_index`` (a "void" class: pixels nobody labelled) count for
        nothing: their loss is multiplied by 0 and the mean is over the others, as PyTorch's. A
        batch with nothing but such rows has loss 0 (PyTorch's gives nan)."""
        if self.ignore_index is not None:
            # every row's loss (an ignored row scored against class 0), then the ignored ones zeroed: cheaper
            # than gathering the kept rows of an (N*H*W, C) input, and all of it where the data is (a GPU
            # waits for no count on the host)
            kept = target != self.ignore_index
            losses = F.cross_entropy(input, where(kept, target, zeros((), dtype=target.dtype, device=target.device)),
                                     reduction="none", label_smoothing=self.label_smoothing)
            losses = losses * kept.to(losses.dtype)
            if self.reduction == "none":
                return losses
            return losses.sum() / clamp(kept.to(losses.dtype).sum(), min=1) if self.reduction == "mean" else losses.sum()
        return F.cross_entropy(input, target, reduction=self.reduction, label_smoothing=self.label_smoothing)


class MSELoss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, input, target):
        """mean of (input - target)^2 (or sum, or none, as ``reduction`` says); same shapes."""
        return F.mse_loss(input, target, reduction=self.reduction)


class L1Loss(MSELoss):
    def forward(self, input, target):
        """mean of |input - target| (or sum, or none, as ``reduction`` says); same shapes."""
        return F.l1_loss(input, target, reduction=self.reduction)


class BCEWithLogitsLoss(MSELoss):
    def forward(self, input, target):
        """mean of -[t log s(x) + (1 - t) log(1 - s(x))], s the sigmoid, computed stably from the raw scores x."""
        return F.binary_cross_entropy_with_logits(input, target, reduction=self.reduction)


class CrossEntropyLossFlat(CrossEntropyLoss):
    """Cross-entropy over the last axis (the classes), everything else flattened into the batch.

    ``axis=1`` for per-pixel scores (N, C, H, W) against masks (N, H, W): every pixel is a row."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def forward(self, input, target):
        """Cross-entropy with the classes moved to the last axis and every other axis flattened into the batch."""
        axis = self.axis % input.ndim
        if axis != input.ndim - 1:  # classes along another axis (N, C, H, W): move them last
            input = input.permute(*[d for d in range(input.ndim) if d != axis], axis)
        return super().forward(input.reshape(-1, input.shape[-1]), target.reshape(-1))

    def activation(self, out):
        """Probabilities: softmax of the raw outputs along the class axis."""
        return F.softmax(out, self.axis)

    def decodes(self, out):
        """The predicted class: argmax along the class axis."""
        return out.argmax(dim=self.axis)


class _FlatPair:
    """Mixin: flatten input and target to 1-D before the loss (fastai's BaseLoss(flatten=True))."""

    def forward(self, input, target):
        return super().forward(input.reshape(-1), target.reshape(-1).to(input.dtype))

    def activation(self, out):
        return out

    def decodes(self, out):
        return out


class MSELossFlat(_FlatPair, MSELoss):
    """Mean squared error over flattened predictions and targets (regression)."""


class L1LossFlat(_FlatPair, L1Loss):
    """Mean absolute error over flattened predictions and targets."""


class BCEWithLogitsLossFlat(_FlatPair, BCEWithLogitsLoss):
    """Binary cross-entropy from logits; predictions are probabilities > ``thresh``."""

    def __init__(self, thresh=0.5, **kwargs):
        super().__init__(**kwargs)
        self.thresh = thresh

    def activation(self, out):
        """Probabilities: sigmoid(out) = 1 / (1 + e^-out)."""
        return F.sigmoid(out)

    def decodes(self, out):
        """The predicted labels: out > thresh (out already probabilities)."""
        return out > self.thresh
