"""Segmentation data: a class for every pixel. Photos and their masks, moved together.

A mask is a one-channel image of class ids (0 .. len(codes) - 1), the size of its photo;
``codes`` names the classes (CamVid's "Sky", "Road", "Car", ...). The pipeline is the
image pipeline of data.py with the mask carried along:

    photo, mask --load--> PIL RGB image, PIL mask of ids --item_tfms(image, train, mask)--> same size
                          [a worker thread]                       | uint8 (H, W, 3), int64 (H, W); stack
    x (N, 3, H, W) float32, y (N, H, W) int64  <--batch_tfms(x, train, masks)--

Every transform that moves pixels (crop, resize, flip, rotation, zoom) moves the mask the
same way, by nearest neighbour, so ids are never blended; colour changes and Normalize
leave masks alone (transforms.py). Built as in fastai's chapter 1:

    dls = SegmentationDataLoaders.from_label_func(path, bs=8, fnames=get_image_files(path/"images"),
              label_func=lambda o: path/'labels'/f'{o.stem}_P{o.suffix}',
              codes=np.loadtxt(path/'codes.txt', dtype=str))

A bad mask (unreadable, not one channel, not the size of its photo, ids outside ``codes``)
is an error naming the file. Unlike a classifier's loader, which skips an unreadable
photo, nothing is skipped here: a mask is the answer the model learns from.
"""
import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from ..autograd import no_grad
from ..data import RandomSplitter
from ..tensor import tensor
from .data import ImageBatcher, ImageDataLoader, ImageDataLoaders, _sorted_tfms
from .image import BAD_IMAGE_ERRORS, image_to_array, load_image

MASK_MODES = ("L", "P", "I", "I;16", "1")   # one channel of integers: ids, not colours


class BadMaskError(ValueError):
    """A mask file is unreadable, not a mask of class ids, or does not fit its photo or the codes."""


def load_mask(path, n_codes=None):
    """A mask file -> a PIL image of class ids (mode L, P, I, I;16 or 1), checked; errors name the file.

    ``n_codes``: ids must lie in 0 .. n_codes - 1."""
    try:
        with Image.open(path) as opened:
            opened.load()
            mask = opened
    except (FileNotFoundError, *BAD_IMAGE_ERRORS) as error:
        raise BadMaskError(f"{path}: not a readable mask ({type(error).__name__}: {error}); a mask is an image "
                           f"file of class ids (an 8-bit PNG), found by label_func") from error
    if mask.mode not in MASK_MODES:
        raise BadMaskError(f"{path}: a {mask.mode} image; a mask holds one class id per pixel (mode L or P, an "
                           f"8-bit PNG), not colours: map each colour to its class id first")
    if n_codes is not None:
        ids = np.asarray(mask)
        if ids.size and (ids.min() < 0 or ids.max() >= n_codes):
            bad = sorted(int(i) for i in np.unique(ids) if not 0 <= i < n_codes)
            raise BadMaskError(f"{path}: class ids {bad[:8]} are outside codes (0 .. {n_codes - 1}, "
                               f"{n_codes} codes); give the codes that name every id in the masks")
    return mask


class SegmentationDataset:
    """Photos and their masks; sample i is ``(pixels uint8 (H, W, 3), mask int64 (H, W))``, after the item
    transforms (the same random crop for both). Without ``mask_files``, samples are ``(pixels,)``."""

    def __init__(self, files, mask_files=None, codes=(), item_tfms=None, train=False):
        self.files = [Path(f) for f in files]
        self.mask_files = None if mask_files is None else [Path(f) for f in mask_files]
        if self.mask_files is not None and len(self.mask_files) != len(self.files):
            raise ValueError(f"SegmentationDataset: {len(self.mask_files)} masks for {len(self.files)} photos")
        self.vocab, self.item_tfms, self.train = list(codes), _sorted_tfms(item_tfms), train
        self.bad_files, self._lock = {}, threading.Lock()   # (the image loaders' interface; nothing is skipped)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        path = self.files[i]
        try:
            image = load_image(path)
        except BAD_IMAGE_ERRORS as error:
            raise ValueError(f"{path}: not a readable image ({type(error).__name__}: {error})") from error
        mask = None
        if self.mask_files is not None:
            mask = load_mask(self.mask_files[i], len(self.vocab))
            if mask.size != image.size:
                raise BadMaskError(f"{self.mask_files[i]}: the mask is {mask.size[0]}x{mask.size[1]} (width x height) "
                                   f"but its photo {path} is {image.size[0]}x{image.size[1]}; a mask labels "
                                   f"every pixel of its own photo")
        for tfm in self.item_tfms:
            try:
                out = tfm(image, self.train) if mask is None else tfm(image, self.train, mask)
            except Exception as error:
                raise RuntimeError(f"{tfm!r} failed on {path} ({type(error).__name__}: {error})") from error
            image, mask = (out, None) if mask is None else out
        pixels = image_to_array(image)
        return (pixels,) if mask is None else (pixels, np.asarray(mask, dtype=np.int64))

    @property
    def skipped(self):
        return 0

    def __repr__(self):
        return f"SegmentationDataset({len(self)} photos, {len(self.vocab)} codes, item_tfms={self.item_tfms})"


