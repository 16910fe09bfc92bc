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
``load_file(path)`` does the same for a .cu file anywhere (the tests' toy kernels).

Each CUDA thread runs as a fiber (csrc/emu/cuda_emu.h), so a launch costs microseconds to
milliseconds. The environment variables below choose sanitizers, real threads and the order
of the blocks; each launch is first checked against CUDA's limits (grid and block sizes,
shared memory), with an error that names the kernel and the limit.
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

# Modes, chosen by environment variables. A mode that changes the compiled code gets its own
# library in the cache (the flags are part of the hash); the others are read at each launch.
#
# MINIDL_EMU_SANITIZE=address builds the kernels with AddressSanitizer: a read or write outside an
#   array (numpy's buffers, __shared__ arrays, the dynamic shared buffer) stops the process with a
#   report that names the .cu line. MINIDL_EMU_SANITIZE=thread builds them with ThreadSanitizer,
#   which reports two threads touching the same memory without a barrier between them (a missing
#   __syncthreads); it implies MINIDL_EMU_THREADS=os, since TSan cannot follow fibers. Either way the
#   Python process must start with the sanitizer's runtime preloaded (for ASan libstdc++ too, or
#   ASan cannot follow the exception that unwinds a failed launch's fibers):
#     LD_PRELOAD="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libstdc++.so)" \
#         ASAN_OPTIONS=detect_leaks=0 MINIDL_EMU_SANITIZE=address python ...
#     LD_PRELOAD=$(g++ -print-file-name=libtsan.so) MINIDL_EMU_SANITIZE=thread python ...
# MINIDL_EMU_THREADS=fibers (default) runs each CUDA thread as a fiber, a block's fibers taking turns
#   on one OS thread (see csrc/emu/cuda_emu.h); =os runs each as a real OS thread, as slow as
#   that sounds (tens of ms a launch), for ThreadSanitizer.
# MINIDL_EMU_BLOCK_ORDER=shuffled (default) runs the blocks in a seeded random order (MINIDL_EMU_SEED,
#   default 0: the same order each run), =ordered x fastest then y then z, =concurrent shuffled and on
#   MINIDL_EMU_WORKERS OS threads at once (default one per core; fibers only): faster, and it
#   exposes races between blocks (a GPU runs blocks in any order, many at a time).
# MINIDL_EMU_TIMEOUT (seconds, default 60): with MINIDL_EMU_THREADS=os, how long a barrier waits
#   before the launch fails as a deadlock (fibers see a deadlock at once).
SANITIZE_FLAGS = {"": [], "address": ["-fsanitize=address", "-fno-omit-frame-pointer", "-g"],
                  "thread": ["-fsanitize=thread", "-g"]}
THREAD_FLAGS = {"fibers": [], "os": ["-DEMU_OS_THREADS=1"]}
BLOCK_ORDERS = ("shuffled", "ordered", "concurrent")


def cxx_flags():
    """The g++ flags for building a kernel module in the mode the environment asks for (see above)."""
    sanitize = os.environ.get("MINIDL_EMU_SANITIZE", "")
    if sanitize not in SANITIZE_FLAGS:
        raise ValueError(f"MINIDL_EMU_SANITIZE={sanitize!r}: use 'address' (AddressSanitizer), 'thread' "
                         f"(ThreadSanitizer) or leave it unset")
    threads = os.environ.get("MINIDL_EMU_THREADS") or ("os" if sanitize == "thread" else "fibers")
    if threads not in THREAD_FLAGS:
        raise ValueError(f"MINIDL_EMU_THREADS={threads!r}: use 'fibers' (the default) or 'os'")
    if sanitize == "thread" and threads != "os":
        raise ValueError("MINIDL_EMU_SANITIZE=thread needs MINIDL_EMU_THREADS=os: ThreadSanitizer cannot follow fibers")
    order = os.environ.get("MINIDL_EMU_BLOCK_ORDER", "")
    if order and order not in BLOCK_ORDERS:
        raise ValueError(f"MINIDL_EMU_BLOCK_ORDER={order!r}: use one of {BLOCK_ORDERS}")
    return CXX_FLAGS + SANITIZE_FLAGS[sanitize] + THREAD_FLAGS[threads]


