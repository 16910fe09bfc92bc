"""Where does training time go? ``minidl.profile()`` counts it per op and per kernel.

    with minidl.profile() as p:
        learn.fit(1)
    print(p.table())

Two levels are timed, so the gap between them is visible:

* **ops** (``Function.apply`` and each node's ``backward``): what the model asked for,
  including the Python around the kernels (checking shapes, making tensors, the graph);
* **kernels** (the functions of the device's backend): the work on arrays, tagged with
  where they run: ``numpy`` (numpy_ref.py), ``C++`` (csrc/cpu through cpu.py) or ``CUDA``
  / ``emu`` (csrc/cuda through cuda.py).

An op's *overhead* is its time minus the time of the kernels it called. For small
models it is a large share: that is what "dispatch-bound" means.

How: while the ``with`` block runs, ``Function.apply`` is replaced by a timing version
that also gives each recorded graph node a timed ``backward``, and each function of each
backend is wrapped in a timer. On exit everything is put back, so minidl pays nothing
when it is not profiling. Time is wall time (``time.perf_counter``); kernels running on
other threads (the DataLoader's prefetching) are counted, outside any op. FLOPs are
counted for the kernels whose count is well defined (matmul, convolutions, see FLOPS).
On the "cuda" device kernels run asynchronously: a kernel's time is then its launch,
and the op that waits for a result absorbs the rest.
"""
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

from . import autograd
from . import backend as _backend

__all__ = ["profile", "Profile", "FLOPS"]


def _matmul_flops(args, out):
    a = args[0]
    return 2 * _size(out) * a.shape[-1]                       # each output element: K multiply-adds


def _conv_flops(args, out):                                   # conv2d(x, w, ...): out (N, Cout, Ho, Wo)
    w = args[1]
    return 2 * _size(out) * _size(w) // w.shape[0]            # Cin/groups * kh * kw multiply-adds each


def _conv_backward_data_flops(args, out):                     # (grad, w, x_shape, ...)
    grad, w = args[0], args[1]
    return 2 * _size(grad) * _size(w) // w.shape[0]           # the forward's count, run backwards


def _conv_backward_weight_flops(args, out):                   # (grad, x, w_shape, ...)
    grad, w_shape = args[0], args[2]
    return 2 * _size(grad) * _size_of_shape(w_shape) // w_shape[0]


def _size(a):
    return _size_of_shape(a.shape)


