"""Image data: files and labels -> batches of normalised float32 images.

The path of one photo through the pipeline:

    file --load_image--> PIL RGB image --item_tfms--> same-size image --> uint8 (H, W, 3)
         [a worker thread; a broken file is skipped here]                   | stack a batch
    Tensor (N, 3, H, W) float32  <--Normalize-- <--aug_transforms-- float32 in [0, 1]
                                   [the prefetch thread, one batch at a time]

ImageDataLoaders builds it in one call, as in fastai:

    dls = ImageDataLoaders.from_name_func(path, get_image_files(path), label_func=is_cat,
                                          valid_pct=0.2, seed=42, item_tfms=Resize(224))

Labels are turned into indices into ``dls.vocab`` (the sorted distinct labels); a
prediction's index is decoded back with the same vocab.
"""
import os
import re
import threading
import warnings
from pathlib import Path

import numpy as np

from ..data import DataLoader, DataLoaders, RandomSplitter
from ..tensor import tensor
from .image import BAD_IMAGE_ERRORS, get_image_files, image_to_array, load_image
from .transforms import Normalize


def _listify(tfms):
    if tfms is None:
        return []
    return list(tfms) if isinstance(tfms, (list, tuple)) else [tfms]


def _sorted_tfms(tfms):
    return sorted(_listify(tfms), key=lambda t: getattr(t, "order", 0))


# ---------------------------------------------------------------- the dataset

class UnreadableImageError(ValueError):
    """A file given for inference is not a readable image (``test_dl`` refuses it: see ImageDataset)."""


class ImageDataset:
    """Image files and (optionally) their labels; sample i is ``(pixels, label index)``.

    ``pixels``: uint8 (height, width, 3), after the item transforms (``train`` tells them
    which set this is). A file that cannot be read as an image gives ``None`` instead of a
    sample: it is recorded in ``bad_files`` (path -> reason) and warned about once, and the
    batch is built without it (ImageBatcher), so a bad file never stops an epoch.
    With ``skip_bad=False`` (test_dl's default) a bad file is an UnreadableImageError naming
    it instead: predictions must line up one to one with the files asked about.
    An item transform that fails raises an error naming the file and the transform.
    """

    def __init__(self, files, labels=None, vocab=None, item_tfms=None, train=False, skip_bad=True):
        self.files = [Path(f) for f in files]
        self.vocab = list(vocab) if vocab is not None else None
        self.targets = None
        if labels is not None:
            if len(labels) != len(self.files):
                raise ValueError(f"ImageDataset: {len(labels)} labels for {len(self.files)} files; give one per file")
            if self.vocab is None:
                self.vocab = make_vocab(labels)
            index = {v: i for i, v in enumerate(self.vocab)}
            unknown = sorted({str(lab) for lab in labels if lab not in index})
            if unknown:
                raise ValueError(f"ImageDataset: labels {unknown[:5]} are not in the vocab {self.vocab[:10]}")
            self.targets = np.array([index[lab] for lab in labels], dtype=np.int64)
        self.item_tfms, self.train, self.skip_bad = _sorted_tfms(item_tfms), train, skip_bad
        self.bad_files = {}
        self._lock = threading.Lock()  # workers record bad files side by side

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        path = self.files[i]
        try:
            image = load_image(path)
        except BAD_IMAGE_ERRORS as error:
            if not self.skip_bad:
                raise UnreadableImageError(
                    f"{path}: not a readable image ({type(error).__name__}: {error}). Predictions must line up "
                    f"with the files, so it is not skipped: remove it from the list, or pass skip_bad=True and "
                    f"read which files were left out in dl.dataset.bad_files") from error
            self._skip(path, error)
            return None
        for tfm in self.item_tfms:
            try:
                image = tfm(image, self.train)
            except Exception as error:
                raise RuntimeError(f"{tfm!r} failed on {path} ({type(error).__name__}: {error})") from error
        pixels = image_to_array(image)
        return (pixels,) if self.targets is None else (pixels, self.targets[i])

    def _skip(self, path, error):
        with self._lock:
            first_time = path not in self.bad_files
            self.bad_files[path] = f"{type(error).__name__}: {error}"
        if first_time:
            warnings.warn(f"skipping {path}: not a readable image ({type(error).__name__}: {error}); "
                          f"it is left out of its batches (see the DataLoader's .skipped)", stacklevel=2)

    @property
    def skipped(self):
        """How many distinct files were found unreadable so far."""
        return len(self.bad_files)

    def label(self, i):
        """The label of sample i, decoded (an item of the vocab)."""
        return self.vocab[int(self.targets[i])]

    def __repr__(self):
        what = f", {len(self.vocab)} classes" if self.vocab is not None else ""
        return f"ImageDataset({len(self)} files{what}, item_tfms={self.item_tfms})"