class SegmentationBatcher(ImageBatcher):
    """The collate_fn of segmentation loaders: samples -> (x float32 (N, 3, H, W), y int64 (N, H, W)).

    Pixels are scaled to [0, 1]; the batch transforms get the masks too (``tfm(x, train, masks)``)."""

    def __call__(self, samples, device):
        shapes = {s[0].shape for s in samples}
        if len(shapes) > 1:
            raise ValueError(f"SegmentationBatcher: the photos of a batch have different sizes {sorted(shapes)[:4]}; "
                             f"give item_tfms=Resize(size) so every photo (and its mask) gets one size")
        x = np.stack([s[0] for s in samples]).transpose(0, 3, 1, 2).astype(np.float32) / 255
        masks = np.stack([s[1] for s in samples]) if len(samples[0]) > 1 else None
        for tfm in self.batch_tfms:
            x, masks = tfm(x, self.train, masks) if masks is not None else (tfm(x, self.train), None)
        fields = [tensor(np.ascontiguousarray(x, dtype=np.float32), device=device)]
        if masks is not None:
            fields.append(tensor(np.ascontiguousarray(masks, dtype=np.int64), device=device))
        return tuple(fields)


class SegmentationDataLoader(ImageDataLoader):
    """A DataLoader of photos and masks; ``show_batch`` draws the masks over their photos."""

    def show_batch(self, path="batch.png", max_n=6, ncols=3, batch=None):
        """``max_n`` photos with their masks laid over them (a colour per class), to a PNG; returns the path.

        A fixed random draw from the dataset, as the image loaders' show_batch."""
        if batch is None:
            batch = self.batch_of(np.random.default_rng(0).permutation(len(self.dataset))[:max_n])
        x, *y = batch
        pixels = self.decode(x)[:max_n]
        if y:
            pixels = [overlay(p, m) for p, m in zip(pixels, y[0].numpy()[:max_n])]
        return show_image_rows([[p] for p in pixels], path, ncols=ncols)


def class_colours(n):
    """n RGB colours in [0, 1], fixed: class k has the same colour in every picture (a seeded draw)."""
    return np.random.default_rng(0).uniform(0.1, 1.0, (max(n, 1), 3))


def overlay(pixels, mask, alpha=0.5, n_classes=None):
    """A photo (H, W, 3) in [0, 1] with its mask's class colours laid over it at ``alpha``."""
    colours = class_colours(n_classes or int(mask.max()) + 1)
    return (1 - alpha) * pixels + alpha * colours[mask]


def show_image_rows(rows, path, ncols=1, titles=None, size=2.5, figsize=None):
    """Draw rows of images (each a list of (H, W, 3) arrays in [0, 1]) to a PNG grid; ``ncols`` rows side by
    side; ``figsize`` (inches) overrides ``size`` per image."""
    from matplotlib.figure import Figure
    per_row = len(rows[0])
    n = len(rows)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = Figure(figsize=figsize or (size * per_row * ncols, size * nrows + 0.3 * (titles is not None)),
                 tight_layout=True)
    axes = np.atleast_2d(fig.subplots(nrows, per_row * ncols)).reshape(nrows, ncols * per_row)
    for ax in axes.ravel():
        ax.axis("off")
    for k, row in enumerate(rows):
        for j, image in enumerate(row):
            ax = axes[k // ncols, (k % ncols) * per_row + j]
            ax.imshow(np.clip(image, 0, 1))
            if titles is not None and k < ncols:
                ax.set_title(titles[j], fontsize=9)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=80)
    return path


