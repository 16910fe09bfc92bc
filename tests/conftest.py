"""Shared test set-up: hypothesis profiles, the GPU and slow-test policies, input conversion helpers.

GPU tests skip where the "cuda" device cannot run (tests pick them with ``gpu_count() == 0``).
On a machine that has a GPU, ``MINIDL_REQUIRE_GPU=1 make test`` turns each such skip into a
failure that names the real reason (``cuda_unavailable_reason()``: no CuPy, a driver too old
for the installed CUDA, NVRTC missing, no device), so a broken set-up cannot pass as green.
Tests marked ``slow`` (whole examples on "emu": minutes) run with ``--runslow`` or MINIDL_RUN_SLOW=1.
"""
import os
import re

import pytest
from hypothesis import HealthCheck, settings

import minidl

# "default" is deterministic (the same examples every run) so CI cannot turn red by
# chance; `pytest --hypothesis-profile=explore` searches new examples for longer.
settings.register_profile("default", deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("explore", deadline=None, max_examples=200,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# "sanitizer": few examples, for runs under compute-sanitizer (10 to 100 times slower; make gpu-check).
settings.register_profile("sanitizer", deadline=None, derandomize=True, max_examples=8, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REQUIRE_GPU = os.environ.get("MINIDL_REQUIRE_GPU", "") not in ("", "0")
# How the suite's skips say "no GPU here" (and not "a GPU is visible", which skips CPU-only checks).
GPU_SKIP = re.compile(r"no CUDA device|no GPU|needs a GPU|CUDA device .*unavailable|NVRTC not installed", re.I)
SLOW_SKIP = "slow (minutes): run with --runslow or MINIDL_RUN_SLOW=1"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run the tests marked slow (whole examples on the emu device: minutes)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes long (whole examples on emu); run with --runslow")
    config.addinivalue_line("markers", "cuda: needs the 'cuda' device (a GPU); fails instead of skipping "
                                       "under MINIDL_REQUIRE_GPU=1")


def pytest_report_header(config):
    from minidl.backend.cuda import cuda_unavailable_reason
    reason = cuda_unavailable_reason()
    state = "available" if reason is None else f"unavailable ({reason})"
    return [f"minidl cuda device: {state}" + ("; MINIDL_REQUIRE_GPU=1: GPU skips fail" if REQUIRE_GPU else "")]


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("MINIDL_RUN_SLOW", "") not in ("", "0"):
        return
    skip_slow = pytest.mark.skip(reason=SLOW_SKIP)
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


def is_gpu_test(item, skip_reason=""):
    """A test that needs the GPU: marked cuda, parametrised with device "cuda", or skipped for want of a GPU."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return (item.get_closest_marker("cuda") is not None
            or any(isinstance(value, str) and value == "cuda" for value in params.values())
            or bool(GPU_SKIP.search(skip_reason)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under MINIDL_REQUIRE_GPU=1, a GPU test that skipped is reported as failed, with the real reason."""
    outcome = yield
    report = outcome.get_result()
    if not (REQUIRE_GPU and report.skipped):
        return
    skip_reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr or "")
    if SLOW_SKIP in skip_reason or not is_gpu_test(item, skip_reason):
        return
    from minidl.backend.cuda import cuda_unavailable_reason
    reason = cuda_unavailable_reason()
    if reason is None and not GPU_SKIP.search(skip_reason):
        return   # the GPU works; this "cuda" case skipped for another reason (torch absent, ...)
    reason = reason or "the 'cuda' device looks available, yet the test skipped as if it were not"
    report.outcome = "failed"
    report.longrepr = (f"MINIDL_REQUIRE_GPU=1: this GPU test would have skipped ({skip_reason}).\n"
                       f"The 'cuda' device is unavailable: {reason}")


@pytest.fixture
def cpu2():
    """A second device for a test: the CPU kernels under another name (to test moving and mixing)."""
    minidl.register_backend("cpu2", lambda: minidl.backend.get_backend("cpu"))
    yield "cpu2"
    minidl.backend.unregister_backend("cpu2")
