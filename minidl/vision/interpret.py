"""Looking at what a classifier does: its mistakes, and what its layers respond to.

``ClassificationInterpretation`` (fastai's): where does the model go wrong? The
confusion matrix counts (actual, predicted) pairs; the *top losses* are the images the
model got most confidently wrong (or right with least confidence) -- often mislabelled
photos, or photos that are hard for a person too.

``plot_first_layer_filters`` / ``plot_feature_maps`` (the book's Zeiler & Fergus
section): the first convolution's filters are small RGB images you can look at (edge,
colour-blob and stripe detectors); the feature maps show which parts of a given image
switch on a channel at increasing depths -- edges early, textures and parts later.
"""
import os

import numpy as np

from .. import nn
from ..autograd import no_grad
from .data import show_images


def _log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _figure(figsize):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    return Figure(figsize=figsize, tight_layout=True)


def _save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


class ClassificationInterpretation:
    """Predictions, targets and per-image losses of a classifier on one DataLoader (validation by default).

    ``probs`` (N, classes), ``targets`` (N,), ``decoded`` (the predicted class of each),
    ``losses`` (N,): the cross-entropy of each image, -log p(actual class).
    """

    def __init__(self, dl, probs, targets, losses, vocab, items):
        self.dl, self.probs, self.targets, self.losses, self.vocab = dl, probs, targets, losses, vocab
        self.items = items  # the dataset index of each row (files skipped as unreadable have none)
        self.decoded = probs.argmax(axis=1)

    @classmethod
    def from_learner(cls, learn, ds_idx=1, dl=None):
        dl = learn._inference_dl(ds_idx, dl, "ClassificationInterpretation")
        logits, targets = learn.get_preds(dl=dl, act=lambda out: out)
        logits, targets = logits.numpy().astype(np.float64), targets.numpy()
        log_probs = _log_softmax(logits)
        losses = -log_probs[np.arange(len(targets)), targets]
        ds = dl.dataset
        bad = getattr(ds, "bad_files", {})
        items = np.array([i for i, f in enumerate(getattr(ds, "files", range(len(ds)))) if f not in bad])
        return cls(dl, np.exp(log_probs), targets, losses, learn.dls.vocab, items)

    def confusion_matrix(self):
        """counts[i, j]: how many images of class i (actual) were predicted as class j."""
        n = len(self.vocab)
        counts = np.zeros((n, n), dtype=np.int64)
        np.add.at(counts, (self.targets, self.decoded), 1)
        return counts

    def most_confused(self, min_val=1):
        """[(actual, predicted, count)] for the off-diagonal cells with count >= min_val, largest first."""
        cm = self.confusion_matrix()
        pairs = [(str(self.vocab[i]), str(self.vocab[j]), int(cm[i, j]))
                 for i in range(len(cm)) for j in range(len(cm)) if i != j and cm[i, j] >= min_val]
        return sorted(pairs, key=lambda p: -p[2])

    def top_losses(self, k=None, largest=True):
        """(losses, row indices) of the k images with the largest (or smallest) loss."""
        order = np.argsort(-self.losses if largest else self.losses, kind="stable")[:k]
        return self.losses[order], order

    def plot_confusion_matrix(self, path="confusion_matrix.png", normalize=False, title="Confusion matrix"):
        """The matrix as a heat map with the counts (or row fractions, normalize=True) written in."""
        cm = self.confusion_matrix()
        shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
        n = len(cm)
        fig = _figure((1.2 + 0.8 * n, 1 + 0.8 * n))
        ax = fig.subplots()
        ax.imshow(shown, cmap="Blues", vmin=0)
        ax.set_title(title)
        ticks, names = np.arange(n), [str(v) for v in self.vocab]
        ax.set_xticks(ticks, names, rotation=90 if n > 4 else 0)
        ax.set_yticks(ticks, names)
        ax.set_xlabel("Predicted")
        ax.set_ylabel("Actual")
        threshold = shown.max() / 2
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{shown[i, j]:.2f}" if normalize else str(cm[i, j]), ha="center", va="center",
                        color="white" if shown[i, j] > threshold else "black")
        return _save(fig, path)

    def plot_top_losses(self, k=9, path="top_losses.png", ncols=3):
        """The k worst images, titled as fastai does: prediction / actual / loss / probability of the prediction."""
        losses, rows = self.top_losses(k)
        images, titles = [], []
        ds = self.dl.dataset
        for loss, row in zip(losses, rows):
            sample = ds[int(self.items[row])]          # the validation view of the image (centre crop)
            images.append(sample[0])
            pred = self.decoded[row]
            titles.append(f"{self.vocab[pred]}/{self.vocab[self.targets[row]]} / {loss:.2f} / "
                          f"{self.probs[row, pred]:.2f}")
        return show_images(np.stack(images), titles, path, ncols=ncols)


