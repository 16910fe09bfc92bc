"""Reading PyTorch ``.pth`` files without PyTorch: ``load_pth(path)`` -> dict of numpy arrays.

    state = load_pth("resnet18-f37072fd.pth")    # {"conv1.weight": array(64, 3, 7, 7), ...}
    model.load_state_dict(state)

What ``torch.save`` writes
--------------------------
A tensor is a *view* of a *storage*: a flat 1-D buffer of one dtype. The view is
``(storage, offset, size, stride)``; element ``t[i, j, ...]`` lives at
``storage[offset + i*stride[0] + j*stride[1] + ...]``. Several tensors may view one
storage (a slice, a transpose, the same tensor saved twice), so ``torch.save``
pickles the object tree with every storage replaced by a *persistent id* — a tuple
``("storage", StorageType, key, device, numel)`` — and writes each storage's bytes
once, under its key. Two layouts exist:

* **zip** (the default since torch 1.6): a zip archive ``<name>/data.pkl`` (the
  pickle), ``<name>/data/<key>`` (one uncompressed entry of raw bytes per storage),
  ``<name>/byteorder`` ("little" or "big"; absent means little), and a few
  version records.
* **legacy** (``_use_new_zipfile_serialization=False``, and every file before 1.6):
  one stream of five pickles and then raw data: the magic number
  ``0x1950a86a20f9469cfc6c``, the protocol version 1001, a ``sys_info`` dict, the
  object pickle, the sorted list of storage keys; then for each key in that order
  an int64 element count followed by the storage's bytes (little-endian).

The tensors come back through ``torch._utils._rebuild_tensor_v2(storage, offset,
size, stride, ...)``, a function the pickle names and calls. That is the danger of
pickles: a pickle may name *any* importable function (``os.system``) and call it.
So the unpickler here resolves only the few names a state dict uses (the rebuild
functions, the storage types, ``collections.OrderedDict``) to small functions of
its own, and refuses every other name with ``UnsafePickleError`` before anything
runs. torch is never imported.

Reading is done in passes because the legacy format puts the storage bytes
*after* the pickle: unpickling yields a tree with a ``_TensorRef`` where each tensor
goes; then every tensor's size, strides and offset are checked against the size of
its storage *before any storage is read*; then each storage is read once with
``np.fromfile`` (no Python loop over elements), only as far as its tensors reach;
and each reference is cut out of it with its offset and strides.

Every number in the file is a claim, and a few hundred bytes can claim terabytes:
a storage of 2**40 elements, a tensor of size (16384, 16384) with strides (0, 0)
over one float, a deflated zip entry that inflates 1000-fold, a pickle nested a
million deep. So each claim is checked against what the file really holds before
memory is spent on it, and what fails is a ``PthError`` naming the tensor and the
numbers, never a MemoryError or RecursionError.
"""
import collections
import math
import os
import pickle
import struct
import sys
import zipfile
import zlib

import numpy as np

__all__ = ["load_pth", "PthError", "UnsafePickleError"]

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # the first pickle of a legacy file
PROTOCOL_VERSION = 1001                # the second
MAX_DEPTH = 100       # containers inside containers: a state dict nests 1-5 deep, a checkpoint a few more
READ_CHUNK = 1 << 24  # a compressed storage is inflated 16 MiB at a time, up to what its tensors reach

# torch's storage classes and the numpy dtype of their elements. BFloat16 has no
# numpy dtype: its 16 bits are the top half of a float32, so it is read as uint16
# and widened (exactly) to float32 afterwards.
STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "BFloat16Storage": "bf16",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?", "ComplexFloatStorage": "c8", "ComplexDoubleStorage": "c16",
    "UntypedStorage": "u1",
}
# Newer dtypes have no storage class: torch pickles an UntypedStorage (bytes) and
# names the dtype itself in _rebuild_tensor_v3.
V3_DTYPES = {"uint16": "u2", "uint32": "u4", "uint64": "u8", **{
    name: code for name, code in (("float32", "f4"), ("float64", "f8"), ("float16", "f2"), ("bfloat16", "bf16"),
                                  ("int64", "i8"), ("int32", "i4"), ("int16", "i2"), ("int8", "i1"),
                                  ("uint8", "u1"), ("bool", "?"))}}


class PthError(ValueError):
    """The file is not a .pth file we can read (damaged, truncated, or another format)."""


class UnsafePickleError(PthError, pickle.UnpicklingError):
    """The pickle names something other than tensors and dicts; it was refused, nothing ran."""


