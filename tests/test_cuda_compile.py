"""Tier 1: every CUDA kernel file compiles with NVRTC for Ampere (sm_80) and Hopper (sm_90).

No GPU or driver is needed (cupy.cuda.nvrtc only); skipped where CuPy / NVRTC is not
installed (`pip install -e .[cuda]` installs both).
"""
import re

import pytest

from minidl.backend import emu
from minidl.backend.cuda import CUDA_DIR, nvrtc_compile

CU_FILES = sorted(CUDA_DIR.glob("*.cu"))


def nvrtc_available():
    try:
        from cupy.cuda import nvrtc
        nvrtc.getVersion()
        return True
    except Exception:
        return False


needs_nvrtc = pytest.mark.skipif(not nvrtc_available(), reason="NVRTC not installed: pip install -e .[cuda]")


def test_the_kernel_files_exist():
    assert {p.stem for p in CU_FILES} >= {"matmul", "conv", "pool", "reduce", "softmax", "batchnorm",
                                          "elementwise", "embedding", "optim"}


@needs_nvrtc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("path", CU_FILES, ids=lambda p: p.name)
def test_compiles_with_nvrtc(path, arch):
    cubin = nvrtc_compile(path, arch)
    assert cubin[:4] == b"\x7fELF"  # a cubin is an ELF file
    for name in emu.kernel_names(path.read_text()):  # every kernel is in it, by its unmangled name
        assert name.encode() in cubin


@needs_nvrtc
def test_a_compile_error_shows_nvrtcs_log(tmp_path):
    bad = tmp_path / "bad.cu"
    bad.write_text('extern "C" __global__ void k(float* x) { x[0] = undefined_name; }\n')
    with pytest.raises(RuntimeError, match="undefined_name"):
        nvrtc_compile(bad, "sm_80")


@pytest.mark.parametrize("path", CU_FILES, ids=lambda p: p.name)
def test_each_file_has_its_header(path):
    """Each kernel file opens with what it computes, its launch shape, its cost and its test."""
    head = path.read_text().split("\n\n")[0]
    assert head.startswith(f"// {path.name}:")
    for word in ("Launch:", "Cost:", "Test:"):
        assert word in head, f"{path.name}'s header comment lacks {word!r}"
    assert re.search(r'extern "C" __global__', path.read_text())