def make_vocab(labels):
    """The sorted distinct labels (fastai's CategoryMap): False < True, 'cat' < 'dog'."""
    distinct = set(labels)
    try:
        return sorted(distinct)
    except TypeError:  # mixed types (1 and 'a') have no order: sort by their text
        return sorted(distinct, key=str)


class ImageBatcher:
    """The collate_fn of image loaders: samples -> (x float32 (N, 3, H, W), y int64 (N,)).

    Drops the ``None`` of unreadable files, scales pixels to [0, 1], then runs the batch
    transforms in their order (augmentations on the training set, Normalize on every set).
    A batch of nothing but bad files becomes ``None``, which ImageDataLoader skips.
    """

    def __init__(self, batch_tfms=None, train=False):
        self.batch_tfms, self.train = _sorted_tfms(batch_tfms), train

    def __call__(self, samples, device):
        samples = [s for s in samples if s is not None]
        if not samples:
            return None
        shapes = {s[0].shape for s in samples}
        if len(shapes) > 1:
            raise ValueError(f"ImageBatcher: the images of a batch have different sizes {sorted(shapes)[:4]}; "
                             f"give item_tfms=Resize(size) (or RandomResizedCrop) so every image gets one size")
        x = np.stack([s[0] for s in samples]).transpose(0, 3, 1, 2).astype(np.float32) / 255
        for tfm in self.batch_tfms:
            x = tfm(x, self.train)
        fields = [tensor(np.ascontiguousarray(x, dtype=np.float32), device=device)]
        if len(samples[0]) > 1:
            fields.append(tensor(np.array([s[1] for s in samples], dtype=np.int64), device=device))
        return tuple(fields)

    @property
    def normalize(self):
        return next((t for t in self.batch_tfms if isinstance(t, Normalize)), None)

    def add(self, tfm):
        """Add a batch transform (vision_learner adds the pretrained model's Normalize)."""
        self.batch_tfms = _sorted_tfms(self.batch_tfms + [tfm])

    def decode(self, x):
        """Undo Normalize: a batch back to RGB in [0, 1], channels last (N, H, W, 3), for showing."""
        x = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
        if self.normalize is not None:
            x = self.normalize.decode(x)
        return np.clip(x.transpose(0, 2, 3, 1), 0, 1)


# ---------------------------------------------------------------- loaders

class ImageDataLoader(DataLoader):
    """A DataLoader of images: skips batches with no readable image, counts bad files, shows batches."""

    def __iter__(self):
        return (batch for batch in super().__iter__() if batch is not None)

    def one_batch(self):
        batch = super().one_batch()
        if batch is None:
            raise ValueError(f"one_batch: none of the first {self.batch_size} files is a readable image "
                             f"(see the warnings, or .dataset.bad_files)")
        return batch

    @property
    def skipped(self):
        """The number of unreadable files met so far (``.dataset.bad_files`` names them)."""
        return self.dataset.skipped

    @property
    def vocab(self):
        return self.dataset.vocab

    def decode(self, x):
        """A batch of inputs back to RGB pixels in [0, 1], (N, H, W, 3)."""
        return self.collate_fn.decode(x)

    def show_batch(self, path="batch.png", max_n=9, ncols=3, batch=None):
        """Draw ``max_n`` images with their labels to a PNG grid; returns the path.

        The images are a fixed random draw from the whole dataset (files sorted by class would
        otherwise show one class); the training loader's show its augmentations. No random
        number of training's is drawn. ``batch`` shows that batch instead."""
        if batch is None:
            batch = self.batch_of(np.random.default_rng(0).permutation(len(self.dataset))[:max_n])
            if batch is None:
                raise ValueError(f"show_batch: none of the {max_n} files drawn is a readable image "
                                 f"(see the warnings, or .dataset.bad_files)")
        x, *y = batch
        pixels = self.decode(x)[:max_n]
        titles = [str(self.vocab[int(t)]) for t in y[0].numpy()[:max_n]] if y and self.vocab else None
        return show_images(pixels, titles, path, ncols=ncols)


