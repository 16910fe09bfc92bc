"""load_pth reads what torch.save writes (zip and legacy formats) and refuses what a state dict never holds.

The round trips need torch (skipped without it); the malicious and damaged files are built
by hand and need no torch. Hand-made files also claim far more than they hold (broadcast and
overlapping tensors, huge sizes, zip bombs, deep nesting): each must cost what the file holds.
"""
import io
import os
import pickle
import subprocess
import sys
import tracemalloc
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from minidl.io import PthError, UnsafePickleError, load_pth
from minidl.io.pth import MAGIC_NUMBER, PROTOCOL_VERSION

FORMATS = ["zip", "legacy"]


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def save(torch, obj, path, fmt):
    torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zip"))
    return path


def as_numpy(torch, t):
    """torch's view of a tensor as numpy, with bfloat16 widened to float32 as load_pth does."""
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


# ---------------------------------------------------------------------- round trips with torch
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_dtype(torch, tmp_path, fmt):
    gen = torch.Generator().manual_seed(0)
    floats = torch.randn(3, 4, generator=gen)
    sd = OrderedDict([
        ("f32", floats), ("f64", floats.double()), ("f16", floats.half()), ("bf16", floats.bfloat16()),
        ("i64", torch.tensor([-2**40, 0, 2**40])), ("i32", torch.tensor([-7, 0, 7], dtype=torch.int32)),
        ("i16", torch.tensor([-300, 300], dtype=torch.int16)), ("i8", torch.tensor([-100, 100], dtype=torch.int8)),
        ("u8", torch.tensor([0, 200, 255], dtype=torch.uint8)), ("bool", torch.tensor([True, False, True])),
        ("c64", torch.complex(floats, -floats)),
        ("u16", torch.tensor([0, 65535], dtype=torch.uint16)),  # no storage class: _rebuild_tensor_v3
        ("count", torch.tensor(5)),                              # 0-d, like BatchNorm's num_batches_tracked
    ])
    loaded = load_pth(save(torch, sd, tmp_path / "all.pth", fmt))
    assert type(loaded) is OrderedDict and list(loaded) == list(sd)
    expected_dtypes = {"bf16": np.float32}
    for name, t in sd.items():
        want = as_numpy(torch, t)
        assert loaded[name].dtype == expected_dtypes.get(name, want.dtype), name
        assert loaded[name].shape == want.shape, name
        np.testing.assert_array_equal(loaded[name], want, err_msg=name)
    # bfloat16 -> float32 is exact: the same 16 high bits, zeros below
    assert (loaded["bf16"].view(np.uint32) & 0xFFFF).max() == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_views_strides_and_shared_storage(torch, tmp_path, fmt):
    base = torch.arange(60, dtype=torch.float32).reshape(5, 12)
    sd = {
        "base": base,
        "transposed": base.t(),                  # strides (1, 12)
        "slice": base[1:4, 2::3],                # offset 14, strides (12, 3)
        "row": base[3],                          # offset 36, contiguous part of a bigger storage
        "broadcast": torch.tensor([1., 2., 3.]).expand(4, 3),   # stride 0
        "empty": base[:, :0],
        "again": base,                           # the same tensor twice
    }
    loaded = load_pth(save(torch, sd, tmp_path / "views.pth", fmt))
    for name, t in sd.items():
        np.testing.assert_array_equal(loaded[name], t.numpy(), err_msg=name)
        assert loaded[name].shape == tuple(t.shape)
    # each array owns or fully covers its memory: changing a view changes nothing else
    loaded["slice"][0, 0] = -1
    assert loaded["base"][1, 2] == 14
    assert loaded["slice"].flags.c_contiguous and loaded["transposed"].flags.c_contiguous


@pytest.mark.parametrize("fmt", FORMATS)
def test_nested_checkpoint_keeps_its_structure(torch, tmp_path, fmt):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(2, 2))
    ckpt = {"model": model.state_dict(), "epoch": 3, "lrs": [0.1, torch.tensor(0.5)], "name": "run-1",
            "pair": (torch.ones(2), 7), "none": None, "param": torch.nn.Parameter(torch.ones(3))}
    loaded = load_pth(save(torch, ckpt, tmp_path / "ckpt.pth", fmt))
    assert loaded["epoch"] == 3 and loaded["name"] == "run-1" and loaded["none"] is None
    assert loaded["lrs"][0] == 0.1 and loaded["lrs"][1] == np.float32(0.5)
    assert isinstance(loaded["pair"], tuple) and loaded["pair"][1] == 7
    np.testing.assert_array_equal(loaded["param"], np.ones(3, np.float32))
    assert list(loaded["model"]) == list(model.state_dict())
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(loaded["model"][k], v.numpy(), err_msg=k)


