"""Transforms: photos of every size -> same-size batches, plus random changes that teach invariance.

Two kinds, as in fastai:

* **item transforms** run on one PIL image at a time, before batching. Their job is to
  give every image the same size (a batch is one array). ``Resize`` and
  ``RandomResizedCrop``. They act on the training set with randomness (a random crop) and
  on the validation set deterministically (the centre), so the validation score is a
  fixed number.
* **batch transforms** run on the whole batch, a float32 array (N, 3, H, W) with values
  in [0, 1]: the augmentations of ``aug_transforms`` (flip, rotate, zoom, lighting; the
  training set only) and ``Normalize`` (every set, last).

A segmentation mask (an image of class ids) goes through the same transforms as its
image, with the same random draws: ``tfm(image, train, mask)`` returns both. A mask is
resampled by its nearest pixel, never interpolated (the mean of "road" and "car" is not
a class), and the photometric transforms (Lighting, Normalize) leave it alone.

Every random number comes from ``minidl.random.generator()``. Inside a DataLoader that is
a generator seeded from the loader's plan for the epoch (data/core.py), so a seeded run
sees the same augmented images again, with or without background threads.
"""
import math

import numpy as np
from PIL import Image

from .. import random as _random

imagenet_stats = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # per-channel mean and std of ImageNet's RGB pixels


def _size(size, who):
    """An int or (height, width) -> (height, width)."""
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"{who}: size is an int or (height, width) of positive ints, got {size!r}")
    return tuple(size)


# ---------------------------------------------------------------- item transforms (PIL images)

class ItemTransform:
    """One image in, one image out. ``train`` says which set it is for; ``order`` sorts a list of them.

    A subclass says what to do in two steps: ``plan(size, train)`` draws the random choices
    (where to crop) for an image of ``size`` = (width, height), and ``apply(image, plan,
    resample)`` carries them out. So a mask can follow its image exactly: the same plan,
    applied with nearest-neighbour resampling."""
    order = 0

    def __call__(self, image, train, mask=None):
        """The transformed image; with ``mask`` (a PIL image of class ids, the image's size), both."""
        plan = self.plan(image.size, train)
        out = self.apply(image, plan, Image.BILINEAR)
        return out if mask is None else (out, self.apply(mask, plan, Image.NEAREST))

    def plan(self, size, train):
        """The random choices for an image of ``size`` (width, height); None when there are none."""
        return None

    def apply(self, image, plan, resample):
        """Carry out ``plan`` on ``image`` (a photo, or a mask with ``resample`` = nearest)."""
        raise NotImplementedError


