"""Image files: find them, open them as RGB, and know which ones are broken.

A photo on disk is not yet an array of RGB pixels. Four things stand between them,
and ``load_image`` handles each:

  * orientation: a phone stores a portrait photo as a landscape one plus an EXIF tag
    "rotate me 90 degrees"; we apply the tag, or the cat lies on its side;
  * colour mode: files can be grayscale (L, 16-bit I;16), palette (P), CMYK (print
    JPEGs) or have an alpha channel (RGBA, LA, PA); a network wants three channels;
  * transparency: a transparent pixel's RGB values are arbitrary (often black), so we
    lay the image on a white background instead of dropping the alpha channel blindly;
  * broken files: a truncated download, a text file named .jpg. Pillow raises; the
    dataset (data.py) catches it, warns once, counts the file and carries on.
"""
import io
import mimetypes
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Every extension the standard library or Pillow knows as an image (.jpg, .png, .webp, ...).
IMAGE_EXTENSIONS = frozenset({ext for ext, mime in mimetypes.types_map.items() if mime.startswith("image/")}
                             | set(Image.registered_extensions()))

# What Pillow raises for a file that is not a readable image: OSError (UnidentifiedImageError,
# "image file is truncated"), and from inside its decoders SyntaxError ("broken PNG file"),
# zlib and struct errors, EOFError, ValueError; DecompressionBombError for absurd sizes.
BAD_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, zlib.error, struct.error,
                    Image.DecompressionBombError)


def get_image_files(path, recurse=True, folders=None):
    """Every image file under ``path`` (by extension), sorted, as ``Path`` objects.

    ``recurse=False`` looks in ``path`` only; ``folders`` keeps only the named
    sub-folders of ``path`` (e.g. ``["train"]``). Hidden files and folders are skipped.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"get_image_files: {path} is not a folder")
    roots = [path / f for f in folders] if folders else [path]
    found = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [Path(folder) / f for f in files
                      if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
            if not recurse:
                break
    return sorted(found)


def load_image(source):
    """A path, the bytes of a file (an upload), a PIL image or a uint8 array -> a PIL image in RGB mode, upright.

    Raises one of ``BAD_IMAGE_ERRORS`` for a file that is not a readable image (most often
    ``OSError``: PIL's ``UnidentifiedImageError`` is one); callers that must not stop (a
    DataLoader) catch them.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    if isinstance(source, np.ndarray):
        image = Image.fromarray(source)
    elif isinstance(source, Image.Image):
        image = source
    else:
        with Image.open(source) as opened:
            opened.load()  # decode now, so a truncated file fails here, not later, and the file is closed
            image = opened
    image = ImageOps.exif_transpose(image)  # a no-op without an EXIF orientation tag
    return to_rgb(image)


def to_rgb(image):
    """Any PIL mode -> RGB, with transparency laid on white and 16/32-bit values scaled to 0..255."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # High bit depths: Pillow's own conversion clips everything above 255 (to white),
        # so scale them to 8 bits first (16-bit scans use 0..65535).
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        return Image.fromarray(np.clip(values * (255.0 / top), 0, 255).round().astype(np.uint8)).convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV: Pillow's own conversions


class PILImage(Image.Image):
    """fastai's PILImage: a PIL image in RGB that knows how to be made from anything.

    ``PILImage.create(x)``: ``x`` a path, the bytes of an uploaded file, a PIL image or a uint8
    array, opened with ``load_image`` (upright, RGB). It *is* a PIL image: ``learn.predict(img)``,
    ``img.size``, ``img.save(...)``, and a notebook shows it.
    """

    @classmethod
    def create(cls, source):
        image = load_image(source)
        image = image.copy() if image is source else image  # never re-class the caller's own object
        image.__class__ = cls  # a PIL image with our two methods: no copy of the pixels (as fastai does)
        return image

    def to_thumb(self, h, w=None):
        """A copy no larger than ``h`` x ``w`` (w defaults to h), aspect ratio kept (fastai's to_thumb)."""
        thumb = self.copy()
        thumb.thumbnail((w or h, h))
        return thumb

    @property
    def shape(self):
        """(height, width), as fastai gives it."""
        return self.size[1], self.size[0]


def image_to_array(image):
    """A PIL RGB image -> a uint8 numpy array (height, width, 3)."""
    return np.asarray(image, dtype=np.uint8)


def verify_images(files):
    """The files among ``files`` that cannot be opened and decoded as images (fastai's verify_images).

    Decodes each file fully (a truncated JPEG only fails while decoding), so it takes a
    few milliseconds per photo; useful to clean a downloaded folder once.
    """
    bad = []
    for f in files:
        try:
            load_image(f)
        except BAD_IMAGE_ERRORS:
            bad.append(Path(f))
    return bad
