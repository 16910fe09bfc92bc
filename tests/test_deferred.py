"""Index checks on a device wait for the next read of values (minidl/deferred.py): no host round trip per
call, and still a readable error before any number it would explain. Run on "emu" (cuda's host code) and
on "cuda" where a GPU is visible."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl import deferred
from minidl.backend import get_backend
from minidl.backend.cuda import gpu_count

DEVICES = ["emu", pytest.param("cuda", marks=pytest.mark.skipif(
    gpu_count() == 0, reason="no CUDA device visible ('emu' runs these here)"))]


@pytest.fixture(autouse=True)
def nothing_pending():
    deferred.run_pending()
    yield
    deferred._pending.clear()


def host_reads(monkeypatch, device):
    """The list that every copy of a device's values to the host appends to."""
    backend, reads = get_backend(device), []
    to_numpy = backend.to_numpy

    def counted(a):
        reads.append(getattr(a, "shape", None))
        return to_numpy(a)
    monkeypatch.setattr(backend, "to_numpy", counted)
    return reads


def test_on_the_cpu_a_bad_index_is_an_error_at_the_call():
    with pytest.raises(IndexError, match=r"embedding: ids range over \[-1, 7\], but the table has 6 rows"):
        F.embedding(minidl.tensor([0, 7, -1]), minidl.randn(6, 3))
    with pytest.raises(IndexError, match=r"cross_entropy: targets must be class indices in \[0, 3\], got values "
                                          r"in \[0, 4\]"):
        F.cross_entropy(minidl.randn(3, 4), minidl.tensor([0, 4, 3]))
    assert not deferred._pending


@pytest.mark.parametrize("device", DEVICES)
def test_on_a_device_the_error_comes_at_the_next_read(device, monkeypatch):
    reads = host_reads(monkeypatch, device)
    weight = minidl.randn(6, 3, device=device)
    out = F.embedding(minidl.tensor([0, 7, -1], device=device), weight)     # no error, and no read, yet
    loss = F.cross_entropy(minidl.randn(3, 4, device=device), minidl.tensor([0, 1, 3], device=device))
    assert reads == [] and len(deferred._pending) == 2
    with pytest.raises(IndexError, match=r"embedding: ids range over \[-1, 7\], but the table has 6 rows.*\n"
                                         r"\(On a device this check waits for the next read of values"):
        loss.item()                         # any read of values: the embedding's error, before the loss
    assert reads == [(), (4,)] and not deferred._pending  # the loss's read began with both checks, in one copy
    assert np.isnan(out.numpy()[1:]).all()             # the kernel wrote NaN, it read nothing out of the table
    assert np.isfinite(loss.item())                     # the good check passed; reads go on


@pytest.mark.parametrize("device", DEVICES)
def test_cross_entropy_and_its_ignore_index_on_a_device(device, monkeypatch):
    reads = host_reads(monkeypatch, device)
    logits = minidl.randn(5, 3, device=device, requires_grad=True)
    target = minidl.tensor([0, 255, 2, 255, 1], device=device)
    loss = nn.CrossEntropyLoss(ignore_index=255)(logits, target)     # masked on the device, no count read
    loss.backward()
    assert reads == []
    host = nn.CrossEntropyLoss(ignore_index=255)(logits.detach().to("cpu"), target.to("cpu"))
    assert loss.item() == pytest.approx(host.item(), rel=1e-6)
    assert nn.CrossEntropyLoss(ignore_index=255)(logits, minidl.tensor([255] * 5, device=device)).item() == 0
    F.cross_entropy(logits, minidl.tensor([0, 3, 2, 0, 1], device=device))
    with pytest.raises(IndexError, match=r"cross_entropy: targets must be class indices in \[0, 2\], got values "
                                         r"in \[0, 3\]"):
        logits.numpy()


@pytest.mark.parametrize("device", DEVICES)
def test_a_training_step_reads_nothing_back(device, monkeypatch):
    """Embeddings, dropout and cross-entropy, forward, backward and Adam: not one copy to the host."""
    minidl.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 8), nn.Dropout(0.3), nn.Flatten(), nn.Linear(32, 3)).to(device)
    opt = minidl.optim.Adam(model.parameters(), lr=1e-2)
    ids, target = minidl.randint(0, 50, (16, 4), device=device), minidl.randint(0, 3, (16,), device=device)
    reads = host_reads(monkeypatch, device)
    for _ in range(3):
        loss = F.cross_entropy(model(ids), target)
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert reads == []
    loss.item()
    assert reads == [(), (12,)]     # the loss's read, which first reads the three steps' six checks (a min and a
                                    # max each) in one copy


def test_checks_are_read_after_max_pending_even_without_a_read(monkeypatch):
    monkeypatch.setattr(deferred, "MAX_PENDING", 4)
    ids, weight = minidl.tensor([1, 2], device="emu"), minidl.randn(6, 3, device="emu")
    for _ in range(3):
        F.embedding(ids, weight)
    assert len(deferred._pending) == 3
    with pytest.raises(IndexError, match=r"up to 4 checks after the embedding call"):
        F.embedding(minidl.tensor([9], device="emu"), weight)
    assert not deferred._pending


def test_a_learner_stops_at_a_bad_target_with_the_index_error(tmp_path):
    """On a device the Learner's first read of losses raises the target's IndexError, not a NaN's."""
    from minidl.data import ArrayDataset, DataLoaders
    from minidl.learn import Learner
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    y[70] = 2                                       # batch 2 of 32: a class the model has no output for
    dls = DataLoaders.from_dsets(ArrayDataset(x[:160], y[:160]), ArrayDataset(x[160:], y[160:]), bs=32,
                                 device="emu")
    learn = Learner(dls, nn.Sequential(nn.Linear(8, 2)), lr=1e-2, path=tmp_path)
    learn.show_progress = False
    with pytest.raises(IndexError, match=r"cross_entropy: targets must be class indices in \[0, 1\], got values "
                                         r"in \[0, 2\]"):
        learn.fit(1)