class Resize(ItemTransform):
    """Make every image ``size`` (an int, or (height, width)), in one of fastai's three ways:

    * ``'crop'`` (default): cut the largest box of the target shape out of the image, then
      scale it. On the training set the box sits at a random place, on the validation set
      in the centre. Nothing is distorted; the edges of long images are lost.
    * ``'squish'``: scale the whole image to the target shape. Nothing is lost; shapes
      are stretched.
    * ``'pad'``: scale the image to fit inside the target, then fill the rest
      (``pad_mode``: ``'reflection'`` mirrors the image, ``'zeros'`` is black,
      ``'border'`` repeats the edge pixels). On the training set the image sits at a
      random place inside the frame, on the validation set in the centre.
    Scaling is bilinear (Pillow's, which averages over all covered pixels when shrinking).
    """
    order = 1
    methods = ("crop", "squish", "pad")
    pad_modes = {"reflection": "reflect", "zeros": "constant", "border": "edge"}

    def __init__(self, size, method="crop", pad_mode="reflection"):
        if method not in self.methods:
            raise ValueError(f"Resize: method must be one of {self.methods}, got {method!r}")
        if pad_mode not in self.pad_modes:
            raise ValueError(f"Resize: pad_mode must be one of {tuple(self.pad_modes)}, got {pad_mode!r}")
        self.size, self.method, self.pad_mode = _size(size, "Resize"), method, pad_mode

    def _position(self, train):
        """Where the box (or the image in its frame) sits: fractions of the free space, x then y."""
        return tuple(_random.generator().random(2)) if train else (0.5, 0.5)

    def plan(self, size, train):
        """'crop': the box to cut out; 'pad': the scaled size and where it sits; 'squish': nothing."""
        if self.method == "squish":
            return None
        h, w = self.size
        px, py = self._position(train)
        width, height = size
        if self.method == "crop":
            scale = min(width / w, height / h)      # the largest box of shape (h, w) that fits
            box_w, box_h = min(width, round(w * scale)), min(height, round(h * scale))
            left, top = int(px * (width - box_w)), int(py * (height - box_h))  # whole pixels, as fastai
            return left, top, left + box_w, top + box_h
        scale = min(w / width, h / height)          # 'pad': the whole image fits inside
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        return new_w, new_h, round(px * (w - new_w)), round(py * (h - new_h))

    def apply(self, image, plan, resample):
        """The image resized to ``size`` as planned ('crop' cuts the planned box, 'pad' fills around)."""
        h, w = self.size
        if self.method != "pad":
            return image.resize((w, h), resample, box=plan)
        new_w, new_h, left, top = plan
        pixels = np.asarray(image.resize((new_w, new_h), resample))
        pad = ((top, h - new_h - top), (left, w - new_w - left), (0, 0))[:pixels.ndim]   # a mask has no channels
        return Image.fromarray(np.pad(pixels, pad, mode=self.pad_modes[self.pad_mode]))

    def __repr__(self):
        return f"Resize(size={self.size}, method={self.method!r})"


