"""Shared test set-up: hypothesis profiles and input conversion helpers."""
import os

import pytest
from hypothesis import HealthCheck, settings

import minidl

# "default" is deterministic (the same examples every run) so CI cannot turn red by
# chance; `pytest --hypothesis-profile=explore` searches new examples for longer.
settings.register_profile("default", deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("explore", deadline=None, max_examples=200,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def cpu2():
    """A second device for a test: the CPU kernels under another name (to test moving and mixing)."""
    minidl.register_backend("cpu2", lambda: minidl.backend.get_backend("cpu"))
    yield "cpu2"
    minidl.backend.unregister_backend("cpu2")
