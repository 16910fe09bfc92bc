"""The records the host code shares with the C++ and CUDA kernels (minidl/backend/kernel_types.py):
the conv geometry, computed once per call, and the activation table, each in one place.

The Python records mirror csrc/common/conv_geometry.h and csrc/common/activation.h field for
field and code for code; the geometry's output size is numpy_ref's, on odd shapes; every kernel
that takes the record gives an output of the record's shape.
"""
import os
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minidl
import minidl.nn.functional as F
from minidl import ops
from minidl.backend import get_backend, numpy_ref
from minidl.backend.kernel_types import (ACTIVATION_CODES, ACTIVATIONS, ConvGeometry, activation_code,
                                         conv_geometry, pool_geometry)

COMMON = Path(__file__).resolve().parents[1] / "csrc" / "common"
CPP = os.environ.get("MINIDL_KERNELS") != "numpy"


def test_the_geometry_has_the_headers_fields_in_order():
    text = (COMMON / "conv_geometry.h").read_text()
    body = re.search(r"struct ConvGeometryOf \{(.*?)\};", text, re.S)[1]
    body = re.sub(r"//[^\n]*", "", body)
    fields = [name.strip() for decl in body.split(";") if decl.strip() for name in decl.replace("Int", "").split(",")]
    assert tuple(fields) == ConvGeometry._fields


def test_the_activation_names_follow_the_headers_codes():
    text = (COMMON / "activation.h").read_text()
    body = re.search(r"enum Activation \{([^}]*)\}", text)[1]
    codes = {name.strip(): int(code) for name, code in (item.split("=") for item in body.split(","))}
    assert codes == {"ACT_NONE": 0, "ACT_RELU": 1, "ACT_RELU6": 2}
    assert {f"ACT_{(name or 'none').upper()}": code for name, code in ACTIVATION_CODES.items()} == codes
    assert tuple(ops.norm.ACTIVATIONS) == ACTIVATIONS  # the ops batch_norm applies in training: the same names


def test_an_unknown_activation_is_an_error_naming_the_op():
    assert [activation_code("op", a) for a in ACTIVATIONS] == [0, 1, 2]
    with pytest.raises(ValueError, match=r"channel_affine: activation must be one of \[None, 'relu', 'relu6'\], "
                                         r"got 'gelu'"):
        activation_code("channel_affine", "gelu")
    with pytest.raises(ValueError, match="got 1"):
        activation_code("channel_affine", 1)  # a code is not a name


conv_cases = st.fixed_dictionaries(dict(
    N=st.integers(1, 3), groups=st.sampled_from([1, 2, 3]), C_per_group=st.integers(1, 3), O_per_group=st.integers(1, 3),
    H=st.integers(1, 13), W=st.integers(1, 13), kh=st.integers(1, 5), kw=st.integers(1, 5),
    sh=st.integers(1, 3), sw=st.integers(1, 3), ph=st.integers(0, 2), pw=st.integers(0, 2),
    dh=st.integers(1, 3), dw=st.integers(1, 3)))


