"""Every differentiable op's backward agrees with finite differences (float64, hypothesis shapes)."""
import pytest
from hypothesis import given, settings, strategies as st

import minidl
import minidl.nn.functional as F
from minidl.testing import gradcheck
from tests.helpers import to_minidl
from tests.op_specs import SPECS


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_gradcheck(spec):
    @settings(max_examples=spec.examples)
    @given(data=st.data())
    def check(data):
        inputs = to_minidl(spec.draw_inputs(data))
        gradcheck(lambda *xs: spec.fn(minidl, F, *xs), *inputs)
    check()
