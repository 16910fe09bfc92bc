"""Every op's values and gradients equal PyTorch's (float64 tightly, float32 loosely, dtype kept).

Skipped when torch is not installed (`make test` never installs it; .ci/run does).
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minidl
import minidl.nn.functional as F
from tests.helpers import as_tuple, to_minidl, to_torch
from tests.op_specs import SPECS

torch = pytest.importorskip("torch")


def forward_backward(lib, F_, tensors, fn):
    """Outputs and the gradients of sum(w * output) with fixed random weights w."""
    outs = as_tuple(fn(lib, F_, *tensors))
    rng = np.random.default_rng(1)
    loss = 0
    for o in outs:
        w = rng.standard_normal(tuple(o.shape)).astype(np.dtype(str(o.dtype).replace("torch.", "")))
        loss = loss + (o * lib.tensor(w)).sum()
    loss.backward()
    values = [np.asarray(o.detach().numpy()) for o in outs]
    grads = [np.asarray(t.grad.numpy()) if t.grad is not None else None
             for t in tensors if hasattr(t, "requires_grad") and t.requires_grad]
    return values, grads, [o.dtype for o in outs]


@pytest.mark.parametrize("spec", [s for s in SPECS if s.torch], ids=lambda s: s.name)
def test_matches_torch(spec):
    @settings(max_examples=spec.examples)
    @given(data=st.data())
    def check(data):
        drawn = spec.draw_inputs(data)
        for dtype, rtol, atol in ((np.float64, 1e-7, 1e-9), (np.float32, 2e-4, 2e-5)):
            ours = forward_backward(minidl, F, to_minidl(drawn, dtype), spec.fn)
            theirs = forward_backward(torch, torch.nn.functional, to_torch(drawn, dtype), spec.fn)
            for a, b in zip(ours[0], theirs[0]):
                np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"{spec.name}: values")
            for a, b in zip(ours[1], theirs[1]):
                np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"{spec.name}: gradients")
            for ours_dtype, a in zip(ours[2], ours[0]):
                assert ours_dtype == a.dtype
                if a.dtype.kind == "f":
                    assert a.dtype == dtype, f"{spec.name}: {dtype.__name__} inputs gave a {a.dtype} output"
    check()