def load_pth(path):
    """The object ``torch.save`` stored in ``path``, with every tensor as a numpy array.

    For a state dict that is an (Ordered)dict ``name -> array``; nested dicts, lists,
    tuples, numbers and strings (a checkpoint like ``{"model": ..., "epoch": 3}``) are
    kept as they are. Dtypes: float32/64/16, int64/32/16/8, uint8/16/32/64, bool and
    complex keep theirs; bfloat16 becomes float32 (exactly). Every array is C-contiguous
    and writable, with two exceptions that would otherwise cost more memory than the
    file holds: a tensor with a zero stride (a broadcast such as ``x.expand(n, m)``)
    comes back as a read-only broadcast view of its distinct elements, and one whose
    strides overlap (``as_strided``, ``unfold``: more elements than the stretch of
    storage they span) as a read-only view of that stretch; ``np.array(a)`` makes
    either a writable copy. A tensor that covers its whole storage is that storage,
    read once (so, as in torch, a tensor saved twice comes back as one array); a
    slice, transpose or other partial view is copied out, so it never keeps a larger
    storage alive. Raises ``UnsafePickleError`` for a pickle that names anything else (a whole
    pickled model, an optimizer object, code) or nests containers more than
    ``MAX_DEPTH`` deep, ``PthError`` for a damaged file, including one whose sizes claim
    more bytes than it holds.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(512)
        f.seek(0)
        if head[:4] == b"PK\x03\x04":
            return _load_zip(path, f)
        if head[:1] == b"\x80":  # a pickle's PROTO opcode: the legacy stream
            return _load_legacy(path, f)
        if head[257:262] == b"ustar":
            raise PthError(f"load_pth: {path} is in the tar format of PyTorch <= 0.3; load it with torch "
                           f"and save it again (torch.save(torch.load(p), p)) to read it here")
        raise PthError(f"load_pth: {path} is neither a zip nor a legacy .pth file (it starts with {head[:8]!r})")


# ---------------------------------------------------------------------- the unpickler
class _NoBuild:
    """Objects the pickle may hold but never modify (pickle's BUILD opcode calls __setstate__)."""
    __slots__ = ()

    def __setstate__(self, state):
        raise UnsafePickleError(f"load_pth: the pickle tries to set the state of a {type(self).__name__}; refused")


class _StorageType(_NoBuild):
    """What ``torch.FloatStorage`` etc. resolve to: just the element dtype."""
    __slots__ = ("name", "code")

    def __init__(self, name, code):
        self.name, self.code = name, code


class _Storage(_NoBuild):
    """A storage named by the pickle: its key, element dtype and length; its bytes come later.

    ``root``/``start`` make it a window into another storage (legacy storage views).
    """
    __slots__ = ("key", "code", "numel", "root", "start", "needed", "array")

    def __init__(self, key, code, numel, root=None, start=0):
        self.key, self.code, self.numel, self.root, self.start = key, code, numel, root, start
        self.needed = 0    # how many of its elements the tensors reach: all that is read
        self.array = None  # the first `needed` elements as a 1-D numpy array, once read


class _TensorRef(_NoBuild):
    """Where a tensor goes in the unpickled tree: a strided view of a storage."""
    __slots__ = ("storage", "offset", "size", "stride", "code")

    def __init__(self, storage, offset, size, stride, code):
        self.storage, self.offset, self.size, self.stride, self.code = storage, offset, size, stride, code


def _int_tuple(value, what):
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise PthError(f"load_pth: a tensor's {what} is {value!r}, expected a tuple of ints")
    return tuple(value)


class _RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler that knows a dozen names, resolved to functions of its own.

    ``find_class`` is the only way a pickle reaches Python objects by name (GLOBAL,
    STACK_GLOBAL, INST, OBJ and the EXT opcodes all go through it), so answering it
    from a fixed table means nothing outside that table can be called. Each table
    entry is a bound method or a ``_NoBuild`` object, so BUILD cannot alter them.
    """

    def __init__(self, file, path):
        super().__init__(file)
        self.path = path
        self.storages = {}  # key -> _Storage, one per key however often it is named
        self.allowed = {("collections", "OrderedDict"): collections.OrderedDict}
        for name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            self.allowed[("torch._utils", name)] = self._rebuild_tensor_v2
        self.allowed[("torch._utils", "_rebuild_tensor_v3")] = self._rebuild_tensor_v3
        self.allowed[("torch._utils", "_rebuild_parameter")] = self._rebuild_parameter
        self.allowed[("torch._utils", "_rebuild_parameter_with_state")] = self._rebuild_parameter
        for name, code in STORAGE_DTYPES.items():
            self.allowed[("torch", name)] = _StorageType(name, code)
        self.allowed[("torch.storage", "UntypedStorage")] = self.allowed[("torch", "UntypedStorage")]
        for name, code in V3_DTYPES.items():
            self.allowed[("torch", name)] = _StorageType(name, code)

    def find_class(self, module, name):
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        hint = ""
        if module.startswith("__torch__"):
            hint = " (a TorchScript archive: torch.jit.load reads it, not load_pth)"
        elif module.startswith("torch") or "." not in module:
            hint = (" (a whole pickled object, not a state dict: save model.state_dict() instead, "
                    "or load it with torch and save its state dict)")
        raise UnsafePickleError(
            f"load_pth: {self.path} asks to load {module}.{name}, which is not a tensor, a storage or a dict; "
            f"refused, nothing was run{hint}. Only PyTorch state dicts (dicts of tensors, numbers, strings) can be read.")

    def persistent_load(self, pid):
        """The storage named by a persistent id ``("storage", type, key, device, numel[, view])``."""
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] not in ("storage", b"storage"):
            raise PthError(f"load_pth: unexpected persistent id {pid!r} (only storages are supported)")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise PthError(f"load_pth: malformed storage id {pid!r}")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(key, storage_type.code, numel)
        view = pid[5] if len(pid) == 6 else None
        if view is not None:  # legacy files of PyTorch < 0.4 saved storage views: (key, offset, numel)
            if not (isinstance(view, tuple) and len(view) == 3 and isinstance(view[1], int)
                    and isinstance(view[2], int)):
                raise PthError(f"load_pth: malformed storage view {view!r}")
            view_key, start, view_numel = str(view[0]), view[1], view[2]
            if view_key not in self.storages:
                self.storages[view_key] = _Storage(view_key, storage.code, view_numel, root=storage, start=start)
            return self.storages[view_key]
        return storage

    def _rebuild_tensor_v2(self, storage, offset, size, stride, *ignored):
        """torch's ``_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, meta)``."""
        if not isinstance(storage, _Storage) or not isinstance(offset, int):
            raise PthError(f"load_pth: a tensor is rebuilt from {type(storage).__name__} at offset {offset!r}")
        return _TensorRef(storage, offset, _int_tuple(size, "size"), _int_tuple(stride, "stride"), storage.code)

    def _rebuild_tensor_v3(self, storage, offset, size, stride, requires_grad, hooks, dtype, *ignored):
        """The same for dtypes without a storage class: ``storage`` holds bytes, ``dtype`` says what."""
        ref = self._rebuild_tensor_v2(storage, offset, size, stride)
        if not isinstance(dtype, _StorageType):
            raise PthError(f"load_pth: unknown tensor dtype {dtype!r}")
        ref.code = dtype.code
        return ref

    def _rebuild_parameter(self, data, *ignored):
        """An ``nn.Parameter`` is its tensor here (requires_grad and hooks are PyTorch's business)."""
        return data


# ---------------------------------------------------------------------- the two layouts
def _unpickle(f, path):
    unpickler = _RestrictedUnpickler(f, path)
    try:
        return unpickler.load(), unpickler.storages
    except PthError:
        raise
    except RecursionError:
        raise UnsafePickleError(f"load_pth: {path}: the pickle nests too deeply to read; refused") from None
    except MemoryError:  # BINBYTES8 and friends allocate the length they claim before reading
        raise PthError(f"load_pth: {path} holds a damaged pickle: it claims an object larger than memory, "
                       f"far more than the file holds") from None
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError,
            zipfile.BadZipFile, zlib.error) as e:
        raise PthError(f"load_pth: {path} holds a damaged pickle ({type(e).__name__}: {e})") from None