def test_loads_without_importing_torch(torch, tmp_path):
    path = save(torch, {"w": torch.ones(2, 2)}, tmp_path / "w.pth", "zip")
    code = ("import sys; from minidl.io import load_pth; w = load_pth(sys.argv[1])['w']; "
            "assert w.sum() == 4; assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, cwd=Path(__file__).resolve().parents[1])


def test_whole_pickled_module_is_refused_with_a_hint(torch, tmp_path):
    path = save(torch, torch.nn.Linear(2, 2), tmp_path / "module.pth", "zip")
    with pytest.raises(UnsafePickleError, match=r"torch\.nn\.modules\.linear\.Linear.*state_dict\(\)"):
        load_pth(path)


# ---------------------------------------------------------------------- hand-made files
class _Storage:
    """Stands for a storage in a hand-made pickle: pickled as the persistent id ``pid``."""

    def __init__(self, pid):
        self.pid = pid


class _Call:
    """Pickles as a call ``fn(*args)`` (what a tensor's __reduce__ produces)."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _Storage) else None


def dumps(obj):
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def write_legacy(path, obj_pickle, storages=(), keys=None):
    """A legacy .pth: four pickles, then each storage as (int64 count, bytes)."""
    with open(path, "wb") as f:
        for header in (MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True}):
            f.write(pickle.dumps(header, protocol=2))
        f.write(obj_pickle)
        f.write(pickle.dumps([k for k, _ in storages] if keys is None else keys, protocol=2))
        for _, array in storages:
            f.write(np.int64(array.size).tobytes() + array.tobytes())
    return path


def write_zip(path, obj_pickle, storages=()):
    with zipfile.ZipFile(path, "w") as z:  # ZIP_STORED, as torch writes
        z.writestr("archive/data.pkl", obj_pickle)
        for key, array in storages:
            z.writestr(f"archive/data/{key}", array.tobytes())
    return path


def write(fmt, path, obj_pickle, storages=()):
    return (write_zip if fmt == "zip" else write_legacy)(path, obj_pickle, storages)


class _RunsCode:
    """A pickle that, loaded by pickle.load, runs a shell command (the classic attack)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("fmt", FORMATS)
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, fmt):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"weight": _RunsCode(marker)}, protocol=2)
    with pytest.raises(UnsafePickleError, match=r"(posix|os|nt)\.system.*refused, nothing was run"):
        load_pth(write(fmt, tmp_path / "evil.pth", evil))
    assert not marker.exists()
    pickle.loads(evil)  # the same bytes under plain pickle do run code: the test can fail
    assert marker.exists()


def test_malicious_first_pickle_of_a_legacy_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(_RunsCode(marker), protocol=2) + b"rest")
    with pytest.raises(UnsafePickleError):
        load_pth(path)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["builtins\neval", "torch\nload", "numpy\nload", "torch._utils\n_rebuild_qtensor"])
def test_only_state_dict_names_are_allowed(tmp_path, name):
    evil = b"\x80\x02c" + name.encode() + b"\n)R."  # GLOBAL name; EMPTY_TUPLE; REDUCE: name()
    with pytest.raises(UnsafePickleError, match=name.replace("\n", ".")):
        load_pth(write_legacy(tmp_path / "evil.pth", evil))


def test_pickle_cannot_modify_the_allowed_objects(tmp_path):
    # GLOBAL torch.FloatStorage; {"code": "O"}; BUILD: would turn float storages into Python objects
    evil = b"\x80\x02ctorch\nFloatStorage\n}X\x04\x00\x00\x00codeX\x01\x00\x00\x00Osb."
    with pytest.raises(UnsafePickleError, match="set the state"):
        load_pth(write_zip(tmp_path / "evil.pth", evil))


