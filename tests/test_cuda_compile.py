"""Tier 1: every CUDA kernel file compiles with NVRTC for Ampere (sm_80) and Hopper (sm_90).

No GPU or driver is needed (cupy.cuda.nvrtc only); skipped where CuPy / NVRTC is not
installed (`pip install -e .[cuda]` installs both).
"""
import os
import re
import shutil
import subprocess

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


NVCC = shutil.which("nvcc") or ("/usr/local/bin/nvcc" if os.path.exists("/usr/local/bin/nvcc") else None)


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed (NVRTC above still compiles every file)")
@pytest.mark.parametrize("path", CU_FILES, ids=lambda p: p.name)
def test_no_register_spills(path, tmp_path):
    """ptxas's resource report (nvcc -Xptxas -v): no kernel spills registers to local memory.

    A spill means the register-blocked tiles (or an unrolled loop) no longer fit in
    registers and every access goes through slow local memory: a silent 2-10x slowdown.
    """
    result = subprocess.run([NVCC, "-cubin", "-arch=sm_80", "-std=c++17", f"-I{CUDA_DIR}", "-Xptxas", "-v",
                             "-o", str(tmp_path / "out.cubin"), str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = result.stderr
    kernels = emu.kernel_names(path.read_text())
    assert all(f"entry function '{k}'" in report for k in kernels), report
    spills = re.findall(r"(\d+) bytes spill stores", report)
    assert spills and all(s == "0" for s in spills), report


def enum_names(filename, prefix):
    """The names of the C enum in csrc/cuda/<filename> whose members start with prefix, in order."""
    text = (CUDA_DIR / filename).read_text()
    body = re.search(r"enum\s*\{([^}]*\b%s\w*[^}]*)\}" % prefix, text)[1]
    return [name.strip() for name in body.split(",") if name.strip()]


def test_op_codes_match_the_kernels_enums():
    """cuda.py passes op codes as ints: its tables must list the ops in the enums' order."""
    from minidl.backend import cuda
    assert [f"UNARY_{op.upper()}" for op in cuda.UNARY] == enum_names("elementwise.cu", "UNARY_")
    binary = enum_names("elementwise.cu", "BINARY_")
    assert len(binary) == len(cuda.BINARY)
    for op, enum in zip(cuda.BINARY, binary):  # maximum / BINARY_MAX, power / BINARY_POW, ...
        assert op.startswith(enum.removeprefix("BINARY_").lower()), (op, enum)
    assert [f"REDUCE_{op.upper()}" for op in cuda.REDUCE] == enum_names("block_reduce.cuh", "REDUCE_")
    assert enum_names("softmax.cu", "SOFTMAX") == ["SOFTMAX", "LOG_SOFTMAX", "LOGSUMEXP"]
    assert (cuda.SOFTMAX, cuda.LOG_SOFTMAX, cuda.LOGSUMEXP) == (0, 1, 2)


def test_module_source_pastes_the_headers_in(tmp_path, monkeypatch):
    """CuPy caches a module by its source string: the "cuda" device's source (module_source) carries
    the headers' text, so an edited header is a new source, never a stale cached cubin."""
    from minidl.backend import cuda
    source = cuda.module_source("batchnorm")
    assert '#include "block_reduce.cuh"' not in source and '#include "../common/activation.h"' not in source
    assert "__device__ float block_reduce(" in source and "#pragma once" not in source
    assert cuda.module_source("conv").count("__device__ float block_reduce(") == 1  # pasted once
    # the same files in a copy, then one header edited: the source changes with it
    (tmp_path / "cuda").mkdir()
    (tmp_path / "common").mkdir()
    for path in CUDA_DIR.glob("*.cu*"):
        (tmp_path / "cuda" / path.name).write_text(path.read_text())
    for path in cuda.COMMON_DIR.glob("*.h"):
        (tmp_path / "common" / path.name).write_text(path.read_text())
    monkeypatch.setattr(cuda, "CUDA_DIR", tmp_path / "cuda")
    monkeypatch.setattr(cuda, "COMMON_DIR", tmp_path / "common")
    assert cuda.module_source("batchnorm") == source
    header = tmp_path / "cuda" / "block_reduce.cuh"
    header.write_text(header.read_text() + "\n// an edit\n")
    assert cuda.module_source("batchnorm") != source and "// an edit" in cuda.module_source("batchnorm")
    common = tmp_path / "common" / "activation.h"
    common.write_text(common.read_text() + "\n// another edit\n")
    assert "// another edit" in cuda.module_source("batchnorm")


@needs_nvrtc
@pytest.mark.parametrize("path", CU_FILES, ids=lambda p: p.name)
def test_module_source_compiles_without_its_headers(path):
    """What the "cuda" device hands CuPy compiles alone: every local #include was pasted."""
    from cupy.cuda import nvrtc
    from minidl.backend.cuda import module_source
    program = nvrtc.createProgram(module_source(path.stem), path.name, [], [])
    try:
        nvrtc.compileProgram(program, ["--gpu-architecture=sm_80", "-std=c++17"])
    finally:
        nvrtc.destroyProgram(program)
