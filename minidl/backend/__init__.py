"""Backends: where a tensor's array lives and which kernels run on it.

A backend is a namespace of kernel functions over raw arrays (see numpy_ref.py for
the full list). Every device name maps to one:

    "cpu"   numpy arrays; the reference kernels, with the C++ kernels of csrc/cpu
            (minidl._C, bound in cpu.py) in place of the ones they implement.
            MINIDL_KERNELS=numpy keeps the reference kernels only.
    "cuda"  CuPy arrays on a GPU; minidl's CUDA kernels (csrc/cuda), compiled by NVRTC (cuda.py).
    "emu"   numpy arrays; the same CUDA kernels and host code, run on the CPU by an
            emulator (emu.py, csrc/emu): how the kernels are tested without a GPU.

More devices register themselves with ``register_backend``.
"""
import os
from types import SimpleNamespace

from . import numpy_ref

_factories = {}
_backends = {}


def kernels_of(module):
    """The public functions and constants of a kernel module, as a dict."""
    return {k: v for k, v in vars(module).items() if not k.startswith("_") and k not in ("np", "math")}


def register_backend(device, factory):
    """Make ``device`` usable: ``factory()`` returns the backend namespace, built on first use."""
    _factories[device] = factory
    _backends.pop(device, None)


def unregister_backend(device):
    """Forget a device registered with register_backend."""
    _factories.pop(device, None)
    _backends.pop(device, None)


def get_backend(device):
    """The kernel namespace of ``device`` ("cpu", "cuda", "emu", ...), built on first use and cached."""
    backend = _backends.get(device)
    if backend is None:
        if device not in _factories:
            raise ValueError(f"unknown device {device!r}: available devices are {sorted(_factories)}")
        backend = _backends[device] = _factories[device]()
    return backend


def devices():
    """The names of the registered devices, sorted."""
    return sorted(_factories)


def _cpu_backend():
    kernels = kernels_of(numpy_ref)
    choice = os.environ.get("MINIDL_KERNELS", "cpp")
    if choice not in ("cpp", "numpy"):
        raise ValueError(f"MINIDL_KERNELS={choice!r}: use 'cpp' (the C++ kernels, default) or 'numpy'")
    if choice == "cpp":
        from . import cpu
        kernels.update(cpu.KERNELS)
    kernels["name"] = "cpu" if choice == "cpp" else "numpy"
    return SimpleNamespace(**kernels)


register_backend("cpu", _cpu_backend)


def _cuda_backend():
    from . import cuda
    return cuda.cuda_backend()


def _emu_backend():
    from . import cuda
    return cuda.emu_backend()


register_backend("cuda", _cuda_backend)
register_backend("emu", _emu_backend)