def _load_zip(path, f):
    try:
        archive = zipfile.ZipFile(f)
    except zipfile.BadZipFile as e:
        raise PthError(f"load_pth: {path} is a damaged zip archive ({e})") from None
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            if any(n.endswith("/constants.pkl") for n in names):
                raise PthError(f"load_pth: {path} is a TorchScript archive (torch.jit.save); "
                               f"load it with torch.jit.load and save its state_dict()")
            raise PthError(f"load_pth: {path} is a zip archive but not a torch.save file (no <name>/data.pkl)")
        prefix = pickles[0][:-len("data.pkl")]
        with archive.open(pickles[0]) as pkl:
            tree, storages = _unpickle(pkl, path)
        tensors = _plan(tree, storages, path)  # every claim checked before a storage byte is read
        byteorder = _read_byteorder(archive, prefix + "byteorder", path) if prefix + "byteorder" in names else "little"
        file_size = os.fstat(f.fileno()).st_size
        for storage in storages.values():
            if storage.root is None:
                entry = f"{prefix}data/{storage.key}"
                if entry not in names:
                    raise PthError(f"load_pth: {path} lacks the storage {entry} its pickle refers to")
                storage.array = _read_zip_entry(archive, f, archive.getinfo(entry), storage, byteorder, path,
                                                file_size)
    return _resolve(tree, tensors, storages, path)