# CUDA's limits on a launch (compute capability 7.0 to 9.0), checked before each emulated one.
MAX_GRID = (2**31 - 1, 65535, 65535)
MAX_BLOCK = (1024, 1024, 64)
MAX_THREADS_PER_BLOCK = 1024
SHARED_MEMORY_DEFAULT = 48 * 1024         # static + dynamic shared memory per block, unless the kernel opts in
SHARED_MEMORY_OPT_IN_MAX = 227 * 1024     # what a kernel may opt in to (H100; A100: 163 KB)

KERNEL_NAME = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(')
DYNAMIC_SHARED = re.compile(r'extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([\w ]+?)\s+(\w+)\s*\[\s*\]\s*;')
# `[__align__(16)] __shared__ [__align__(16)] float As[BK][BM + PAD], Bs[BK][BN + PAD];` on one line
STATIC_SHARED = re.compile(r'(?:__align__\(\d+\)\s+)?__shared__\s+(?:__align__\(\d+\)\s+)?'
                           r'((?:(?:const|volatile|unsigned|signed|long|short)\s+)*[\w:]+)\s+([^;\n(){}]+);')
DECLARATOR = re.compile(r'\s*(\w+)\s*((?:\[[^\[\]]+\]\s*)*)')

_modules = {}


def cache_dir():
    """Where compiled modules live: $MINIDL_CACHE/emu, else ~/.cache/minidl/emu."""
    base = os.environ.get("MINIDL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "minidl")
    return Path(base) / "emu"


def kernel_names(source):
    """The ``extern "C" __global__`` kernels a .cu source defines, in order."""
    return KERNEL_NAME.findall(source)


def _split_declarators(text):
    """'As[T][T], Bs[T][T]' -> [('As', '[T][T]'), ('Bs', '[T][T]')], or None if it is not that simple."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text + ","):
        depth += (ch in "[(") - (ch in "])")
        if ch == "," and depth == 0:
            m = DECLARATOR.fullmatch(text[start:i])
            if m is None:
                return None
            parts.append((m[1], m[2].strip()))
            start = i + 1
    return parts


def _static_shared(match):
    declarators = _split_declarators(match[2])
    if declarators is None:
        return match[0]  # left to the header's fallback (`static`)
    return " ".join(f"EMU_SHARED({match[1]}, {name}, {dims});" for name, dims in declarators)


def translate(source, filename):
    """The C++ that g++ compiles: the header, the .cu source, one export per kernel.

    Two rewrites, both because C++ has no shared memory: ``extern __shared__ T name[];`` becomes a
    pointer to the launch's dynamic shared memory, and ``__shared__ T name[N];`` (static shared
    memory) ``EMU_SHARED(T, name, [N]);``, a reference to the running block's copy (see
    csrc/emu/cuda_emu.h). Both keep the line count, and ``#line`` keeps g++'s errors, and the line
    numbers in the emulator's messages, pointing at the .cu file.
    """
    body = DYNAMIC_SHARED.sub(lambda m: f"{m[1]}* {m[2]} = reinterpret_cast<{m[1]}*>(emu::dynamic_shared());",
                              source)
    body = STATIC_SHARED.sub(_static_shared, body)
    exports = "\n".join(f"EMU_EXPORT({name})" for name in kernel_names(source))
    return f'#include "{EMU_HEADER}"\n#line 1 "{filename}"\n{body}\n{exports}\n'


def compile_module(path):
    """Compile one .cu file for the emulator (or find it in the cache); returns the .so path."""
    path = Path(path)
    cpp = translate(path.read_text(), str(path))
    # what the .cu may #include: csrc/cuda/*.cuh, and csrc/common/*.h as "../common/<name>" (found through -I CUDA_DIR),
    # and the headers beside it (a .cu outside csrc/cuda, such as the tests' toy kernels)
    header_files = set(CUDA_DIR.glob("*.cuh")) | set(COMMON_DIR.glob("*.h")) | set(path.parent.glob("*.cuh"))
    headers = "".join(h.read_text() for h in sorted(header_files))
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
            result = subprocess.run(["g++", *flags, f"-I{path.parent}", f"-I{CUDA_DIR}", str(source), "-o", str(partial)],
                                    capture_output=True, text=True)
        except FileNotFoundError:
            raise RuntimeError("the 'emu' device compiles the CUDA kernels with g++ (C++20, GCC 11 or newer), "
                               "which is not installed (apt install g++)") from None
        if result.returncode != 0:
            raise RuntimeError(f"emu: g++ could not compile {path.name} against {EMU_HEADER.name}:\n{result.stderr}")
        os.replace(partial, library)
    return library


class EmuError(RuntimeError):
    """A kernel failed on the emulator: a divergent __syncthreads, a deadlock, bad arguments, a launch past CUDA's limits."""


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
    return dims + (1,) * (3 - len(dims))


