"""Faults users reported in saving and loading, each with a variant arriving another way.

* save_checkpoint: a save killed mid-way left its temporary file forever; the next save removes it.
* load_checkpoint: an edited tree.json (or .npy header) gave a raw TypeError/KeyError/MemoryError.
* Module.load_state_dict: one unconvertible value raised after earlier keys were overwritten.

(load_pth's faults are tested in test_pth.py, next to its hand-made files.)
"""
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl.io import CheckpointError, load_checkpoint, save_checkpoint
from minidl.io import checkpoint as checkpoint_module

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- temporary files of killed saves
def start_paused_save(path):
    """A child process that saves a checkpoint to ``path`` and stops mid-way until told to go on.

    Returns the process once its temporary file exists (half written)."""
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from minidl.io import save_checkpoint
        real_write = np.lib.format.write_array

        def write_and_wait(*args, **kwargs):
            real_write(*args, **kwargs)
            print("writing", flush=True)
            sys.stdin.readline()          # paused mid-save until the parent says go (or kills us)

        np.lib.format.write_array = write_and_wait
        save_checkpoint(sys.argv[1], {"w": np.zeros(1000), "v": np.ones(10)})
    """)
    child = subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=REPO,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout.readline() == b"writing\n"
    return child


def temp_files(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith(".tmp-"))


def test_a_save_killed_midway_leaves_no_temp_file_after_the_next_save(tmp_path):
    """The bug report: kill -9 during a save left a .tmp-*.ckpt file that no save ever removed."""
    with start_paused_save(tmp_path / "model.ckpt") as child:
        os.kill(child.pid, signal.SIGKILL)
    assert len(temp_files(tmp_path)) == 1 and not (tmp_path / "model.ckpt").exists()

    save_checkpoint(tmp_path / "model.ckpt", {"w": np.arange(3)})
    assert os.listdir(tmp_path) == ["model.ckpt"]
    np.testing.assert_array_equal(load_checkpoint(tmp_path / "model.ckpt")["w"], [0, 1, 2])


def test_a_save_in_progress_keeps_its_temp_file(tmp_path):
    """Another process's save that is still running is never disturbed by ours."""
    with start_paused_save(tmp_path / "theirs.ckpt") as child:
        (theirs,) = temp_files(tmp_path)
        save_checkpoint(tmp_path / "ours.ckpt", {"x": np.ones(2)})
        assert temp_files(tmp_path) == [theirs]
        child.communicate(b"go\n", timeout=60)
    assert child.returncode == 0 and temp_files(tmp_path) == []
    np.testing.assert_array_equal(load_checkpoint(tmp_path / "theirs.ckpt")["v"], np.ones(10))


def test_stale_temp_files_whose_writer_cannot_be_asked_go_by_age(tmp_path):
    """Variant: temp files whose writer cannot be checked, by PID on this host: those of minidl
    versions that did not put the PID in the name (the files users have now), of another host,
    and of a PID that a live process reuses. They go once older than STALE_AFTER, not before."""
    old = time.time() - checkpoint_module.STALE_AFTER - 60
    host = checkpoint_module._HOST
    stale = [".tmp-k3j4h5g6.ckpt", ".tmp-123-otherhost-abc_1234.ckpt", f".tmp-{os.getpid()}-{host}-reused1.ckpt"]
    fresh = [".tmp-a1b2c3d4.ckpt", ".tmp-123-otherhost-def_5678.ckpt", f".tmp-{os.getpid()}-{host}-mine1234.ckpt"]
    others = ["notes.txt", ".tmp-abc.txt", "run.tmp-1-x-y.ckpt", "best.ckpt"]
    for name in stale + fresh + others:
        (tmp_path / name).write_bytes(b"half a checkpoint")
    for name in stale + others:
        os.utime(tmp_path / name, (old, old))
    save_checkpoint(tmp_path / "model.ckpt", {"w": np.zeros(1)})
    assert sorted(os.listdir(tmp_path)) == sorted(fresh + others + ["model.ckpt"])


# ---------------------------------------------------------------- tampered checkpoints
def tamper(path, edit):
    """Rewrite the checkpoint at ``path`` with ``edit(tree.json text) -> new text``."""
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    entries["tree.json"] = edit(entries["tree.json"].decode()).encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