def _size_of_shape(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n


# Kernel name -> FLOPs(args, result). Multiply-adds count 2; elementwise work is not counted.
FLOPS = {
    "matmul": _matmul_flops,
    "conv2d": _conv_flops,
    "conv2d_backward_data": _conv_backward_data_flops,
    "conv2d_backward_weight": _conv_backward_weight_flops,
}


@dataclass
class Stat:
    """One row of the table: how often, how long (seconds), how many FLOPs, and (kernels) where it ran."""
    calls: int = 0
    seconds: float = 0.0
    flops: int = 0
    kernel_seconds: float = 0.0   # ops only: the time of the kernels they called
    where: str = ""               # kernels only: numpy, C++, CUDA or emu

    @property
    def overhead(self):
        return self.seconds - self.kernel_seconds


def _where(fn, device_backend):
    module = getattr(fn, "__module__", None) or ""
    if module.endswith("backend.cpu"):
        return "C++"
    if module.endswith("backend.cuda"):
        return "CUDA" if device_backend.name == "cuda" else "emu"
    return "numpy"


class Profile:
    """The counts of one ``with minidl.profile():`` block; see the module docstring."""

    def __init__(self):
        self.ops = defaultdict(Stat)      # "Linear" (forward), "Linear.backward"
        self.kernels = defaultdict(Stat)  # "matmul [C++]"
        self.wall_seconds = 0.0
        self._lock = threading.Lock()
        self._stack = threading.local()   # the op running on this thread, for its kernels to report to
        self._restore = []

    # ------------------------------------------------------------ installing the timers

    def __enter__(self):
        if getattr(autograd.Function.apply, "_profiling", False):
            raise RuntimeError("minidl.profile: already profiling; profiles do not nest")
        _backend.get_backend("cpu")                       # make sure the usual backend exists to be wrapped
        for device_backend in list(_backend._backends.values()):
            for name, fn in list(vars(device_backend).items()):
                if callable(fn) and not isinstance(fn, type):
                    setattr(device_backend, name, self._timed_kernel(name, fn, _where(fn, device_backend)))
                    self._restore.append((device_backend, name, fn))
        original_apply = autograd.Function.__dict__["apply"]
        autograd.Function.apply = classmethod(self._timed_apply(original_apply.__func__))
        autograd.Function.apply.__func__._profiling = True
        self._restore.append((autograd.Function, "apply", original_apply))
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall_seconds = time.perf_counter() - self._start
        for owner, name, original in reversed(self._restore):
            setattr(owner, name, original)
        self._restore = []

    def _timed_kernel(self, name, fn, where):
        key, flops_of = f"{name} [{where}]", FLOPS.get(name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            seconds = time.perf_counter() - start
            flops = flops_of(args, out if not isinstance(out, tuple) else out[0]) if flops_of else 0
            self._add(self.kernels[key], seconds, flops)
            op = getattr(self._stack, "op", None)
            if op is not None:
                with self._lock:
                    op.kernel_seconds += seconds
                    op.flops += flops
            return out
        return timed

    def _timed_apply(self, apply):
        profile = self

        def timed_apply(cls, *inputs, **params):
            out = profile._run(cls.__name__, lambda: apply(cls, *inputs, **params))
            node = out.grad_fn
            if node is not None and type(node) is cls:
                backward = cls.backward
                # An instance attribute shadows the class's static method: autograd's
                # fn.backward(fn, grad) now calls this timed version for this node.
                node.backward = lambda ctx, grad: profile._run(f"{cls.__name__}.backward",
                                                                lambda: backward(ctx, grad))
            return out
        return timed_apply

    def _run(self, name, call):
        stat = Stat()
        outer, self._stack.op = getattr(self._stack, "op", None), stat
        start = time.perf_counter()
        try:
            return call()
        finally:
            stat.seconds = time.perf_counter() - start
            self._stack.op = outer
            with self._lock:
                total = self.ops[name]
                total.calls += 1
                total.seconds += stat.seconds
                total.kernel_seconds += stat.kernel_seconds
                total.flops += stat.flops

    def _add(self, stat, seconds, flops):
        with self._lock:
            stat.calls += 1
            stat.seconds += seconds
            stat.flops += flops

    # ------------------------------------------------------------ reading the counts

    @property
    def op_seconds(self):
        return sum(s.seconds for s in self.ops.values())

    @property
    def kernel_seconds(self):
        return sum(s.seconds for s in self.kernels.values())

    def table(self, top=15):
        """The ``top`` ops and kernels by time, as text, with the totals and the overhead."""
        def rows(stats, kind):
            lines = [f"{kind:<34}{'calls':>8}{'total ms':>11}{'% wall':>8}{'us/call':>10}{'GFLOP':>9}{'GFLOP/s':>9}"
                     + ("  kernel ms  overhead ms" if kind == "op" else "")]
            for name, s in sorted(stats.items(), key=lambda kv: -kv[1].seconds)[:top]:
                rate = f"{s.flops / s.seconds / 1e9:9.1f}" if s.flops and s.seconds else f"{'':9}"
                line = (f"{name:<34}{s.calls:8d}{s.seconds * 1e3:11.2f}{100 * s.seconds / wall:7.1f}%"
                        f"{s.seconds / s.calls * 1e6:10.1f}{s.flops / 1e9 if s.flops else 0:9.3f}{rate}")
                if kind == "op":
                    line += f"{s.kernel_seconds * 1e3:11.2f}{s.overhead * 1e3:13.2f}"
                lines.append(line)
            if len(stats) > top:
                lines.append(f"... {len(stats) - top} more")
            return lines

        wall = self.wall_seconds or 1e-12
        in_ops = sum(s.kernel_seconds for s in self.ops.values())
        summary = (f"wall {wall * 1e3:.1f} ms; ops {self.op_seconds * 1e3:.1f} ms, of which kernels "
                   f"{in_ops * 1e3:.1f} ms and Python overhead {(self.op_seconds - in_ops) * 1e3:.1f} ms; "
                   f"all kernels {self.kernel_seconds * 1e3:.1f} ms")
        return "\n".join([summary, "", *rows(self.ops, "op"), "", *rows(self.kernels, "kernel")])


def profile():
    """``with minidl.profile() as p: ...`` then ``print(p.table())``: time, calls, FLOPs per op and kernel."""
    return Profile()
