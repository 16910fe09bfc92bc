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


def interleaved(f_a, f_b, rounds, pause=0.02):
    """Time f_a and f_b in turns: a warm-up call of each, then ``rounds`` rounds of one timed
    call of each.  Returns (median seconds of f_a, of f_b, median over the rounds of t_b / t_a).
    On a shared machine a core's speed drifts over seconds; a ratio taken within a round
    compares calls made a moment apart.  ``pause``: a sleep before each call, so that the
    other library's idle threads have stopped spinning on the cores."""
    f_a(), f_b()
    times_a, times_b = [], []
    for _ in range(rounds):
        for f, times in ((f_a, times_a), (f_b, times_b)):
            time.sleep(pause)
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
    ratios = sorted(b / a for a, b in zip(times_a, times_b))
    return sorted(times_a)[rounds // 2], sorted(times_b)[rounds // 2], ratios[rounds // 2]


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