def _read_byteorder(archive, name, path):
    """The ``byteorder`` record: "little" or "big" (read no further: the entry may claim anything)."""
    try:
        with archive.open(name) as entry:
            value = entry.read(8)
    except (zipfile.BadZipFile, zlib.error) as e:
        raise PthError(f"load_pth: {path}: a damaged zip entry {name} ({e})") from None
    if value.strip() not in (b"little", b"big"):
        raise PthError(f"load_pth: {path}: its {name} record starts with {value!r}, expected 'little' or 'big'")
    return value.strip().decode()


def _read_zip_entry(archive, f, info, storage, byteorder, path, file_size):
    """A storage's first ``storage.needed`` elements from its zip entry: one read from the file when stored.

    The entry's size in the zip directory must be what the pickle says; a stored entry
    must lie inside the file, and a compressed one is inflated only as far as needed,
    so neither a forged directory nor a zip bomb can make us allocate what is not there.
    """
    dtype = _storage_dtype(storage.code, byteorder)
    nbytes = storage.numel * dtype.itemsize
    if info.file_size != nbytes:
        raise PthError(f"load_pth: {path}: storage {storage.key} has {info.file_size} bytes, "
                       f"its pickle says {storage.numel} x {dtype.itemsize}")
    want = storage.needed * dtype.itemsize
    if info.compress_type != zipfile.ZIP_STORED:  # torch never compresses, but a re-zipped file may be
        data = bytearray()
        try:
            with archive.open(info) as entry:
                while len(data) < want:
                    chunk = entry.read(min(want - len(data), READ_CHUNK))
                    if not chunk:
                        break
                    data += chunk
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise PthError(f"load_pth: {path}: a damaged zip entry {info.filename} ({e})") from None
        if len(data) < want:
            raise PthError(f"load_pth: {path} is truncated inside storage {storage.key}")
        return np.frombuffer(data, dtype=dtype)  # a bytearray: the array is writable, no copy
    # The entry's bytes start after its local header: 30 fixed bytes, the name, an extra field.
    f.seek(info.header_offset)
    header = f.read(30)
    if header[:4] != b"PK\x03\x04":
        raise PthError(f"load_pth: {path}: a damaged zip entry header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    if info.compress_size != info.file_size or start + nbytes > file_size:
        raise PthError(f"load_pth: {path} is truncated inside storage {storage.key}: its zip entry claims "
                       f"{info.file_size} bytes from offset {start}, the file has {file_size}")
    f.seek(start)
    return _read_elements(f, dtype, storage, path)


def _read_elements(f, dtype, storage, path):
    """``storage.needed`` elements from the file's position (np.fromfile allocates all it is asked for)."""
    if storage.needed == 0:
        return np.empty(0, dtype=dtype)
    data = np.fromfile(f, dtype=dtype, count=storage.needed)
    if data.size != storage.needed:
        raise PthError(f"load_pth: {path} is truncated inside storage {storage.key}")
    return data


def _load_legacy(path, f):
    magic, _ = _unpickle(f, path)  # even these two ints go through the restricted unpickler
    version = _unpickle(f, path)[0] if magic == MAGIC_NUMBER else None
    if magic != MAGIC_NUMBER:
        raise PthError(f"load_pth: {path} is a pickle but not a torch.save file (wrong magic number)")
    if version != PROTOCOL_VERSION:
        raise PthError(f"load_pth: {path} has legacy protocol version {version!r}, expected {PROTOCOL_VERSION}")
    _unpickle(f, path)                  # sys_info: endianness and C type sizes of the saving machine
    tree, storages = _unpickle(f, path)
    keys, _ = _unpickle(f, path)        # the order in which the storages' bytes follow
    if not isinstance(keys, list) or any(str(k) not in storages for k in keys):
        raise PthError(f"load_pth: {path}: the storage key list does not match the pickle")
    tensors = _plan(tree, storages, path)
    file_size = os.fstat(f.fileno()).st_size
    for key in keys:
        storage = storages[str(key)]
        count = f.read(8)
        if len(count) != 8:
            raise PthError(f"load_pth: {path} is truncated before storage {key}")
        (numel,) = struct.unpack("<q", count)
        if numel != storage.numel:
            raise PthError(f"load_pth: {path}: storage {key} has {numel} elements, its pickle says {storage.numel}")
        dtype = _storage_dtype(storage.code, "little")
        start, nbytes = f.tell(), numel * dtype.itemsize
        if start + nbytes > file_size:
            raise PthError(f"load_pth: {path} is truncated inside storage {key}: it claims {numel} x "
                           f"{dtype.itemsize} bytes from offset {start}, the file has {file_size}")
        storage.array = _read_elements(f, dtype, storage, path)
        f.seek(start + nbytes)  # past the elements no tensor reaches
    return _resolve(tree, tensors, storages, path)


# ---------------------------------------------------------------------- checking the claims
def _tensors_in(tree, path):
    """Every _TensorRef in the tree, with where it sits (``['model']['fc.weight']``), in order.

    Iterative, so a deep tree cannot exhaust the stack here; a tree deeper than
    MAX_DEPTH is refused, since no state dict nests like that and the caller could
    not walk the result either.
    """
    found, seen = [], set()  # a pickle can make a dict contain itself: visit each container once
    stack = [(tree, "", 0)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, _TensorRef):
            found.append((where, node))
        elif isinstance(node, (dict, list, tuple)) and id(node) not in seen:
            seen.add(id(node))
            if depth >= MAX_DEPTH:
                raise UnsafePickleError(f"load_pth: {path}: the pickle nests too deeply (containers more than "
                                        f"{MAX_DEPTH} levels deep, at {where[:60]}...); refused: no state dict "
                                        f"nests like that")
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend(reversed([(v, f"{where}[{k!r}]", depth + 1) for k, v in items]))
    return found


def _itemsize(code):
    return 2 if code == "bf16" else np.dtype(code).itemsize


def _plan(tree, storages, path):
    """Check every tensor against its storage's size and note how much of each storage to read.

    Runs before any storage is read: a tensor must lie inside its storage, and its
    element count must fit an array at all. Returns the tensors as (where, ref).
    """
    tensors = _tensors_in(tree, path)
    for where, ref in tensors:
        storage, size, stride, offset = ref.storage, ref.size, ref.stride, ref.offset
        name = f"tensor {where or '(the whole object)'}"
        if len(size) != len(stride) or any(n < 0 for n in size) or any(s < 0 for s in stride) or offset < 0:
            raise PthError(f"load_pth: {path}: {name} has a bad geometry: size={size} stride={stride} "
                           f"offset={offset}")
        itemsize = _itemsize(ref.code)
        if math.prod(max(n, 1) for n in size) * (4 if ref.code == "bf16" else itemsize) > sys.maxsize:
            raise PthError(f"load_pth: {path}: {name} claims size {size}, more elements than any array "
                           f"can hold; the file is damaged")
        if 0 in size:
            continue
        storage_bytes = storage.numel * _itemsize(storage.code)
        if ref.code != storage.code and storage_bytes % itemsize:
            raise PthError(f"load_pth: {path}: storage {storage.key} ({storage_bytes} bytes) does not hold "
                           f"whole {itemsize}-byte elements for {name}")
        capacity = storage_bytes // itemsize
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= capacity:
            raise PthError(f"load_pth: {path}: {name} of size {size}, stride {stride}, offset {offset} "
                           f"reaches element {last} of a storage of {capacity} elements (storage "
                           f"{storage.key}); the file is damaged")
        storage.needed = max(storage.needed, -(-(last + 1) * itemsize // _itemsize(storage.code)))
    for storage in storages.values():  # a legacy storage view is a window into its root
        if storage.root is not None:
            root = storage.root
            if storage.start < 0 or storage.start + storage.numel > root.numel:
                raise PthError(f"load_pth: {path}: storage view {storage.key} lies outside its storage")
            if storage.needed:
                root.needed = max(root.needed, storage.start + storage.needed)
    return tensors


# ---------------------------------------------------------------------- from storages to arrays
def _storage_dtype(code, byteorder):
    """The numpy dtype a storage's bytes are read as (bfloat16: its raw 16 bits)."""
    dtype = np.dtype("u2" if code == "bf16" else code)
    return dtype.newbyteorder("<" if byteorder == "little" else ">") if dtype.itemsize > 1 else dtype


def _resolve(tree, tensors, storages, path):
    """Replace every _TensorRef in the tree by its array (dicts and lists in place, keeping their type)."""
    for storage in storages.values():  # a legacy storage view is a window into its root's array
        if storage.root is not None and storage.root.array is not None:
            storage.array = storage.root.array[storage.start:storage.start + storage.needed]
        if storage.array is None:
            raise PthError(f"load_pth: {path} holds no data for storage {storage.key}")
    arrays = {id(ref): _tensor(ref) for _, ref in tensors}

    # Visit each container once, in the order _tensors_in did, so the recursion goes no
    # deeper than it checked: a dict may contain itself, and a tuple shared by two tuples
    # at each of 40 levels would otherwise be rebuilt 2**40 times.
    done, tuples = set(), {}

    def walk(node):
        if isinstance(node, _TensorRef):
            return arrays[id(node)]
        if isinstance(node, (dict, list)) and id(node) not in done:
            done.add(id(node))
            if isinstance(node, dict):
                for k, v in node.items():
                    node[k] = walk(v)
            else:
                node[:] = [walk(v) for v in node]
        elif isinstance(node, tuple):
            if id(node) not in tuples:
                tuples[id(node)] = (node, tuple([walk(v) for v in node]))  # keep node: its id stays unique
            return tuples[id(node)][1]
        return node

    return walk(tree)


def _tensor(ref):
    """The array ``storage[offset + sum(i_k * stride_k)]`` over all indices i of ``size``.

    _plan has checked that the tensor lies inside the part of the storage that was read.
    """
    flat = ref.storage.array
    dtype = _storage_dtype(ref.code, "little" if flat.dtype.byteorder in "<=|" else "big")
    if dtype != flat.dtype:  # _rebuild_tensor_v3: the storage is bytes, reinterpret them
        flat = flat[:flat.nbytes // dtype.itemsize * dtype.itemsize // flat.itemsize].view(dtype)
    size, offset = ref.size, ref.offset
    stride = tuple(s if n > 1 else 0 for n, s in zip(size, ref.stride))  # a length-1 axis's stride is moot
    if 0 in size:
        return _native(np.empty(size, dtype=flat.dtype), ref.code)
    shared = [n > 1 and s == 0 for n, s in zip(size, stride)]  # broadcast axes: every index the same element
    distinct = tuple(1 if b else n for n, b in zip(size, shared))
    window = flat[offset:offset + 1 + sum((n - 1) * s for n, s in zip(size, stride))]  # the elements it reaches
    if math.prod(distinct) > window.size:
        # Overlapping strides (as_strided, unfold): more elements than it reaches in the
        # storage. A copy could cost far more than the file; a read-only view costs no more.
        window = _native(window.copy() if window.size < flat.size else window, ref.code)
        return np.lib.stride_tricks.as_strided(window, shape=size, strides=[s * window.itemsize for s in stride],
                                               writeable=False)
    out = _native(_gather(flat, offset, distinct, stride), ref.code)
    if any(shared):  # a broadcast view of the distinct elements, not a full copy (expand(16384, 16384) of one float)
        strides = [0 if b else s for b, s in zip(shared, out.strides)]
        out = np.lib.stride_tricks.as_strided(out, shape=size, strides=strides, writeable=False)
    return out


def _gather(flat, offset, size, stride):
    """The elements ``flat[offset + i·stride]`` as a C-contiguous array: ``flat`` itself when it is exactly them."""
    if offset == 0 and flat.size == math.prod(size) and _is_contiguous(size, stride):
        return flat.reshape(size)  # the usual case: the tensor is its whole storage, no copy
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size, strides=[s * flat.itemsize for s in stride],
                                           writeable=False)
    return np.ascontiguousarray(view)  # its own memory: a small slice must not pin a large storage


def _native(a, code):
    """``a`` in native byte order, bfloat16 (the high 16 bits of a float32) widened to float32."""
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if code == "bf16":
        a = (a.astype(np.uint32) << 16).view(np.float32)
    return a


def _is_contiguous(size, stride):
    """Whether size/stride is C order (ignoring length-1 axes, whose stride is never used)."""
    step = 1
    for n, s in zip(reversed(size), reversed(stride)):
        if n > 1 and s != step:
            return False
        step *= n
    return True