def show_images(images, titles=None, path="images.png", ncols=3, size=2.5):
    """Draw images (N, H, W, 3) in [0, 1] in a grid with optional titles, to a PNG file."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = Figure(figsize=(size * ncols, size * nrows + 0.3 * (titles is not None)), tight_layout=True)
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for k, ax in enumerate(axes):
        ax.axis("off")
        if k < n:
            ax.imshow(images[k])
            if titles is not None:
                ax.set_title(titles[k], fontsize=9)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=80)
    return path


class ImageDataLoaders(DataLoaders):
    """Training and validation loaders of labelled images; ``vocab`` holds the classes.

    Every constructor ends in ``from_lists(path, files, labels, ...)``: they differ only in
    how a file's label is found (a function of its name, a regular expression, its folder).
    Shared options:
      valid_pct, seed   a random ``valid_pct`` of the files for validation (the same ones for
                        the same seed); the seed also fixes the shuffling and augmentation plan
      item_tfms         per image, e.g. Resize(224): train = random crop, valid = centre
      batch_tfms        per batch, e.g. [*aug_transforms(), Normalize.from_stats(*imagenet_stats)]
      bs, num_workers   batch size; threads decoding the images of a batch side by side
      device            where batches go ("cpu", "cuda", ...)
    """

    def __init__(self, train, valid=None, path=".", device=None):
        super().__init__(train, valid, device=device)
        self.path = Path(path)

    @property
    def vocab(self):
        return self.train.vocab

    @property
    def c(self):
        """The number of classes (fastai's name)."""
        return len(self.vocab)

    @classmethod
    def from_lists(cls, path, files, labels, valid_pct=0.2, seed=None, item_tfms=None, batch_tfms=None, bs=64,
                   num_workers=2, device="cpu", vocab=None, splits=None, prefetch=2):
        """Loaders from parallel lists of files and labels; ``splits`` = (train indices, valid indices)
        overrides the random split."""
        files = [Path(f) for f in files]
        if not files:
            raise ValueError(f"ImageDataLoaders: no image files given (looked under {path}); "
                             f"get_image_files(path) lists them")
        labels = list(labels)
        vocab = make_vocab(labels) if vocab is None else list(vocab)
        train_idx, valid_idx = splits if splits is not None else RandomSplitter(valid_pct, seed)(len(files))

        def loader(idx, train):
            ds = ImageDataset([files[i] for i in idx], [labels[i] for i in idx], vocab, item_tfms, train=train)
            # fastai's rule: the training loader shuffles and drops a last partial batch (a batch of
            # one image breaks batch norm); validation keeps its order and every image
            return ImageDataLoader(ds, bs, shuffle=train, drop_last=train and len(idx) >= bs, seed=seed,
                                   device=device, collate_fn=ImageBatcher(batch_tfms, train=train),
                                   prefetch=prefetch, num_workers=num_workers)

        train = loader(train_idx, True)
        valid = loader(valid_idx, False) if len(valid_idx) else None
        return cls(train, valid, path=path)

    @classmethod
    def from_name_func(cls, path, fnames, label_func, **kwargs):
        """Labels from the file *names*: ``label_func("cat.12.jpg")`` (the book's ``is_cat``)."""
        fnames = [Path(f) for f in fnames]
        return cls.from_lists(path, fnames, [label_func(f.name) for f in fnames], **kwargs)

    @classmethod
    def from_path_func(cls, path, fnames, label_func, **kwargs):
        """Labels from the whole paths: ``label_func(Path(...))``."""
        fnames = [Path(f) for f in fnames]
        return cls.from_lists(path, fnames, [label_func(f) for f in fnames], **kwargs)

    @classmethod
    def from_name_re(cls, path, fnames, pat, **kwargs):
        """Labels from the file names by a regular expression: its first group is the label,
        e.g. ``r'^(.+)_\\d+\\.jpg$'`` for Oxford-IIIT Pet's ``great_pyrenees_173.jpg``."""
        regex = re.compile(pat)

        def label(name):
            found = regex.search(name)
            if found is None:
                raise ValueError(f"from_name_re: the pattern {pat!r} does not match the file name {name!r}")
            return found.group(1)
        return cls.from_name_func(path, fnames, label, **kwargs)

    @classmethod
    def from_folder(cls, path, train="train", valid="valid", valid_pct=None, seed=None, vocab=None, **kwargs):
        """Labels from the parent folder's name (``path/train/cat/1.jpg`` is a cat).

        With ``valid_pct=None`` the split is given by the folders: images under ``path/train``
        train, those under ``path/valid`` validate. Otherwise every image under ``path`` is
        split at random."""
        path = Path(path)
        if valid_pct is None:
            missing = [f for f in (train, valid) if not (path / f).is_dir()]
            if missing:
                raise FileNotFoundError(f"from_folder: {path} has no folder {missing[0]!r}; give valid_pct=0.2 "
                                        f"to split the images at random instead, or train=/valid= folder names")
            files = get_image_files(path, folders=[train, valid])
            is_valid = np.array([f.relative_to(path).parts[0] == valid for f in files])
            kwargs["splits"] = (np.flatnonzero(~is_valid), np.flatnonzero(is_valid))
        else:
            files = get_image_files(path)
            kwargs["valid_pct"] = valid_pct
        return cls.from_lists(path, files, [f.parent.name for f in files], seed=seed, vocab=vocab, **kwargs)

    # ---------------------------------------------------------------- using them
    def test_dl(self, files, labels=None, bs=None, skip_bad=False):
        """A loader for other images, processed like the validation set (centre crops, no augmentation).

        With ``labels`` (in the vocab) it can be validated on: ``learn.validate(dl=dls.test_dl(...))``.
        An unreadable file is an error naming it (``get_preds`` gives one row per file, in order);
        ``skip_bad=True`` leaves such files out instead, and ``dl.dataset.bad_files`` names them."""
        ref = self.valid or self.train
        ds = ImageDataset(files, labels, self.vocab, ref.dataset.item_tfms, train=False, skip_bad=skip_bad)
        if labels is None:
            ds.vocab = self.vocab
        return ImageDataLoader(ds, bs or ref.batch_size, device=ref.device,
                               collate_fn=ImageBatcher(ref.collate_fn.batch_tfms, train=False),
                               num_workers=ref.num_workers)

    def show_results(self, ds_idx, idx, batch, decoded, path="results.png", ncols=3):
        """The images of ``batch`` titled with their label and the model's prediction, to a PNG."""
        x, *y = batch
        titles = [f"{self.vocab[int(p)]}" if not y else f"{self.vocab[int(t)]} / {self.vocab[int(p)]}"
                  for t, p in zip(y[0].numpy() if y else decoded.numpy(), decoded.numpy())]
        print(f"show_results: {len(titles)} images, titled 'actual / predicted', in {path}")
        return show_images(self.train.decode(x), titles, path, ncols=ncols)

    @property
    def skipped(self):
        """Unreadable files met so far, over both loaders."""
        return sum(dl.skipped for dl in self.loaders)

    def show_batch(self, path="batch.png", max_n=9, ncols=3):
        """The first images of a training batch with their labels, to a PNG (fastai's show_batch)."""
        return self.train.show_batch(path, max_n=max_n, ncols=ncols)

    def __repr__(self):
        return f"ImageDataLoaders(vocab={self.vocab}, train={self.train!r}, valid={self.valid!r})"