@settings(max_examples=80, deadline=None)
@given(case=conv_cases, seed=st.integers(0, 2**32 - 1))
def test_the_geometry_gives_numpy_refs_output_shape_on_odd_shapes(case, seed):
    c = case
    C, O = c["C_per_group"] * c["groups"], c["O_per_group"] * c["groups"]
    x_shape, w_shape = (c["N"], C, c["H"], c["W"]), (O, c["C_per_group"], c["kh"], c["kw"])
    stride, padding, dilation = (c["sh"], c["sw"]), (c["ph"], c["pw"]), (c["dh"], c["dw"])
    g = conv_geometry(x_shape, w_shape, stride, padding, dilation, c["groups"])
    assert (g.N, g.C, g.H, g.W, g.O, g.kh, g.kw, g.groups) == (*x_shape, O, c["kh"], c["kw"], c["groups"])
    if g.OH < 1 or g.OW < 1:
        assert "does not fit" in g.problem()
        return
    assert g.problem() is None
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    out = numpy_ref.conv2d(x, w, stride, padding, dilation, c["groups"])
    assert out.shape == (g.N, g.O, g.OH, g.OW)
    backend = get_backend("cpu")  # the C++ kernels take the record: the same shapes, the same values
    np.testing.assert_allclose(backend.conv2d(x, w, stride, padding, dilation, c["groups"]), out, rtol=1e-10, atol=1e-10)
    grad = rng.standard_normal(out.shape)
    assert backend.conv2d_backward_data(grad, w, x_shape, stride, padding, dilation, c["groups"]).shape == x_shape
    assert backend.conv2d_backward_weight(grad, x, w_shape, stride, padding, dilation, c["groups"]).shape == w_shape
    # pooling: the same formula, O == C, one group
    p = pool_geometry(x_shape, (c["kh"], c["kw"]), stride, padding, dilation)
    assert (p.O, p.groups, p.OH, p.OW) == (C, 1, g.OH, g.OW)
    ref, _ = numpy_ref.max_pool2d(x, (c["kh"], c["kw"]), stride, padding, dilation)
    assert ref.shape == (p.N, p.C, p.OH, p.OW)
    assert backend.max_pool2d(x, (c["kh"], c["kw"]), stride, padding, dilation)[0].shape == ref.shape


def test_the_geometry_names_what_no_convolution_can_do():
    ok = conv_geometry((1, 4, 5, 5), (2, 4, 3, 3), (1, 1), (0, 0), (1, 1), 1)
    assert ok.problem() is None and (ok.OH, ok.OW) == (3, 3) and not ok.empty()
    assert "does not fit the padded input (output would be -1 x -1)" in \
        conv_geometry((1, 4, 5, 5), (2, 4, 7, 7), (1, 1), (0, 0), (1, 1), 1).problem()
    assert "must both divide by groups=3" in conv_geometry((1, 4, 5, 5), (3, 1, 3, 3), (1, 1), (0, 0), (1, 1), 3).problem()
    assert "padding (-1, 0) >= 0" in conv_geometry((1, 4, 5, 5), (2, 4, 3, 3), (1, 1), (-1, 0), (1, 1), 1).problem()
    assert conv_geometry((0, 4, 5, 5), (2, 4, 3, 3), (1, 1), (0, 0), (1, 1), 1).empty()


def test_ops_check_the_same_geometry():
    x = minidl.tensor(np.zeros((1, 4, 5, 5), np.float32))
    with pytest.raises(ValueError, match="conv2d: a 7x7 kernel .* does not fit the padded 5x5 input"):
        F.conv2d(x, minidl.tensor(np.zeros((2, 4, 7, 7), np.float32)))
    with pytest.raises(ValueError, match=r"max_pool2d: kernel \(7, 7\) does not fit"):
        F.max_pool2d(x, 7)


@pytest.mark.skipif(not CPP, reason="MINIDL_KERNELS=numpy: the C++ kernels are not in use")
def test_the_cpp_kernels_take_the_record_and_nothing_else():
    from minidl import _C
    x = np.zeros((1, 4, 5, 5), np.float32)
    g = conv_geometry(x.shape, (2, 4, 3, 3), (1, 1), (0, 0), (1, 1), 1)
    out = np.full((1, 2, 3, 3), np.nan, np.float32)
    _C.conv2d(x, np.ones((2, 4, 3, 3), np.float32), out, g)
    np.testing.assert_array_equal(out, 0)
    with pytest.raises(TypeError, match=r"conv2d: geometry must be a minidl.backend.kernel_types.ConvGeometry \(16 ints\)"):
        _C.conv2d(x, np.ones((2, 4, 3, 3), np.float32), out, tuple(g)[:14])


def test_the_cuda_host_code_passes_the_record_as_int32s_in_order():
    from minidl.backend.cuda import Launcher
    g = pool_geometry((2, 3, 7, 9), (3, 2), (2, 1), (1, 0), (1, 2))
    host = Launcher("test", np, load_module=None, max_blocks=1)
    array = host.geometry_array(g)
    assert array.dtype == np.int32 and array.tolist() == list(g)
    assert dict(zip(ConvGeometry._fields, array.tolist()))["OW"] == numpy_ref.conv_out_size(9, 2, 1, 0, 2)