def saved(tmp_path):
    return save_checkpoint(tmp_path / "c.ckpt", {"model": {"w": np.arange(4.0), "b": np.zeros(2)}, "epoch": 3})


def with_tree(text, tree):
    meta = json.loads(text)
    meta["tree"] = tree
    return json.dumps(meta)


TAMPERED = {
    "missing array": (lambda t: t.replace('"a1"', '"a9"'),
                      r"reference at \['model'\]\['b'\] names 'a9', which the file does not hold"),
    "reference not a string": (lambda t: t.replace('"a1"', '["a1"]'),
                               r"reference at \['model'\]\['b'\] is \['a1'\], not a name"),
    "reference is a number": (lambda t: t.replace('"a1"', "1"), r"reference at \['model'\]\['b'\] is 1, not a name"),
    "tree.json a list": (lambda t: json.dumps([json.loads(t)]), r'tree.json holds \[\{"format".*, not an object'),
    "tree.json a number": (lambda t: "7", r"tree.json holds 7, not an object"),
    "wrong format": (lambda t: t.replace("minidl-checkpoint-1", "minidl-checkpoint-9"),
                     r"format 'minidl-checkpoint-9', expected 'minidl-checkpoint-1'"),
    "format not a string": (lambda t: t.replace('"minidl-checkpoint-1"', "[1]"), r"format \[1\], expected"),
    "no tree": (lambda t: json.dumps({"format": "minidl-checkpoint-1"}), r'tree.json has no "tree"'),
    "not JSON": (lambda t: t[:-5], r"tree.json is not valid JSON"),
    "array at the top, missing": (lambda t: with_tree(t, {"__array__": "zz"}), r"reference at the top names 'zz'"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_tree_is_a_checkpoint_error_naming_file_and_fault(tmp_path, case):
    """The bug report: an edited tree.json gave a raw TypeError or KeyError (or a CheckpointError
    that only repeated the KeyError's key). Each is now a CheckpointError saying what is wrong."""
    edit, fault = TAMPERED[case]
    path = tamper(saved(tmp_path), edit)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))} is not a readable minidl checkpoint: .*{fault}"):
        load_checkpoint(path)