def test_damaged_and_foreign_files(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(PthError, match="neither a zip nor a legacy"):
        load_pth(text)
    other_zip = tmp_path / "other.pth"
    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(PthError, match="no <name>/data.pkl"):
        load_pth(other_zip)
    plain_pickle = tmp_path / "plain.pth"
    plain_pickle.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(PthError, match="wrong magic number"):
        load_pth(plain_pickle)


# ---------------------------------------------------------------------- hand-made geometry (names need torch)
def rebuild(torch, storage, offset, size, stride):
    return _Call(torch._utils._rebuild_tensor_v2, storage, offset, size, stride, False, OrderedDict())


@pytest.mark.parametrize("fmt", FORMATS)
def test_tensor_reaching_outside_its_storage_is_refused(torch, tmp_path, fmt):
    storage = _Storage(("storage", torch.FloatStorage, "0", "cpu", 4))
    obj = dumps({"w": rebuild(torch, storage, 1, (2, 2), (2, 1))})  # needs elements 1..4 of 0..3
    with pytest.raises(PthError, match="reaches element 4 of a storage of 4"):
        load_pth(write(fmt, tmp_path / "bad.pth", obj, [("0", np.arange(4, dtype=np.float32))]))


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_storage(torch, tmp_path, fmt):
    storage = _Storage(("storage", torch.FloatStorage, "0", "cpu", 4))
    obj = dumps({"w": rebuild(torch, storage, 0, (4,), (1,))})
    path = write(fmt, tmp_path / "short.pth", obj, [("0", np.arange(4, dtype=np.float32))])
    if fmt == "legacy":
        path.write_bytes(path.read_bytes()[:-3])
    else:  # the entry is complete but shorter than the pickle says
        write_zip(path, obj, [("0", np.arange(3, dtype=np.float32))])
    with pytest.raises(PthError, match="truncated|bytes, its pickle says"):
        load_pth(path)


def test_legacy_storage_views(torch, tmp_path):
    # PyTorch < 0.4 saved views of storages: ("storage", type, root key, device, root numel, (view key, start, numel))
    root = np.arange(10, dtype=np.float64)
    view = _Storage(("storage", torch.DoubleStorage, "root", "cpu", 10, ("view", 4, 5)))
    obj = dumps({"w": rebuild(torch, view, 1, (2, 2), (1, 2))})  # view elements 1, 2, 3, 4 -> root 5..8
    loaded = load_pth(write_legacy(tmp_path / "old.pth", obj, [("root", root)]))
    np.testing.assert_array_equal(loaded["w"], [[5, 7], [6, 8]])


# ---------------------------------------------------------------------- claims larger than the file
# Every size in a .pth is a claim. These files are a few hundred bytes; read naively they
# cost gigabytes (or a MemoryError, or a RecursionError). The pickles name torch's functions
# with hand-written GLOBAL opcodes, so they need no torch.
class _Name:
    """``module.name`` as a pickle refers to it (a GLOBAL opcode), without importing the module."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle only stores callables as functions to call
        raise AssertionError("only pickled, never called")


class _NamePickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table can learn _Name
    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[_Name] = lambda self, obj: self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _Storage) else None


def hand_dumps(obj):
    buf = io.BytesIO()
    _NamePickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def float_storage(key, numel):
    return _Storage(("storage", _Name("torch", "FloatStorage"), key, "cpu", numel))


def tensor(storage, offset, size, stride):
    """What torch pickles for a tensor: _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)."""
    return _Call(_Name("torch._utils", "_rebuild_tensor_v2"), storage, offset, size, stride, False, OrderedDict())


def peak_memory(fn):
    """(fn(), the most memory Python and numpy held during the call, in bytes)."""
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


MiB = 1 << 20


@pytest.mark.parametrize("fmt", FORMATS)
def test_broadcast_tensor_costs_its_storage_not_its_size(torch, tmp_path, fmt):
    """The bug report: a ~1 KB file of torch.zeros(1).expand(16384, 16384) allocated 1 GiB.

    A zero-stride tensor comes back as a read-only broadcast view of its one element.
    """
    path = save(torch, {"w": torch.zeros(1).expand(16384, 16384)}, tmp_path / "expand.pth", fmt)
    assert path.stat().st_size < 2048
    loaded, peak = peak_memory(lambda: load_pth(path))
    w = loaded["w"]
    assert peak < MiB
    assert w.shape == (16384, 16384) and w.dtype == np.float32 and w.strides == (0, 0)
    assert not w.flags.writeable and w[12345, 678] == 0 and w[-1, -1] == 0
    assert np.array(w[:2, :3]).flags.writeable  # np.array makes the writable copy whoever needs one


def test_broadcast_views_of_partial_and_bfloat16_storages_keep_their_values(torch, tmp_path):
    base = torch.arange(60, dtype=torch.float32).reshape(5, 12)
    sd = {"rows": base[2:4, 1:3].unsqueeze(1).expand(2, 5, 2),              # a broadcast of a slice
          "permuted": base[:, :3].unsqueeze(0).expand(4, 5, 3).permute(2, 0, 1),
          "bf16": torch.arange(3, dtype=torch.bfloat16).expand(4, 3),
          "unfold": torch.arange(10.).unfold(0, 3, 1)}                       # overlapping strides
    loaded = load_pth(save(torch, sd, tmp_path / "views.pth", "zip"))
    for name, t in sd.items():
        np.testing.assert_array_equal(loaded[name], t.float().numpy(), err_msg=name)
        assert not loaded[name].flags.writeable, name


def test_overlapping_strides_cost_the_storage_not_the_size(tmp_path):
    """Variant of the broadcast report without a zero stride and without torch: as_strided with
    strides (1, 1) over 32767 floats claims 2**28 elements (1 GiB), all but 32767 of them repeats."""
    storage = float_storage("0", 32767)
    obj = hand_dumps({"w": tensor(storage, 0, (16384, 16384), (1, 1))})
    path = write_zip(tmp_path / "overlap.pth", obj, [("0", np.arange(32767, dtype=np.float32))])
    loaded, peak = peak_memory(lambda: load_pth(path))
    w = loaded["w"]
    assert peak < MiB and w.shape == (16384, 16384) and not w.flags.writeable
    assert w[0, 0] == 0 and w[3, 5] == 8 and w[-1, -1] == 32766


@pytest.mark.parametrize("case", ["tensor size", "legacy storage count", "pickle length field"])
def test_claims_larger_than_the_file_are_errors_not_memory_errors(tmp_path, case):
    """Variants of the broadcast report: a size the file cannot back, in three other places.

    Before, these raised a raw ValueError ("array is too big") or a MemoryError.
    """
    path = tmp_path / "claims.pth"
    if case == "tensor size":  # stride 0 again, but 2**80 elements: not an array numpy can make
        obj = hand_dumps({"w": tensor(float_storage("0", 1), 0, (2**40, 2**40), (0, 0))})
        write_zip(path, obj, [("0", np.zeros(1, np.float32))])
        match = r"\['w'\] claims size \(1099511627776, 1099511627776\)"
    elif case == "legacy storage count":  # the int64 before a storage's bytes claims 2**40 floats
        obj = hand_dumps({"w": tensor(float_storage("0", 2**40), 0, (4,), (1,))})
        write_legacy(path, obj, [("0", np.zeros(4, np.float32))])
        data = bytearray(path.read_bytes())
        at = data.rindex(np.int64(4).tobytes())
        data[at:at + 8] = np.int64(2**40).tobytes()
        path.write_bytes(bytes(data))
        match = r"truncated inside storage 0: it claims 1099511627776 x 4 bytes"
    else:  # BINBYTES8 with a length of 2**40: the unpickler allocates it before reading
        path.write_bytes(b"".join(pickle.dumps(h, protocol=2) for h in (MAGIC_NUMBER, PROTOCOL_VERSION, {}))
                         + b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b"abc")
        match = "damaged pickle: it claims an object larger than memory"
    with pytest.raises(PthError, match=match):
        load_pth(path)


def deflated_zip(path, obj_pickle, storages=(), byteorder=None):
    """A .pth with its storages (and byteorder record) deflated, as a re-zipped file may be."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", obj_pickle)
        for key, array in storages:
            z.writestr(f"archive/data/{key}", array.tobytes(), compress_type=zipfile.ZIP_DEFLATED)
        if byteorder is not None:
            z.writestr("archive/byteorder", byteorder, compress_type=zipfile.ZIP_DEFLATED)
    return path


