"""Gradient clipping: nn.clip_grad_norm_ against PyTorch's, and the Learner's GradientClip callback."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minidl
import minidl.nn as nn
from minidl.learn import GradientClip, Learner

torch = pytest.importorskip("torch")


@settings(max_examples=30, deadline=None)
@given(shapes=st.lists(st.sampled_from([(3, 4), (5,), (1,), (2, 3, 2)]), min_size=1, max_size=4),
       scale=st.sampled_from([1e-3, 1.0, 30.0]), max_norm=st.sampled_from([0.1, 1.0, 100.0]),
       norm_type=st.sampled_from([2.0, math.inf]), seed=st.integers(0, 1000))
def test_clip_grad_norm_matches_pytorch(shapes, scale, max_norm, norm_type, seed):
    rng = np.random.default_rng(seed)
    grads = [rng.standard_normal(s) * scale for s in shapes]
    ours = [nn.Parameter(minidl.zeros(*s, dtype=np.float64)) for s in shapes]
    theirs = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in shapes]
    for p, q, g in zip(ours, theirs, grads):
        p.grad, q.grad = minidl.tensor(g), torch.tensor(g)
    ours.append(nn.Parameter(minidl.zeros(2, dtype=np.float64)))   # no gradient: left alone, not counted
    total = nn.clip_grad_norm_(ours, max_norm, norm_type)
    want = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert float(total) == pytest.approx(float(want), rel=1e-12)
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-12)
    assert ours[-1].grad is None


def test_clip_grad_norm_on_a_device_reads_nothing_back(monkeypatch):
    from minidl.backend import get_backend
    backend = get_backend("emu")
    params = [nn.Parameter(minidl.zeros(3, 4, device="emu")), nn.Parameter(minidl.zeros(5, device="emu"))]
    for p in params:
        p.grad = minidl.ones(*p.shape, device="emu") * 2
    reads = []
    monkeypatch.setattr(backend, "to_numpy", lambda a, f=backend.to_numpy: reads.append(1) or f(a))
    total = nn.clip_grad_norm_(params, 1.0)
    assert reads == [] and total.device == "emu"
    monkeypatch.undo()
    assert float(total) == pytest.approx(2 * math.sqrt(17), rel=1e-6)
    assert float(np.sqrt(sum((p.grad.numpy() ** 2).sum() for p in params))) == pytest.approx(1.0, rel=1e-5)


def test_clip_grad_norm_errors():
    p = nn.Parameter(minidl.zeros(2))
    with pytest.raises(ValueError, match="clip_grad_norm_: no parameter has a gradient"):
        nn.clip_grad_norm_([p], 1.0)
    p.grad = minidl.ones(2)
    with pytest.raises(ValueError, match="max_norm must be a positive number"):
        nn.clip_grad_norm_(p, 0.0)
    with pytest.raises(ValueError, match="norm_type must be 2.0 or math.inf"):
        nn.clip_grad_norm_(p, 1.0, norm_type=1.0)


def test_gradient_clip_callback_bounds_every_step(tmp_path):
    """A regression whose targets are 1000x the inputs: unclipped, the first step's gradient is huge; with
    GradientClip(0.5) each step moves the weights by at most lr * 0.5 (plain SGD)."""
    from minidl.data import ArrayDataset, DataLoaders
    from minidl.optim import SGD
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    y = (x @ np.array([[1000.0], [-500.0], [200.0]])).astype(np.float32)
    dls = DataLoaders.from_dsets(ArrayDataset(x, y), ArrayDataset(x[:8], y[:8]), bs=16)
    norms = []

    class Steps(GradientClip):
        def before_step(self):
            super().before_step()
            norms.append(math.sqrt(sum(float((p.grad * p.grad).sum()) for p in self.learn.model.parameters())))

    learn = Learner(dls, nn.Linear(3, 1), loss_func=nn.MSELoss(), opt_func=SGD, lr=0.1, cbs=[Steps(0.5)],
                    path=tmp_path)
    learn.show_progress = False
    learn.fit(1)
    assert len(norms) == 4 and max(norms) == pytest.approx(0.5, rel=1e-4)
