"""What every benchmark needs: the machine's name, a median timer, and thread limits.

Thread counts must be set before numpy (OpenBLAS) and torch start their thread pools,
so limit_threads sets the environment first and only then imports them.
"""
import os
import platform
import time


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def median_time(fn, repeat):
    """Seconds per call of fn: one warm-up call, then the median of ``repeat`` timed calls."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def limit_threads(n, torch=True, minidl=True):
    """Give numpy, minidl and torch (if installed) ``n`` threads each; returns torch or None.
    With ``torch=False`` torch is not even imported (a process timing minidl or numpy alone);
    with ``minidl=False`` minidl is not (a process timing numpy or torch alone: importing
    minidl would also change malloc's settings for them, see minidl/backend/cpu.py)."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    if minidl:
        from minidl.backend import cpu
        cpu.set_num_threads(n)
    if not torch:
        return None
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(n)
    return torch