def test_compressed_storage_is_inflated_only_as_far_as_its_tensors_reach(tmp_path):
    """The bug report: a deflated storage was inflated whole (and copied) before any check.

    32 MiB of zeros deflate to 32 KB; the one tensor needs its first 4 floats.
    """
    obj = hand_dumps({"w": tensor(float_storage("0", 1 << 23), 0, (2, 2), (2, 1))})
    path = deflated_zip(tmp_path / "bomb.pth", obj, [("0", np.zeros(1 << 23, np.float32))])
    assert path.stat().st_size < MiB
    loaded, peak = peak_memory(lambda: load_pth(path))
    np.testing.assert_array_equal(loaded["w"], np.zeros((2, 2), np.float32))
    assert peak < 2 * MiB


def test_compressed_storage_is_checked_before_it_is_inflated(tmp_path):
    """A tensor reaching past its deflated storage is refused before a byte of it is inflated."""
    obj = hand_dumps({"w": tensor(float_storage("0", 1 << 23), 1, (1 << 23,), (1,))})
    path = deflated_zip(tmp_path / "bomb.pth", obj, [("0", np.zeros(1 << 23, np.float32))])

    def refused():
        with pytest.raises(PthError, match=r"\['w'\] of size \(8388608,\), stride \(1,\), offset 1 reaches "
                                           r"element 8388608 of a storage of 8388608 elements"):
            load_pth(path)

    _, peak = peak_memory(refused)
    assert peak < 2 * MiB


