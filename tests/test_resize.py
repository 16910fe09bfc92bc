"""Resizing: F.interpolate (nearest, bilinear), pixel_shuffle / pixel_unshuffle, ICNR, their layers.

PyTorch picks its source pixels with float32 arithmetic and a few shortcuts, so the nearest
values must equal its own exactly (not approximately) on drawn sizes, up and down, by size or by
non-integer scale factor; the kernels (numpy_ref, C++ on "cpu", CUDA on "emu" and "cuda") must
agree with each other; gradients are checked against finite differences and against PyTorch.
"""
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl.backend import cpu, get_backend, numpy_ref
from minidl.backend.cuda import gpu_count
from minidl.testing import gradcheck

DEVICES = ["emu", pytest.param("cuda", marks=pytest.mark.skipif(
    gpu_count() == 0, reason="no CUDA device visible (tier 3 runs on a machine with a GPU; 'emu' covers these here)"))]
MODES = [("nearest", None), ("bilinear", False), ("bilinear", True)]
# 2.05 and 1.1 hit PyTorch's shortcuts (h == 2H reads i // 2, h == H reads i), which differ from its formula
FACTORS = st.sampled_from([0.3, 0.5, 0.75, 1.1, 1.5, 1.999, 2, 2.05, 2.5, 3, 3.3])


@st.composite
def resize_cases(draw, max_side=9):
    """(x shape, interpolate's size or scale_factor keyword): odd sizes, up and down, non-integer ratios."""
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, max_side)),
             draw(st.integers(1, max_side)))
    if draw(st.booleans()):
        return shape, {"size": (draw(st.integers(1, 2 * max_side)), draw(st.integers(1, 2 * max_side)))}
    factors = (draw(FACTORS), draw(FACTORS))
    if any(math.floor(n * f) < 1 for n, f in zip(shape[2:], factors)):
        factors = (2, 3)
    return shape, {"scale_factor": factors}


def out_size(shape, kw):
    """(h, w) and the per-axis scales that interpolate passes to the kernels."""
    if "size" in kw:
        return kw["size"], (None, None)
    factors = tuple(map(float, kw["scale_factor"]))
    return tuple(math.floor(n * f) for n, f in zip(shape[2:], factors)), factors


def values(shape, seed, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------- PyTorch parity

@pytest.mark.parametrize("mode, align_corners", MODES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=40)
@given(case=resize_cases(), seed=st.integers(0, 2**32 - 1))
def test_interpolate_matches_torch(mode, align_corners, dtype, case, seed):
    torch = pytest.importorskip("torch")
    shape, kw = case
    x = values(shape, seed, dtype)
    ours = minidl.tensor(x, requires_grad=True)
    theirs = torch.tensor(x, requires_grad=True)
    y = F.interpolate(ours, mode=mode, align_corners=align_corners, **kw)
    expected = torch.nn.functional.interpolate(theirs, mode=mode, align_corners=align_corners, **kw)
    assert y.shape == tuple(expected.shape) and y.dtype == dtype
    g = values(y.shape, seed + 1, dtype)
    y.backward(minidl.tensor(g))
    expected.backward(torch.tensor(g))
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    if mode == "nearest":
        np.testing.assert_array_equal(y.numpy(), expected.detach().numpy())  # the same pixels, exactly
    else:
        np.testing.assert_allclose(y.numpy(), expected.detach().numpy(), **tol)
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), **tol)


@settings(max_examples=20)
@given(r=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 5), w=st.integers(1, 5), seed=st.integers(0, 99))
def test_pixel_shuffle_and_unshuffle_match_torch(r, c, h, w, seed):
    torch = pytest.importorskip("torch")
    x = values((2, c * r * r, h, w), seed)
    ours, theirs = minidl.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, expected = F.pixel_shuffle(ours, r), torch.nn.functional.pixel_shuffle(theirs, r)
    np.testing.assert_array_equal(y.numpy(), expected.detach().numpy())
    g = values(y.shape, seed + 1)
    y.backward(minidl.tensor(g))
    expected.backward(torch.tensor(g))
    np.testing.assert_array_equal(ours.grad.numpy(), theirs.grad.numpy())
    back = F.pixel_unshuffle(minidl.tensor(expected.detach().numpy()), r)
    np.testing.assert_array_equal(back.numpy(), torch.nn.functional.pixel_unshuffle(expected.detach(), r).numpy())
    np.testing.assert_array_equal(back.numpy(), x)


# ---------------------------------------------------------------- gradients