def check_launch(name, grid, block, shared_mem, max_dynamic_shared=0):
    """EmuError if CUDA would refuse to launch ``name`` with this grid, block and dynamic shared memory.

    A GPU answers such a launch with an "invalid argument" (or "too many resources") error that
    names neither the kernel nor the limit; the emulator says both. The static __shared__ arrays
    count too, but only the launch knows their size: the C++ side checks the sum.
    """
    for axis, n, limit in zip("xyz", grid, MAX_GRID):
        if n > limit:
            raise EmuError(f"emu: {name}: grid.{axis} = {n} is more than CUDA's limit of {limit} blocks")
    for axis, n, limit in zip("xyz", block, MAX_BLOCK):
        if n > limit:
            raise EmuError(f"emu: {name}: block.{axis} = {n} is more than CUDA's limit of {limit} threads")
    threads = block[0] * block[1] * block[2]
    if threads > MAX_THREADS_PER_BLOCK:
        raise EmuError(f"emu: {name}: a block has 1 to {MAX_THREADS_PER_BLOCK} threads; {block} has {threads}")
    if max_dynamic_shared > SHARED_MEMORY_OPT_IN_MAX:
        raise EmuError(f"emu: {name}: max_dynamic_shared_size_bytes = {max_dynamic_shared} is more than the "
                       f"{SHARED_MEMORY_OPT_IN_MAX} bytes a kernel may opt in to")
    limit = max(SHARED_MEMORY_DEFAULT, max_dynamic_shared)
    if not 0 <= shared_mem <= limit:
        raise EmuError(f"emu: {name}: shared_mem = {shared_mem} bytes of dynamic shared memory is more than the "
                       f"limit of {limit} bytes per block" + ("" if max_dynamic_shared else
                       " (48 KB; a kernel may opt in to more by setting max_dynamic_shared_size_bytes)"))
    return limit


class EmuKernel:
    """A kernel, called as CuPy calls one: ``kernel(grid, block, args, shared_mem=0)``.

    ``max_dynamic_shared_size_bytes``, as on a cupy.RawKernel, opts in to more than 48 KB of
    shared memory per block.
    """

    def __init__(self, module, name):
        self.module, self.name = module, name
        self.entry = getattr(module.library, f"emu_launch_{name}")
        self.entry.restype = ctypes.c_int
        self.max_dynamic_shared_size_bytes = 0

    def __call__(self, grid, block, args, shared_mem=0):
        grid, block = _dims(grid, "grid"), _dims(block, "block")
        shared_limit = check_launch(self.name, grid, block, int(shared_mem), self.max_dynamic_shared_size_bytes)
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
        status = self.entry((ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), ctypes.c_ulonglong(int(shared_mem)),
                            ctypes.c_ulonglong(shared_limit), pointers, sizes, ctypes.c_int(len(args)))
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


def load_file(path):
    """Any .cu file (the tests' toy kernels, say), compiled for the emulator once per process and mode."""
    path = Path(path).resolve()
    key = (str(path), tuple(cxx_flags()))
    module = _modules.get(key)
    if module is None:
        module = _modules[key] = EmuModule(path)
    return module


def load_module(name):
    """csrc/cuda/<name>.cu, compiled for the emulator once per process and mode (and cached on disk)."""
    return load_file(CUDA_DIR / f"{name}.cu")