def test_compressed_byteorder_record_is_not_read_whole(tmp_path):
    """Variant: the zip bomb arrives as the byteorder record, which was read whole (and any
    value but "little" taken to mean big-endian)."""
    obj = hand_dumps({"w": tensor(float_storage("0", 4), 0, (4,), (1,))})
    path = deflated_zip(tmp_path / "bomb.pth", obj, [("0", np.arange(4, dtype=np.float32))],
                        byteorder=b"\0" * (64 * MiB))
    assert path.stat().st_size < MiB

    def refused():
        with pytest.raises(PthError, match=r"byteorder record starts with b'\\x00.*expected 'little' or 'big'"):
            load_pth(path)

    _, peak = peak_memory(refused)
    assert peak < 2 * MiB
    np.testing.assert_array_equal(load_pth(deflated_zip(path, obj, [("0", np.arange(4, dtype=np.float32))],
                                                        byteorder=b"little"))["w"], [0, 1, 2, 3])


# ---------------------------------------------------------------------- nesting
def nested(kind, depth):
    """A pickle of ``depth`` lists (or tuples) each inside the next, built opcode by opcode."""
    if kind == "lists":  # EMPTY_LIST depth times, then APPEND each into the one below
        return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."
    return b"\x80\x02)" + b"\x85" * (depth - 1) + b"."  # EMPTY_TUPLE, then TUPLE1 around it depth - 1 times


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["lists", "tuples"])
def test_deeply_nested_pickle_is_refused_not_a_recursion_error(tmp_path, fmt, kind):
    """The bug report: 100000 nested lists raised RecursionError. Variant: nested tuples, which
    arrive through other opcodes and were rebuilt by another branch of the walk."""
    with pytest.raises(UnsafePickleError, match="nests too deeply"):
        load_pth(write(fmt, tmp_path / "deep.pth", nested(kind, 100_000)))
    with pytest.raises(UnsafePickleError, match="nests too deeply"):  # deep, if not enough to overflow the stack
        load_pth(write(fmt, tmp_path / "deep.pth", nested(kind, 150)))
    shallow = load_pth(write(fmt, tmp_path / "ok.pth", nested(kind, 20)))  # real nesting stays readable
    for _ in range(19):
        assert len(shallow) in (0, 1)
        shallow = shallow[0]
    assert len(shallow) == 0


@pytest.mark.timeout(30)
def test_tuples_shared_at_every_level_are_walked_once(tmp_path):
    """Variant: nesting that is shallow but shared. Each of 40 tuples holds the one below twice
    (DUP, TUPLE2), so a walk that rebuilds every tuple it meets makes 2**40 visits and never ends."""
    loaded = load_pth(write_zip(tmp_path / "laughs.pth", b"\x80\x02)" + b"2\x86" * 40 + b"."))
    for _ in range(40):
        assert len(loaded) == 2 and loaded[0] is loaded[1]  # still shared, as pickle made it
        loaded = loaded[0]
    assert loaded == ()
