"""Checkpoints: a nested dict of arrays and plain values, saved safely.

Format: a zip archive (numpy's .npz) holding each array as a .npy file and one
``tree.json`` describing the nesting, where arrays appear as {"__array__": "a3"}.
No pickle: loading a checkpoint cannot run code, and any tool that reads .npz and
JSON can inspect it. Loading checks what it reads: a tree.json that is not such a
tree, a reference to an array the file lacks, an array header claiming more bytes
than its entry holds, all raise ``CheckpointError`` naming the file and the fault.

Saving is atomic: the archive is written to a temporary file in the same folder,
flushed to disk, then renamed over the target, so a crash mid-save leaves the
previous checkpoint intact, never a half-written one.

Temporary files of saves that died: a save killed mid-way (kill -9, a power cut)
cannot remove its temporary file, so every save first removes the stale ones in
its folder. A temporary file is named ``.tmp-<pid>-<host>-<random>.ckpt`` after the
process writing it, and it is stale when

* it was written on this host and process <pid> is no longer running, or
* it was not modified for ``STALE_AFTER`` seconds (6 hours): files of another host,
  whose processes cannot be asked, files of a process whose PID was reused, and
  ``.tmp-<random>.ckpt`` files of minidl versions that did not name the writer.

A live save keeps writing, so its file is never that old, and a file of a running
process on this host is never removed: two processes saving into one folder do not
break each other's saves. Removal is best effort: a file that cannot be removed is
left, and never makes the save fail.
"""
import json
import math
import os
import re
import socket
import stat
import tempfile
import time
import zipfile
import zlib

import numpy as np

FORMAT = "minidl-checkpoint-1"
STALE_AFTER = 6 * 3600  # seconds without a write after which any temporary file is an abandoned save's
_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"
_TEMP_NAME = re.compile(r"\.tmp-(?P<pid>\d+)-(?P<host>[A-Za-z0-9._]+)-[a-z0-9_]+\.ckpt")
_OLD_TEMP_NAME = re.compile(r"\.tmp-[a-z0-9_]+\.ckpt")  # before the writer was named: judged by age only


class CheckpointError(RuntimeError):
    pass


def _split(tree, arrays):
    """Replace arrays by references, collecting them."""
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:  # it would load as an array reference
            raise TypeError('save_checkpoint: a dict whose only key is "__array__" cannot be stored (that is how '
                            'a checkpoint marks an array); rename the key')
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


def _join(tree, arrays, path, where=""):
    """The tree with each {"__array__": name} replaced by its array; a bad reference is a CheckpointError."""
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            name = tree["__array__"]
            if not isinstance(name, str):
                raise _damaged(path, f'the array reference at {where or "the top"} is {name!r}, not a name '
                                     f'like "a3"')
            if name not in arrays:
                raise _damaged(path, f'the array reference at {where or "the top"} names {name!r}, which the file '
                                     f'does not hold (it holds {len(arrays)} arrays)')
            return arrays[name]
        return {k: _join(v, arrays, path, f"{where}[{k!r}]") for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join(v, arrays, path, f"{where}[{i}]") for i, v in enumerate(tree)]
    return tree


def _damaged(path, what):
    return CheckpointError(f"load_checkpoint: {path} is not a readable minidl checkpoint: {what}")


def _pid_running(pid):
    """Whether process ``pid`` of this host runs (True when that cannot be known)."""
    if pid <= 0 or pid == os.getpid() or os.name == "nt":  # on Windows os.kill(pid, 0) would terminate it
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def _remove_stale_temp_files(folder):
    """Remove the temporary files of saves that will never finish (the rule is in the module docstring)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    now = time.time()
    for name in names:
        ours = _TEMP_NAME.fullmatch(name)
        if ours is None and _OLD_TEMP_NAME.fullmatch(name) is None:
            continue
        file = os.path.join(folder, name)
        try:
            info = os.lstat(file)
            writer_gone = ours is not None and ours["host"] == _HOST and not _pid_running(int(ours["pid"]))
            if stat.S_ISREG(info.st_mode) and (writer_gone or now - info.st_mtime > STALE_AFTER):
                os.remove(file)
        except OSError:  # gone already (another save cleaned it), or not ours to remove
            pass


def save_checkpoint(path, tree):
    """Write ``tree`` (dicts/lists of numpy arrays, numbers, strings) to ``path`` atomically.

    First removes the temporary files that earlier saves into the same folder left
    when they were killed (see the module docstring for which ones).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    arrays = {}
    meta = {"format": FORMAT, "tree": _split(tree, arrays)}
    _remove_stale_temp_files(folder)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-{_HOST}-", suffix=".ckpt", dir=folder)
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


def _read_tree(archive, path):
    """tree.json's {"format": FORMAT, "tree": ...}, checked."""
    if "tree.json" not in archive.namelist():
        raise _damaged(path, "it has no tree.json (a zip archive, but not a minidl checkpoint)")
    try:
        meta = json.loads(archive.read("tree.json"))
    except RecursionError:
        raise _damaged(path, "its tree.json nests too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise _damaged(path, f"its tree.json is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise _damaged(path, f'its tree.json holds {json.dumps(meta)[:40]}, not an object with "format" and "tree"')
    if meta.get("format") != FORMAT:
        raise _damaged(path, f"format {meta.get('format')!r}, expected {FORMAT!r}")
    if "tree" not in meta:
        raise _damaged(path, 'its tree.json has no "tree"')
    return meta["tree"]


def _read_array(archive, info, path):
    """One .npy entry, after checking that its header claims no more bytes than the entry holds.

    numpy allocates the whole array the header describes before reading it, so an
    edited header could otherwise ask for terabytes.
    """
    with archive.open(info) as entry:
        version = np.lib.format.read_magic(entry)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(entry)
        header_size = entry.tell()
    claimed = math.prod(shape) * dtype.itemsize
    if claimed != info.file_size - header_size:
        raise _damaged(path, f"array {info.filename} claims shape {shape} of {dtype} ({claimed} bytes), "
                             f"its entry holds {info.file_size - header_size}")
    with archive.open(info) as entry:
        return np.lib.format.read_array(entry, allow_pickle=False)


def load_checkpoint(path):
    """Read a checkpoint written by save_checkpoint; a damaged or foreign file raises CheckpointError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_checkpoint: no checkpoint at {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            tree = _read_tree(archive, path)
            arrays = {info.filename[:-4]: _read_array(archive, info, path)
                      for info in archive.infolist() if info.filename.endswith(".npy")}
        return _join(tree, arrays, path)
    except CheckpointError:
        raise
    except RecursionError:
        raise _damaged(path, "its tree nests too deeply") from None
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError, zlib.error) as e:
        raise CheckpointError(f"load_checkpoint: {path} is not a readable minidl checkpoint "
                              f"(damaged, truncated, or another format): {e}") from None