def test_a_deeply_nested_tree_is_a_checkpoint_error(tmp_path):
    """Variant: the tampering arrives as nesting deeper than the JSON reader's recursion (RecursionError before)."""
    path = tamper(saved(tmp_path), lambda t: '{"format": "minidl-checkpoint-1", "tree": '
                                             + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(CheckpointError, match="nests too deeply"):
        load_checkpoint(path)


def test_an_array_header_claiming_more_than_its_entry_is_a_checkpoint_error(tmp_path):
    """Variant: the tampering arrives in a .npy header: shape (2**40,) made numpy allocate 8 TiB
    before reading (a MemoryError). The claim is checked against the entry's size first."""
    path = saved(tmp_path)
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    npy = entries["a0.npy"]  # the header is padded with spaces: the longer shape takes 12 of them
    entries["a0.npy"] = npy.replace(b"'shape': (4,), }" + b" " * 12, b"'shape': (1099511627776,), }", 1)
    assert entries["a0.npy"] != npy and len(entries["a0.npy"]) == len(npy)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    with pytest.raises(CheckpointError, match=r"array a0.npy claims shape \(1099511627776,\) of float64 "
                                              r"\(8796093022208 bytes\), its entry holds 32"):
        load_checkpoint(path)


def test_a_dict_that_would_read_back_as_an_array_is_refused_when_saving(tmp_path):
    with pytest.raises(TypeError, match='only key is "__array__"'):
        save_checkpoint(tmp_path / "c.ckpt", {"meta": {"__array__": "a0"}, "w": np.zeros(2)})
    assert not (tmp_path / "c.ckpt").exists()


def test_untampered_checkpoints_still_load(tmp_path):
    tree = {"model": {"w": np.arange(4.0)}, "nested": [[np.int64(3), None, "s"], {"x": np.zeros((2, 0))}],
            "scalar": np.array(2.5), "__array__x": 1}
    loaded = load_checkpoint(save_checkpoint(tmp_path / "c.ckpt", tree))
    np.testing.assert_array_equal(loaded["model"]["w"], tree["model"]["w"])
    assert loaded["nested"][0] == [3, None, "s"] and loaded["nested"][1]["x"].shape == (2, 0)
    assert loaded["scalar"].shape == () and loaded["scalar"] == 2.5 and loaded["__array__x"] == 1


# ---------------------------------------------------------------- load_state_dict: all or nothing
def make_model():
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def raw_bytes(model):
    """Every parameter and buffer as its bytes: equal means bit for bit unchanged."""
    return {k: (v.dtype, v.numpy().tobytes()) for k, v in model.state_dict().items()}


UNCONVERTIBLE = {  # key (after other keys in the state dict's order) -> a bad value of the right shape
    "string array": ("3.bias", np.array(["a", "b"])),
    "numeric strings": ("3.bias", np.array(["1.0", "2.0"])),
    "object array": ("3.bias", np.array([None, object()])),
    "complex into float32": ("3.bias", np.array([1 + 2j, 3j])),
    "overflows float32": ("3.bias", np.array([1e39, 0.0])),
    "NaN into int64": ("1.num_batches_tracked", np.array(np.nan)),
    "fraction into int64": ("1.num_batches_tracked", np.array(2.5)),
    "out of int64's range": ("1.num_batches_tracked", np.array(2**64 - 1, dtype=np.uint64)),
}


@pytest.mark.parametrize("case", list(UNCONVERTIBLE))
def test_a_failed_load_state_dict_changes_nothing(case):
    """The bug report: one unconvertible value raised after the keys before it were overwritten.
    Every value is now converted and checked first; the model stays bit-for-bit as it was."""
    model = make_model()
    before = raw_bytes(model)
    key, bad = UNCONVERTIBLE[case]
    sd = {k: v.numpy() + 1 for k, v in model.state_dict().items()}  # every other value would change the model
    sd[key] = bad
    with pytest.raises(RuntimeError, match=rf"values that cannot be loaded.*{key}:(.|\n)*model is unchanged"):
        model.load_state_dict(sd)
    assert raw_bytes(model) == before
    del sd[key]
    model.load_state_dict(sd, strict=False)  # without the bad value the rest loads
    assert raw_bytes(model) != before


def test_a_tensor_from_a_vanished_device_fails_the_load_and_changes_nothing(cpu2):
    """Variant: the bad value arrives as a minidl Tensor rather than an array, on a device whose
    backend is gone by the time of the load, and through strict=False."""
    model = make_model()
    before = raw_bytes(model)
    sd = {k: v.numpy() + 1 for k, v in model.state_dict().items()}
    sd["3.weight"] = minidl.tensor(np.zeros((2, 4), np.float32), device=cpu2)
    minidl.backend.unregister_backend(cpu2)
    with pytest.raises(RuntimeError, match=r"3.weight: cannot be read \(ValueError: unknown device 'cpu2'"):
        model.load_state_dict(sd, strict=False)
    assert raw_bytes(model) == before


def test_every_problem_is_reported_at_once():
    model = make_model()
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    sd["0.bias"] = np.zeros(5)
    sd["3.bias"] = np.array(["a", "b"])
    sd["1.num_batches_tracked"] = np.array(0.5)
    with pytest.raises(RuntimeError) as err:
        model.load_state_dict(sd)
    message = str(err.value)
    assert "shape mismatches: 0.bias: checkpoint (5,), model (4,)" in message
    assert "3.bias: holds <U1 values" in message and "1.num_batches_tracked: holds values a int64" in message


def test_learner_load_of_a_checkpoint_that_is_not_a_learners_names_what_it_lacks(tmp_path):
    """A variant of the tampered tree: a valid checkpoint, written by save_checkpoint, not by learn.save."""
    import minidl.nn as nn
    from minidl.data import ArrayDataset, DataLoaders
    from minidl.learn import Learner
    x = np.zeros((8, 3), np.float32)
    learn = Learner(DataLoaders.from_dsets(ArrayDataset(x, np.zeros(8, np.int64)), bs=4), nn.Linear(3, 2),
                    path=tmp_path)
    for tree in ([1, 2], {"weights": {}}, {"model": [1], "opt": None, "epochs_done": 0, "rng": {}}):
        save_checkpoint(tmp_path / "models" / "other.ckpt", tree)
        with pytest.raises(CheckpointError, match="other.ckpt is a minidl checkpoint but not a Learner's"):
            learn.load("other")
