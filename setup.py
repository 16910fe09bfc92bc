"""Builds minidl._C, the hand-written C++ kernels of csrc/cpu (metadata: pyproject.toml).

    pip install -e ".[dev]"       # or: make test
    MINIDL_NATIVE=1 pip install -e .   # tune for this machine's CPU (-march=native)

The build is portable by default: the hot loops are compiled for AVX-512, AVX2 and plain
x86-64 and the best one is picked at import time (GCC target_clones, csrc/cpu/compiler.h), so
no -march flag is needed for speed. The files compile in parallel (NPY_NUM_BUILD_JOBS, default:
the number of cores).
"""
import os
import sys
from glob import glob

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension
from setuptools import setup

compile_args = ["-O3", "-ffp-contract=fast",  # fuse a*b+c into FMAs (-std=c++17 turns it off)
                "-fno-math-errno",  # lets std::sqrt vectorize (optim.cpp); no kernel reads errno
                "-fno-trapping-math"]  # lets loops with selects vectorize (exp_poly.h's range checks: softmax,
                                       # lstm.cpp): GCC would not compute a branch's float math unconditionally
                                       # in case it raised a floating-point trap, which no kernel enables
link_args = []
if sys.platform != "win32":
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")
if os.environ.get("MINIDL_NATIVE") == "1":
    compile_args.append("-march=native")

ParallelCompile("NPY_NUM_BUILD_JOBS", default=os.cpu_count() or 1).install()

sources = sorted(glob("csrc/cpu/*.cpp"))
ext = Pybind11Extension(
    "minidl._C",
    sources,
    include_dirs=["csrc/cpu"],
    depends=sorted(glob("csrc/cpu/*.h") + glob("csrc/common/*.h")),  # csrc/common: shared with the CUDA kernels
    cxx_std=17,
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

setup(ext_modules=[ext])
