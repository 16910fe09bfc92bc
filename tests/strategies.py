"""Hypothesis strategies for shapes and arrays, shared by every test.

Hypothesis draws the *shapes* (and shrinks them to the smallest failing case);
the *values* come from a numpy generator seeded by a drawn integer, so they are
continuous and free of ties (a tie or a kink such as relu at 0 makes a finite
difference meaningless).
"""
import numpy as np
from hypothesis import strategies as st

side = st.integers(1, 5)


@st.composite
def shapes(draw, min_dims=0, max_dims=4, min_side=1, max_side=5):
    return tuple(draw(st.lists(st.integers(min_side, max_side), min_size=min_dims, max_size=max_dims)))


@st.composite
def broadcastable_shapes(draw, count=2, min_dims=0, max_dims=4):
    """Shapes that broadcast together: each drops leading dims or sets dims to 1."""
    base = draw(shapes(min_dims=min_dims, max_dims=max_dims))
    out = []
    for _ in range(count):
        drop = draw(st.integers(0, len(base)))
        shape = [1 if draw(st.booleans()) and draw(st.booleans()) else n for n in base[drop:]]
        out.append(tuple(shape))
    return out


def _values(rng, shape, kind):
    x = np.asarray(rng.standard_normal(shape))
    if kind == "normal":
        return x
    if kind == "positive":                     # log, sqrt, pow's base
        return np.abs(x) + 0.5
    if kind == "nonzero":                      # abs, relu, division: keep off the kink at 0
        return np.sign(x) * (np.abs(x) + 0.1) + (x == 0) * 0.5
    if kind == "wide":                         # spread out so no two values are close (max, sort)
        return np.asarray(rng.permutation(np.arange(x.size, dtype=np.float64)).reshape(shape) * 0.37 + 0.1 * x)
    raise ValueError(kind)


@st.composite
def arrays(draw, shape, kind="normal", layout=None):
    """A float64 array of ``shape``; ``layout`` (drawn if None) makes it non-contiguous.

    "transposed": the transpose of a contiguous array (strides reversed);
    "strided": every other element of a larger array.
    """
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    layout = layout or draw(st.sampled_from(["contiguous", "transposed", "strided"]))
    if layout == "transposed" and len(shape) >= 2:
        return _values(rng, shape[::-1], kind).T
    if layout == "strided" and len(shape) >= 1:
        wide = shape[:-1] + (2 * shape[-1],)
        return _values(rng, wide, kind)[..., ::2]
    return _values(rng, shape, kind)


@st.composite
def int_arrays(draw, shape, low, high):
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    return rng.integers(low, high, size=shape)