class RandomResizedCrop(ItemTransform):
    """A random part of the image, scaled to ``size``: the classic ImageNet augmentation.

    Training: the part covers a fraction of the image's area drawn uniformly from
    [min_scale, max_scale], with an aspect ratio drawn log-uniformly from ``ratio``, at a
    random place (10 tries to fit it; else the centre, at the closest allowed ratio).
    Validation (fastai's rule): the whole image squished to ``size`` plus a margin
    (``val_xtra`` of it, rounded up to a multiple of 8 pixels), then its centre cut out,
    so validation images look like the zoomed training ones on average.
    """
    order = 1

    def __init__(self, size, min_scale=0.08, max_scale=1.0, ratio=(3 / 4, 4 / 3), val_xtra=0.14):
        if not 0 < min_scale <= max_scale <= 1:
            raise ValueError(f"RandomResizedCrop: need 0 < min_scale <= max_scale <= 1, got {min_scale}, {max_scale}")
        self.size, self.min_scale, self.max_scale = _size(size, "RandomResizedCrop"), min_scale, max_scale
        self.ratio, self.val_xtra = ratio, val_xtra

    def plan(self, size, train):
        """The box to cut out (training), or None (validation: squish with a margin, keep the centre)."""
        if not train:
            return None
        h, w = self.size
        width, height = size
        rng = _random.generator()
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            area = rng.uniform(self.min_scale, self.max_scale) * width * height
            ratio = math.exp(rng.uniform(log_lo, log_hi))   # width / height of the part
            box_w, box_h = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if 0 < box_w <= width and 0 < box_h <= height:
                left, top = rng.integers(0, width - box_w + 1), rng.integers(0, height - box_h + 1)
                break
        else:  # no try fitted (a very long image): the centre, at the nearest allowed aspect ratio
            aspect = min(max(width / height, self.ratio[0]), self.ratio[1])
            box_w, box_h = min(width, round(height * aspect)), min(height, round(width / aspect))
            left, top = (width - box_w) // 2, (height - box_h) // 2
        return int(left), int(top), int(left + box_w), int(top + box_h)

    def apply(self, image, plan, resample):
        """The planned box scaled to ``size``; without a plan, the centre of the image squished with a margin."""
        h, w = self.size
        if plan is not None:
            return image.resize((w, h), resample, box=plan)
        extra = math.ceil(max(h, w) * self.val_xtra / 8) * 8
        big = image.resize((w + extra, h + extra), resample)
        return big.crop((extra // 2, extra // 2, extra // 2 + w, extra // 2 + h))

    def __repr__(self):
        return f"RandomResizedCrop(size={self.size}, min_scale={self.min_scale})"


# ---------------------------------------------------------------- batch transforms (float arrays)

class BatchTransform:
    """(N, 3, H, W) float32 in, same shape out. ``train_only`` transforms leave validation batches alone.

    With ``masks`` (N, H, W) of class ids, ``(x, masks)`` in and out (``encodes_pair``): a
    geometric transform moves the masks with their images, a photometric one leaves them."""
    order = 0
    train_only = True

    def __call__(self, x, train, masks=None):
        if self.train_only and not train:
            return x if masks is None else (x, masks)
        return self.encodes(x) if masks is None else self.encodes_pair(x, masks)

    def encodes(self, x):
        """The transform of a training batch: x (N, 3, H, W) float32 -> a new array of the same shape."""
        raise NotImplementedError

    def encodes_pair(self, x, masks):
        """A batch and its masks: the images transformed, the masks as they are (right for colour changes)."""
        return self.encodes(x), masks


class AffineAugment(BatchTransform):
    """Random flips, rotations and zooms, each image its own, in one resampling.

    Each output pixel p (measured from the image centre, in pixels) is read from the
    input at  A p + t,  where A = zoom^-1 . rotation . flip:
        flip:      x -> -x with probability ``p_flip``
        rotation:  by an angle uniform in [-max_rotate, max_rotate] degrees   } each with
        zoom:      by s uniform in [min_zoom, max_zoom] (s > 1 magnifies),     } probability
                   towards a random point, t, that keeps the view inside      } ``p_affine``
    Composing the three into one matrix and interpolating once (bilinear) blurs less
    than three resamplings would; fastai does the same. Points that fall outside the
    image are mirrored back in (reflection padding), so corners are never black.
    """
    order = 30

    def __init__(self, do_flip=True, max_rotate=10.0, min_zoom=1.0, max_zoom=1.1, p_affine=0.75, p_flip=0.5):
        self.do_flip, self.max_rotate, self.min_zoom, self.max_zoom = do_flip, max_rotate, min_zoom, max_zoom
        self.p_affine, self.p_flip = p_affine, p_flip

    def matrices(self, n, height, width):
        """n random (2, 3) matrices [A | t] in pixel units about the centre (identity where nothing was drawn)."""
        rng = _random.generator()
        flip = np.where(self.do_flip & (rng.random(n) < self.p_flip), -1.0, 1.0)
        rotate = rng.random(n) < self.p_affine
        angle = np.where(rotate, np.deg2rad(rng.uniform(-self.max_rotate, self.max_rotate, n)), 0.0)
        zoom = rng.random(n) < self.p_affine
        scale = np.where(zoom, rng.uniform(self.min_zoom, self.max_zoom, n), 1.0)
        centre = rng.random((n, 2))  # where to zoom to, as fractions of the room that stays inside
        cos, sin = np.cos(angle), np.sin(angle)
        m = np.zeros((n, 2, 3))
        m[:, 0, 0], m[:, 0, 1] = cos * flip / scale, -sin / scale
        m[:, 1, 0], m[:, 1, 1] = sin * flip / scale, cos / scale
        m[:, 0, 2] = (1 - 1 / scale) * (2 * centre[:, 0] - 1) * (width - 1) / 2
        m[:, 1, 2] = (1 - 1 / scale) * (2 * centre[:, 1] - 1) * (height - 1) / 2
        return m

    def encodes(self, x):
        """Each image resampled at A p + t with its own random flip/rotation/zoom matrix (see the class);
        images whose matrix is the identity are left as they are.
        """
        return self.encodes_pair(x, None)[0]

    def encodes_pair(self, x, masks):
        """The images and their masks moved by the same matrices: images bilinearly, masks by nearest pixel."""
        n, _, height, width = x.shape
        m = self.matrices(n, height, width)
        moved = ~np.all(np.isclose(m, [[1, 0, 0], [0, 1, 0]]), axis=(1, 2))
        if moved.any():
            x = x.copy()
            x[moved] = affine_resample(x[moved], m[moved])
            if masks is not None:
                masks = masks.copy()
                masks[moved] = affine_resample_nearest(masks[moved], m[moved])
        return x, masks

    def __repr__(self):
        return (f"AffineAugment(do_flip={self.do_flip}, max_rotate={self.max_rotate}, "
                f"zoom=({self.min_zoom}, {self.max_zoom}), p_affine={self.p_affine})")


def affine_resample(x, m):
    """Bilinear sampling: out[n, :, i, j] = x[n, :, source] with source = m[n] @ (j - cx, i - cy, 1) + (cx, cy).

    Sources outside the image are reflected at its edges (PyTorch's grid_sample with
    padding_mode='reflection', align_corners=True). The four neighbours of every source
    point are gathered with flat indices into each (H * W) channel: one gather per
    neighbour for the whole batch, no Python loop over pixels.
    """
    n, c, height, width = x.shape
    sx, sy = _sources(m, height, width)
    # the top-left neighbour, kept one pixel from the far edge so that +1 stays inside
    # (a source exactly on the edge then gets weight 1 on the right/bottom neighbour)
    x0 = np.minimum(sx.astype(np.int64), max(width - 2, 0))
    y0 = np.minimum(sy.astype(np.int64), max(height - 2, 0))
    wx, wy = (sx - x0)[:, None], (sy - y0)[:, None]                 # (n, 1, H, W): the same for every channel
    flat = x.reshape(n, c, height * width)
    corner = (y0 * width + x0).reshape(n, 1, height * width)
    step_x, step_y = min(1, width - 1), width * min(1, height - 1)

    def neighbour(offset):
        return np.take_along_axis(flat, corner + offset, axis=2).reshape(n, c, height, width)
    top = neighbour(0) * (1 - wx) + neighbour(step_x) * wx
    bottom = neighbour(step_y) * (1 - wx) + neighbour(step_y + step_x) * wx
    return (top * (1 - wy) + bottom * wy).astype(x.dtype)


def affine_resample_nearest(masks, m):
    """The masks (n, H, W) of class ids moved like ``affine_resample`` moves images, each output pixel
    taking the id of the source pixel nearest to m[n] @ (j - cx, i - cy, 1) + (cx, cy): ids are never mixed."""
    n, height, width = masks.shape
    sx, sy = _sources(m, height, width)
    flat = (np.rint(sy).astype(np.int64) * width + np.rint(sx).astype(np.int64)).reshape(n, height * width)
    return np.take_along_axis(masks.reshape(n, height * width), flat, axis=1).reshape(n, height, width)


def _sources(m, height, width):
    """Where each output pixel (i, j) reads from: (sx, sy), each (n, H, W), reflected into the image."""
    cy, cx = (height - 1) / 2, (width - 1) / 2
    cols = np.arange(width, dtype=np.float32) - cx                  # output pixels, about the centre
    rows = (np.arange(height, dtype=np.float32) - cy)[:, None]
    m = m.astype(np.float32)[:, :, :, None, None]                    # (n, 2, 3, 1, 1) against (H, W) grids
    sx = _reflect(m[:, 0, 0] * cols + m[:, 0, 1] * rows + m[:, 0, 2] + cx, width - 1)
    sy = _reflect(m[:, 1, 0] * cols + m[:, 1, 1] * rows + m[:, 1, 2] + cy, height - 1)
    return sx, sy


def _reflect(p, top):
    """Fold coordinates into [0, top] by mirroring at 0 and top (period 2 * top)."""
    if top == 0:
        return np.zeros_like(p)
    p = np.abs(p) % (2 * top)
    return np.where(p > top, 2 * top - p, p)


class Lighting(BatchTransform):
    """Random brightness and contrast per image, in logit space (fastai's way):

        x' = sigmoid(c * logit(x) + logit(b))

    brightness b uniform in [0.5 (1 - max_lighting), 0.5 (1 + max_lighting)] (0.5 changes
    nothing), contrast c log-uniform in [1 - max_lighting, 1 / (1 - max_lighting)]; each
    drawn with probability ``p`` (else b = 0.5, c = 1). Working on logits keeps values in
    (0, 1): a bright image gets brighter without saturating into flat white.
    """
    order = 40

    def __init__(self, max_lighting=0.2, p=0.75):
        if not 0 <= max_lighting < 1:
            raise ValueError(f"Lighting: max_lighting must be in [0, 1), got {max_lighting}")
        self.max_lighting, self.p = max_lighting, p

    def encodes(self, x):
        """x' = sigmoid(c logit(x) + logit(b)) per image, with its own random brightness b and contrast c."""
        n = x.shape[0]
        rng, lo = _random.generator(), 1 - self.max_lighting
        brightness = np.where(rng.random(n) < self.p, rng.uniform(0.5 * lo, 0.5 * (1 + self.max_lighting), n), 0.5)
        contrast = np.where(rng.random(n) < self.p, np.exp(rng.uniform(math.log(lo), -math.log(lo), n)), 1.0)
        changed = (brightness != 0.5) | (contrast != 1.0)
        if not changed.any():
            return x
        x = x.copy()
        eps = 1e-6
        xs = np.clip(x[changed], eps, 1 - eps)
        logits = np.log(xs / (1 - xs)) * contrast[changed, None, None, None]
        logits += np.log(brightness[changed] / (1 - brightness[changed]))[:, None, None, None]
        x[changed] = 1 / (1 + np.exp(-logits))
        return x

    def __repr__(self):
        return f"Lighting(max_lighting={self.max_lighting}, p={self.p})"


def aug_transforms(do_flip=True, max_rotate=10.0, min_zoom=1.0, max_zoom=1.1, max_lighting=0.2, p_affine=0.75,
                   p_lighting=0.75):
    """fastai's standard augmentations for photos, with its defaults: a horizontal flip half the time,
    rotations up to 10 degrees, zoom up to 1.1x, brightness/contrast up to 20%.

    (fastai also warps perspective by up to 0.2; minidl does not.)"""
    tfms = []
    if do_flip or max_rotate or max_zoom > 1:
        tfms.append(AffineAugment(do_flip, max_rotate, min_zoom, max_zoom, p_affine))
    if max_lighting:
        tfms.append(Lighting(max_lighting, p_lighting))
    return tfms


class Normalize(BatchTransform):
    """x' = (x - mean) / std per channel, on every set (train, valid, test).

    A pretrained network saw its ImageNet inputs normalised with ImageNet's statistics;
    feeding it other numbers would shift every activation, so we use the same ones.
    ``decode`` undoes it (to show a batch)."""
    order = 99
    train_only = False

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
        if np.any(self.std <= 0):
            raise ValueError(f"Normalize: every std must be > 0, got {std}")

    @classmethod
    def from_stats(cls, mean, std):
        return cls(mean, std)

    def encodes(self, x):
        """x' = (x - mean) / std per channel."""
        return (x - self.mean) / self.std

    def decode(self, x):
        """x = x' * std + mean per channel: the inverse of encodes (to show a batch)."""
        return x * self.std + self.mean

    def __repr__(self):
        return f"Normalize(mean={self.mean.ravel().tolist()}, std={self.std.ravel().tolist()})"
