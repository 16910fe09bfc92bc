"""The "emu" device's engine: csrc/cuda/*.cu compiled with g++ and run on the CPU.

``load_module("matmul")`` compiles csrc/cuda/matmul.cu against the emulation header
csrc/emu/cuda_emu.h (see its comment for how threads, blocks, barriers, shared memory,
atomics and shuffles are emulated), caches the shared library by a hash of its
sources, and returns an object with CuPy's ``RawModule`` interface:

    kernel = load_module("matmul").get_function("matmul_naive")
    kernel(grid, block, (a, b, c, np.int32(M), ...), shared_mem=0)

Arrays are numpy arrays (their data pointer is passed); scalars must be numpy
scalars (np.int32, np.int64, np.float32) so that their C type is explicit, and the
launch checks each one's size against the kernel's parameter. So cuda.py's host
code runs unchanged on both devices; only the array module and this loader differ.
"""
import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CUDA_DIR = ROOT / "csrc" / "cuda"
COMMON_DIR = ROOT / "csrc" / "common"  # headers shared by the CUDA and the C++ kernels
EMU_HEADER = ROOT / "csrc" / "emu" / "cuda_emu.h"
CXX_FLAGS = ["-std=c++20", "-O2", "-fPIC", "-shared", "-pthread", "-w"]
# MINIDL_EMU_SANITIZE=thread builds the kernels with ThreadSanitizer, which reports two
# threads touching the same memory without a barrier between them (a missing
# __syncthreads). The Python process must then start with the TSan runtime preloaded:
#   LD_PRELOAD=$(g++ -print-file-name=libtsan.so) MINIDL_EMU_SANITIZE=thread python ...
SANITIZE_FLAGS = {"": [], "thread": ["-fsanitize=thread", "-g"]}


def cxx_flags():
    """The g++ flags for building a kernel module, plus ThreadSanitizer's when MINIDL_EMU_SANITIZE=thread."""
    choice = os.environ.get("MINIDL_EMU_SANITIZE", "")
    if choice not in SANITIZE_FLAGS:
        raise ValueError(f"MINIDL_EMU_SANITIZE={choice!r}: use 'thread' (ThreadSanitizer) or leave it unset")
    return CXX_FLAGS + SANITIZE_FLAGS[choice]