class SegmentationDataLoaders(ImageDataLoaders):
    """Training and validation loaders of photos and masks; ``codes`` (``vocab``) names the classes."""

    @classmethod
    def from_label_func(cls, path, fnames, label_func, valid_pct=0.2, seed=None, codes=None, item_tfms=None,
                        batch_tfms=None, bs=64, num_workers=2, device="cpu", splits=None, prefetch=2):
        """fastai's SegmentationDataLoaders.from_label_func: ``label_func(photo path)`` is its mask's path.

        ``codes``: the class names, one per id (``np.loadtxt(path/'codes.txt', dtype=str)``). A random
        ``valid_pct`` of the photos validate (the same for the same ``seed``) unless ``splits`` =
        (train indices, valid indices)."""
        files = [Path(f) for f in fnames]
        if not files:
            raise ValueError(f"SegmentationDataLoaders: no photos given (looked under {path}); "
                             f"get_image_files(path/'images') lists them")
        if codes is None or len(codes) == 0:
            raise ValueError("SegmentationDataLoaders: give codes=, the class names, one per id in the masks "
                             "(e.g. codes=np.loadtxt(path/'codes.txt', dtype=str))")
        masks = [Path(label_func(f)) for f in files]
        missing = [m for m in masks if not m.is_file()]
        if missing:
            raise BadMaskError(f"SegmentationDataLoaders: {len(missing)} of {len(masks)} masks do not exist, e.g. "
                               f"{missing[0]} (label_func({files[masks.index(missing[0])].name!r})); check label_func")
        train_idx, valid_idx = splits if splits is not None else RandomSplitter(valid_pct, seed)(len(files))

        def loader(idx, train):
            ds = SegmentationDataset([files[i] for i in idx], [masks[i] for i in idx], [str(c) for c in codes],
                                     item_tfms, train=train)
            return SegmentationDataLoader(ds, bs, shuffle=train, drop_last=train and len(idx) >= bs, seed=seed,
                                          device=device, collate_fn=SegmentationBatcher(batch_tfms, train=train),
                                          prefetch=prefetch, num_workers=num_workers)

        return cls(loader(train_idx, True), loader(valid_idx, False) if len(valid_idx) else None, path=path)

    def test_dl(self, files, masks=None, bs=None):
        """A loader for other photos (and optionally their masks), processed like the validation set."""
        ref = self.valid or self.train
        ds = SegmentationDataset(files, masks, self.vocab, ref.dataset.item_tfms, train=False)
        return SegmentationDataLoader(ds, bs or ref.batch_size, device=ref.device,
                                      collate_fn=SegmentationBatcher(ref.collate_fn.batch_tfms, train=False),
                                      num_workers=ref.num_workers)

    def show_batch(self, path="batch.png", max_n=6, ncols=3):
        """Photos of the training set with their masks laid over them, to a PNG."""
        return self.train.show_batch(path, max_n=max_n, ncols=ncols)

    def show_results(self, ds_idx, idx, batch, decoded, path="results.png", ncols=1, figsize=None):
        """Each photo, its true mask and the predicted one side by side (fastai's show_results), to a PNG."""
        x, *y = batch
        pixels = self.train.decode(x)
        n = len(self.vocab)
        predicted = decoded.numpy()
        rows = [[p] + ([overlay(p, t, n_classes=n)] if y else []) + [overlay(p, q, n_classes=n)]
                for p, t, q in zip(pixels, y[0].numpy() if y else predicted, predicted)]
        titles = ["photo"] + (["truth"] if y else []) + ["prediction"]
        print(f"show_results: {len(rows)} photos, {' / '.join(titles)}, in {path}")
        return show_image_rows(rows, path, ncols=ncols, titles=titles, figsize=figsize)

    def __repr__(self):
        return f"SegmentationDataLoaders({len(self.vocab)} codes, train={self.train!r}, valid={self.valid!r})"


class SegmentationInterpretation:
    """fastai's SegmentationInterpretation: which scenes does a segmentation model get most wrong?

    ``losses`` (N,): each scene's loss (the learner's loss function on that scene alone: the mean
    over its pixels, a void class left out); ``decoded`` (N, H, W): the predicted class of each pixel."""

    def __init__(self, dl, losses, decoded, vocab):
        self.dl, self.losses, self.decoded, self.vocab = dl, losses, decoded, vocab

    @classmethod
    def from_learner(cls, learn, ds_idx=1, dl=None):
        dl = learn._inference_dl(ds_idx, dl, "SegmentationInterpretation")
        losses, decoded = [], []
        learn.model.eval()
        with no_grad():
            for x, y in dl:
                out = learn.model(x)
                losses += [learn.loss_func(out[i:i + 1], y[i:i + 1]).item() for i in range(len(y))]
                decoded.append(out.argmax(dim=1).numpy())
        return cls(dl, np.array(losses), np.concatenate(decoded), learn.dls.vocab)

    def top_losses(self, k=None, largest=True):
        """(losses, scene indices) of the k scenes with the largest (or smallest) loss."""
        order = np.argsort(-self.losses if largest else self.losses, kind="stable")[:k]
        return self.losses[order], order

    def plot_top_losses(self, k=4, path="top_losses.png"):
        """The k worst scenes, each as photo / truth / prediction, to a PNG; prints their losses."""
        losses, rows = self.top_losses(k)
        n = len(self.vocab)
        pictures = []
        for row in rows:
            batch = self.dl.collate_fn([self.dl.dataset[int(row)]], self.dl.device)
            photo, truth = self.dl.decode(batch[0])[0], batch[1].numpy()[0]
            pictures.append([photo, overlay(photo, truth, n_classes=n), overlay(photo, self.decoded[row], n_classes=n)])
        print("top losses: " + ", ".join(f"scene {r} {v:.3f}" for r, v in zip(rows, losses)))
        return show_image_rows(pictures, path, titles=["photo", "truth", "prediction"])