# ---------------------------------------------------------------- what the network learned

def first_conv(model):
    """The first Conv2d of a model (in the order its modules were built)."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError("plot_first_layer_filters: the model has no Conv2d layer")
    return conv


def plot_first_layer_filters(model, path="first_layer_filters.png", max_n=64, ncols=8):
    """The first convolution's filters as little RGB images.

    Each filter (3, k, k) is shifted and scaled to [0, 1] on its own (its own min and max),
    so every filter shows its pattern; what remains is the direction of the weights: a
    green blob is a filter that fires on green, a black/white stripe an edge detector.
    """
    conv = first_conv(model)
    w = conv.weight.numpy().astype(np.float64)[:max_n]
    if w.shape[1] != 3:
        raise ValueError(f"plot_first_layer_filters: the first conv takes {w.shape[1]} channels, not RGB")
    low = w.min(axis=(1, 2, 3), keepdims=True)
    high = w.max(axis=(1, 2, 3), keepdims=True)
    tiles = ((w - low) / np.maximum(high - low, 1e-12)).transpose(0, 2, 3, 1)
    n = len(tiles)
    nrows = -(-n // ncols)
    fig = _figure((ncols * 0.9, nrows * 0.9 + 0.4))
    fig.suptitle(f"first layer: {conv.weight.shape[0]} filters of {w.shape[2]}x{w.shape[3]} pixels", fontsize=9)
    for k, ax in enumerate(np.atleast_1d(fig.subplots(nrows, ncols)).ravel()):
        ax.axis("off")
        if k < n:
            ax.imshow(tiles[k], interpolation="nearest")
    return _save(fig, path)


def _stages(body):
    """The body's layers in order as (name, layer): its children, with a child that is itself a
    Sequential (EfficientNet's ``_blocks``, ResNet's ``layer1``) opened into its own children."""
    for name, child in body.named_children():
        if isinstance(child, nn.Sequential):
            yield from ((f"{name}.{k}", grandchild) for k, grandchild in child.named_children())
        else:
            yield name, child


def feature_maps(body, x, at=None):
    """[(layer name, activation (C, H, W))] after chosen layers of a Sequential ``body``.

    ``x``: one image batch (1, 3, H, W), normalised as the model's inputs. ``at``: names
    (or positions) of layers in ``_stages(body)``; by default three depths: the third layer
    (after the first conv, batch norm and activation in ResNet and EfficientNet), the
    middle one and the last.
    """
    stages = list(_stages(body))
    names = [name for name, _ in stages]
    if at is None:
        at = sorted({min(2, len(names) - 1), len(names) // 2, len(names) - 1})
    wanted = {names[a] if isinstance(a, int) else a for a in at}
    unknown = wanted - set(names)
    if unknown:
        raise KeyError(f"feature_maps: no layer named {sorted(unknown)}; the layers are {names}")
    out = []
    modes = [(m, m.training) for m in body.modules()]
    body.eval()
    try:
        with no_grad():
            for name, layer in stages:
                x = layer(x)
                if name in wanted:
                    out.append((name, x.numpy()[0]))
    finally:
        for m, mode in modes:
            m.training = mode
    return out


def plot_feature_maps(body, x, image, path="feature_maps.png", at=None, n_maps=6):
    """The input ``image`` (H, W, 3 in [0, 1]) and, for a few depths of ``body``, the ``n_maps``
    channels that respond most strongly to it (largest mean activation), one row per depth."""
    maps = feature_maps(body, x, at)
    fig = _figure(((n_maps + 1) * 1.5, len(maps) * 1.6 + 0.3))
    axes = np.atleast_2d(fig.subplots(len(maps), n_maps + 1))
    for row, (name, act) in enumerate(maps):
        strongest = np.argsort(-act.mean(axis=(1, 2)))[:n_maps]
        axes[row, 0].imshow(image)
        axes[row, 0].set_title(f"after {name}\n{act.shape[0]}x{act.shape[1]}x{act.shape[2]}", fontsize=8)
        for k, ax in enumerate(axes[row, 1:]):
            if k < len(strongest):
                ax.imshow(act[strongest[k]], cmap="magma")
                ax.set_title(f"channel {strongest[k]}", fontsize=7)
        for ax in axes[row]:
            ax.axis("off")
    return _save(fig, path)