KERNEL_NAME = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(')
DYNAMIC_SHARED = re.compile(r'extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([\w ]+?)\s+(\w+)\s*\[\s*\]\s*;')

_modules = {}


def cache_dir():
    """Where compiled modules live: $MINIDL_CACHE/emu, else ~/.cache/minidl/emu."""
    base = os.environ.get("MINIDL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "minidl")
    return Path(base) / "emu"


def kernel_names(source):
    """The ``extern "C" __global__`` kernels a .cu source defines, in order."""
    return KERNEL_NAME.findall(source)


def translate(source, filename):
    """The C++ that g++ compiles: the header, the .cu source, one export per kernel.

    The one rewrite: ``extern __shared__ T name[];`` becomes a pointer to the launch's
    dynamic shared memory (C++ has no way to declare it). ``#line`` keeps g++'s errors,
    and the line numbers in the emulator's messages, pointing at the .cu file.
    """
    body = DYNAMIC_SHARED.sub(lambda m: f"{m[1]}* {m[2]} = reinterpret_cast<{m[1]}*>(emu::dynamic_shared());",
                              source)
    exports = "\n".join(f"EMU_EXPORT({name})" for name in kernel_names(source))
    return f'#include "{EMU_HEADER}"\n#line 1 "{filename}"\n{body}\n{exports}\n'


def compile_module(path):
    """Compile one .cu file for the emulator (or find it in the cache); returns the .so path."""
    path = Path(path)
    cpp = translate(path.read_text(), str(path))
    # what the .cu may #include: csrc/cuda/*.cuh, and csrc/common/*.h as "../common/<name>" (found through -I CUDA_DIR)
    headers = "".join(h.read_text() for h in sorted(CUDA_DIR.glob("*.cuh")) + sorted(COMMON_DIR.glob("*.h")))
    flags = cxx_flags()
    digest = hashlib.sha256((cpp + headers + EMU_HEADER.read_text() + " ".join(flags)).encode()).hexdigest()[:16]
    out_dir = cache_dir()
    library = out_dir / f"{path.stem}-{digest}.so"
    if library.exists():
        return library
    out_dir.mkdir(parents=True, exist_ok=True)
    # Build under a temporary name and rename: a concurrent test process never sees half a file.
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        source = Path(tmp) / f"{path.stem}.cpp"
        source.write_text(cpp)
        partial = Path(tmp) / library.name
        try:
            result = subprocess.run(["g++", *flags, f"-I{CUDA_DIR}", str(source), "-o", str(partial)],
                                    capture_output=True, text=True)
        except FileNotFoundError:
            raise RuntimeError("the 'emu' device compiles the CUDA kernels with g++ (C++20, GCC 11 or newer), "
                               "which is not installed (apt install g++)") from None
        if result.returncode != 0:
            raise RuntimeError(f"emu: g++ could not compile {path.name} against {EMU_HEADER.name}:\n{result.stderr}")
        os.replace(partial, library)
    return library


class EmuError(RuntimeError):
    """A kernel failed on the emulator: a divergent __syncthreads, a deadlock, bad arguments."""


class EmuModule:
    """One compiled .cu file; ``get_function(name)`` as in cupy.RawModule."""

    def __init__(self, path):
        self.path = Path(path)
        self.names = kernel_names(self.path.read_text())
        self.library = ctypes.CDLL(str(compile_module(self.path)))
        self.library.emu_last_error.restype = ctypes.c_char_p

    def get_function(self, name):
        """The kernel ``name`` of this file, callable as ``kernel(grid, block, args)``; AttributeError if absent."""
        if name not in self.names:
            raise AttributeError(f"emu: {self.path.name} has no kernel {name!r} (it has {self.names})")
        return EmuKernel(self, name)


def _dims(dims, what):
    dims = tuple(int(d) for d in (dims if isinstance(dims, tuple) else (dims,)))
    if not 1 <= len(dims) <= 3 or min(dims) < 1:
        raise ValueError(f"emu: {what} must be 1 to 3 positive ints, got {dims}")
    return (ctypes.c_uint * 3)(*(dims + (1,) * (3 - len(dims))))


class EmuKernel:
    """A kernel, called as CuPy calls one: ``kernel(grid, block, args, shared_mem=0)``."""

    def __init__(self, module, name):
        self.module, self.name = module, name
        self.entry = getattr(module.library, f"emu_launch_{name}")
        self.entry.restype = ctypes.c_int

    def __call__(self, grid, block, args, shared_mem=0):
        keep = []  # the argument buffers must outlive the call
        pointers = (ctypes.c_void_p * max(len(args), 1))()
        sizes = (ctypes.c_longlong * max(len(args), 1))()
        for i, arg in enumerate(args):
            if isinstance(arg, np.ndarray):
                if not arg.flags.c_contiguous:
                    raise ValueError(f"emu: {self.name} argument {i}: a kernel needs a C-contiguous array "
                                     f"(got strides {arg.strides}); pass np.ascontiguousarray(...)")
                value = ctypes.c_void_p(arg.ctypes.data)
            elif isinstance(arg, np.generic):
                value = np.array(arg)  # a 0-d array owns the scalar's bytes
            else:
                raise TypeError(f"emu: {self.name} argument {i} is a {type(arg).__name__}; pass arrays or numpy "
                                f"scalars (np.int32(...), np.float32(...)) so the C type is explicit")
            keep.append(value)
            pointers[i] = ctypes.addressof(value) if isinstance(value, ctypes.c_void_p) else value.ctypes.data
            sizes[i] = 8 if isinstance(value, ctypes.c_void_p) else value.nbytes
        status = self.entry(_dims(grid, "grid"), _dims(block, "block"), ctypes.c_ulonglong(int(shared_mem)),
                            pointers, sizes, ctypes.c_int(len(args)))
        if status != 0:
            raise EmuError(f"emu: {self.module.path.name}: {self.module.library.emu_last_error().decode()}")


def compile_all(workers=None):
    """Compile every csrc/cuda/*.cu for the emulator, several g++ at once (each finds its cache first).

    g++ spends most of its ~4 s per file parsing the standard headers, so a cold cache
    is filled about twice as fast on two cores as one file at a time.
    """
    from concurrent.futures import ThreadPoolExecutor
    paths = sorted(CUDA_DIR.glob("*.cu"))
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        list(pool.map(compile_module, paths))  # list(): re-raise the first compile error here


def load_module(name):
    """csrc/cuda/<name>.cu, compiled for the emulator once per process (and cached on disk)."""
    module = _modules.get(name)
    if module is None:
        module = _modules[name] = EmuModule(CUDA_DIR / f"{name}.cu")
    return module
