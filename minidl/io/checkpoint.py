"""Checkpoints: a nested dict of arrays and plain values, saved safely.

Format: a zip archive (numpy's .npz) holding each array as a .npy file and one
``tree.json`` describing the nesting, where arrays appear as {"__array__": "a3"}.
No pickle: loading a checkpoint cannot run code, and any tool that reads .npz and
JSON can inspect it.

Saving is atomic: the archive is written to a temporary file in the same folder,
flushed to disk, then renamed over the target, so a crash mid-save leaves the
previous checkpoint intact, never a half-written one.
"""
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "minidl-checkpoint-1"


class CheckpointError(RuntimeError):
    pass


def _split(tree, arrays):
    """Replace arrays by references, collecting them."""
    if isinstance(tree, dict):
        return {str(k): _split(v, arrays) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_split(v, arrays) for v in tree]
    if isinstance(tree, np.ndarray):
        name = f"a{len(arrays)}"
        arrays[name] = tree
        return {"__array__": name}
    if isinstance(tree, np.generic):
        return tree.item()
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise TypeError(f"save_checkpoint: cannot store a {type(tree).__name__}; use arrays, numbers, strings, lists, dicts")


def _join(tree, arrays):
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            return arrays[tree["__array__"]]
        return {k: _join(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join(v, arrays) for v in tree]
    return tree


def save_checkpoint(path, tree):
    """Write ``tree`` (dicts/lists of numpy arrays, numbers, strings) to ``path`` atomically."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    arrays = {}
    meta = {"format": FORMAT, "tree": _split(tree, arrays)}
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".ckpt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w") as archive:
                archive.writestr("tree.json", json.dumps(meta))
                for name, a in arrays.items():
                    with archive.open(name + ".npy", "w", force_zip64=True) as entry:
                        np.lib.format.write_array(entry, np.asarray(a, order="C"), allow_pickle=False)  # 0-d stays 0-d
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load_checkpoint(path):
    """Read a checkpoint written by save_checkpoint; a damaged or foreign file raises CheckpointError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_checkpoint: no checkpoint at {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read("tree.json"))
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
            arrays = {}
            for name in archive.namelist():
                if name.endswith(".npy"):
                    with archive.open(name) as entry:
                        arrays[name[:-4]] = np.lib.format.read_array(entry, allow_pickle=False)
        return _join(meta["tree"], arrays)
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError, CheckpointError) as e:
        raise CheckpointError(f"load_checkpoint: {path} is not a readable minidl checkpoint "
                              f"(damaged, truncated, or another format): {e}") from None