@pytest.mark.parametrize("mode, align_corners", MODES)
@settings(max_examples=8)
@given(case=resize_cases(max_side=5), seed=st.integers(0, 99), strided=st.booleans())
def test_interpolate_gradcheck(mode, align_corners, case, seed, strided):
    shape, kw = case
    x = values(shape[:-1] + (2 * shape[-1],), seed)[..., ::2] if strided else values(shape, seed)  # any layout
    gradcheck(lambda t: F.interpolate(t, mode=mode, align_corners=align_corners, **kw),
              minidl.tensor(x, requires_grad=True))


def test_pixel_shuffle_gradcheck():
    x = minidl.tensor(values((2, 8, 3, 2), 0), requires_grad=True)
    gradcheck(lambda t: F.pixel_unshuffle(F.pixel_shuffle(t, 2) * F.pixel_shuffle(t, 2), 2), x)


# ---------------------------------------------------------------- the C++ kernels against the reference

@pytest.mark.skipif(os.environ.get("MINIDL_KERNELS") == "numpy", reason="MINIDL_KERNELS=numpy: no C++ kernels")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=30)
@given(case=resize_cases(max_side=40), seed=st.integers(0, 99), align_corners=st.booleans(), strided=st.booleans())
def test_cpp_kernels_match_the_reference(dtype, case, seed, align_corners, strided):
    shape, kw = case
    size, scales = out_size(shape, kw)
    x = values(shape, seed, dtype)
    x_in = np.asfortranarray(x) if strided else x  # the binding copies what is not C-contiguous
    g = values(shape[:2] + size, seed + 1, dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(cpu.upsample_nearest2d(x_in, size, scales),
                                  numpy_ref.upsample_nearest2d(x, size, scales))
    np.testing.assert_allclose(cpu.upsample_nearest2d_backward(g, shape, scales),
                               numpy_ref.upsample_nearest2d_backward(g, shape, scales), **tol)
    np.testing.assert_allclose(cpu.upsample_bilinear2d(x_in, size, align_corners, scales),
                               numpy_ref.upsample_bilinear2d(x, size, align_corners, scales), **tol)
    np.testing.assert_allclose(cpu.upsample_bilinear2d_backward(g, shape, align_corners, scales),
                               numpy_ref.upsample_bilinear2d_backward(g, shape, align_corners, scales), **tol)


@pytest.mark.skipif(os.environ.get("MINIDL_KERNELS") == "numpy", reason="MINIDL_KERNELS=numpy: no C++ kernels")
def test_cpp_kernels_check_their_maps_and_shapes():
    from minidl import _C
    x, out = np.ones((1, 3, 4), np.float32), np.empty((1, 2, 2), np.float32)
    with pytest.raises(IndexError, match=r"upsample_nearest2d: rows\[1\] = 3 is not in \[0, 3\)"):
        _C.upsample_nearest2d(x, out, np.array([0, 3]), np.array([0, 1]), 1, 3, 4, 2, 2)
    with pytest.raises(ValueError, match=r"upsample_bilinear2d_backward: .*\(2, 3, 5, 5\) -> \(2, 4, 6, 6\)"):
        cpu.upsample_bilinear2d_backward(np.ones((2, 4, 6, 6)), (2, 3, 5, 5), False)


def test_integer_masks_resize_by_nearest():
    mask = np.arange(12).reshape(1, 1, 3, 4)
    y = F.interpolate(minidl.tensor(mask), scale_factor=2)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y.numpy(), mask.repeat(2, 2).repeat(2, 3))


# ---------------------------------------------------------------- the CUDA kernels (emu; cuda where a GPU is)

@pytest.mark.timeout(120, method="thread")
@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=8)
@given(case=resize_cases(), seed=st.integers(0, 99), align_corners=st.booleans())
def test_cuda_kernels_match_the_reference(device, case, seed, align_corners):
    be = get_backend(device)
    shape, kw = case
    size, scales = out_size(shape, kw)
    x, g = values(shape, seed, np.float32), values(shape[:2] + size, seed + 1, np.float32)
    on = be.asarray

    def close(actual, expected):
        np.testing.assert_allclose(be.to_numpy(actual), expected, rtol=1e-5, atol=1e-5)

    np.testing.assert_array_equal(be.to_numpy(be.upsample_nearest2d(on(x.copy()), size, scales)),
                                  numpy_ref.upsample_nearest2d(x, size, scales))
    close(be.upsample_nearest2d_backward(on(g.copy()), shape, scales),
          numpy_ref.upsample_nearest2d_backward(g, shape, scales))
    close(be.upsample_bilinear2d(on(x.copy()), size, align_corners, scales),
          numpy_ref.upsample_bilinear2d(x, size, align_corners, scales))
    close(be.upsample_bilinear2d_backward(on(g.copy()), shape, align_corners, scales),
          numpy_ref.upsample_bilinear2d_backward(g, shape, align_corners, scales))


@pytest.mark.timeout(120, method="thread")
def test_interpolate_on_emu_trains_like_on_cpu():
    x = values((2, 3, 5, 7), 0, np.float32)
    grads = []
    for device in ("cpu", "emu"):
        t = minidl.tensor(x, device=device, requires_grad=True)
        (F.interpolate(t, scale_factor=2.5, mode="bilinear") * 3).sum().backward()
        grads.append(t.grad.numpy())
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- errors a learner can act on

@pytest.mark.parametrize("call, message", [
    (lambda x: F.interpolate(x[0], scale_factor=2), r"interpolate: needs an \(N, C, H, W\) input"),
    (lambda x: F.interpolate(x, size=4, scale_factor=2), "interpolate: give exactly one of size and scale_factor"),
    (lambda x: F.interpolate(x), "interpolate: give exactly one of size and scale_factor"),
    (lambda x: F.interpolate(x, size=4, mode="bicubic"), "interpolate: unknown mode 'bicubic'"),
    (lambda x: F.interpolate(x, size=4, align_corners=True), "interpolate: align_corners is for mode='bilinear'"),
    (lambda x: F.interpolate(x, size=(4, 4, 4)), r"interpolate: size must be a number or a pair \(h, w\)"),
    (lambda x: F.interpolate(x, scale_factor=0.1), r"interpolate: the output size \(0, 0\)"),
    (lambda x: F.pixel_shuffle(x, 2), "pixel_shuffle: .* divisible by r\\*r"),
    (lambda x: F.pixel_unshuffle(x, 2), "pixel_unshuffle: .* divisible by r"),
])
def test_bad_inputs_name_the_op_and_the_fix(call, message):
    x = minidl.randn(1, 3, 5, 5)
    with pytest.raises(ValueError, match=message):
        call(x)


def test_bilinear_needs_floats():
    with pytest.raises(TypeError, match="interpolate: mode='bilinear' needs a float tensor"):
        F.interpolate(minidl.tensor(np.ones((1, 1, 2, 2), np.int64)), size=3, mode="bilinear")


# ---------------------------------------------------------------- layers and ICNR

def test_upsample_and_pixel_shuffle_layers():
    x = minidl.randn(2, 8, 3, 5)
    np.testing.assert_array_equal(nn.Upsample(scale_factor=2)(x).numpy(), F.interpolate(x, scale_factor=2).numpy())
    up = nn.Upsample(size=(7, 4), mode="bilinear", align_corners=True)
    np.testing.assert_array_equal(up(x).numpy(), F.interpolate(x, (7, 4), mode="bilinear", align_corners=True).numpy())
    assert repr(up) == "Upsample(size=(7, 4), mode='bilinear')"
    assert nn.PixelShuffle(2)(x).shape == (2, 2, 6, 10)


@pytest.mark.parametrize("scale", [2, 3])
def test_icnr_makes_the_shuffled_conv_a_nearest_upsample(scale):
    minidl.set_seed(0)
    conv = nn.Conv2d(4, 5 * scale * scale, 3, padding=1, bias=False)
    nn.init.icnr_(conv.weight, scale)
    groups = conv.weight.numpy().reshape(5, scale * scale, -1)
    np.testing.assert_array_equal(groups, np.repeat(groups[:, :1], scale * scale, axis=1))  # one kernel per block
    y = F.pixel_shuffle(conv(minidl.randn(2, 4, 6, 7)), scale)
    coarse = y[:, :, ::scale, ::scale]  # one pixel of each scale x scale block
    # equal up to the last bit (minidl's C++ convolution: exactly; numpy's BLAS may round some rows differently)
    np.testing.assert_allclose(y.numpy(), F.interpolate(coarse, scale_factor=scale).numpy(), rtol=1e-6, atol=1e-6)
    assert float(coarse.std()) > 0.1  # and the kernels are random, not zero


def test_icnr_needs_channels_in_groups_of_scale_squared():
    with pytest.raises(ValueError, match=r"icnr_: .* divisible by scale\^2 = 4"):
        nn.init.icnr_(nn.Conv2d(3, 6, 1).weight)
