"""minidl.set_num_threads / get_num_threads: OMP_NUM_THREADS by default, process-wide, same results."""
import os
import subprocess
import sys

import numpy as np
import pytest

import minidl

pytestmark = pytest.mark.skipif(minidl._C is None, reason="minidl._C (the C++ kernels) is not built")


def threads_in_fresh_process(env_threads):
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if env_threads is not None:
        env["OMP_NUM_THREADS"] = env_threads
    out = subprocess.run([sys.executable, "-c", "import minidl; print(minidl.get_num_threads())"],
                         env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def test_default_follows_omp_num_threads():
    assert threads_in_fresh_process("1") == 1
    assert threads_in_fresh_process("3") == 3
    assert threads_in_fresh_process(None) == os.cpu_count()


def test_set_and_get_round_trip_and_reject_bad_values():
    before = minidl.get_num_threads()
    try:
        minidl.set_num_threads(3)
        assert minidl.get_num_threads() == 3
        minidl.set_num_threads(1)
        assert minidl.get_num_threads() == 1
    finally:
        minidl.set_num_threads(before)
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(ValueError, match="set_num_threads"):
            minidl.set_num_threads(bad)
    assert minidl.get_num_threads() == before


def test_results_do_not_depend_on_the_thread_count():
    """Every kernel splits work so that each output is summed in the same order on any thread count."""
    from minidl.backend import cpu
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((300, 200), dtype=np.float32), rng.standard_normal((200, 500), dtype=np.float32)
    x = rng.standard_normal((1024, 200), dtype=np.float32)
    w, bias = np.ones(200, np.float32), np.zeros(200, np.float32)
    logits, target = rng.standard_normal((4096, 10), dtype=np.float32), rng.integers(0, 10, 4096)
    before = minidl.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            minidl.set_num_threads(n)
            results.append([cpu.matmul(a, b), *cpu.batch_norm(x, w, bias, 1e-5), cpu.relu_backward(x, x),
                            *cpu.cross_entropy(logits, target)])
    finally:
        minidl.set_num_threads(before)
    for other in results[1:]:
        for r, o in zip(results[0], other):
            np.testing.assert_array_equal(r, o)


def test_a_forked_child_runs_the_kernels_on_one_thread():
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    from minidl.backend import cpu
    a = np.ones((256, 256), np.float32)
    cpu.matmul(a, a)  # start the parent's thread pool first: the case that used to hang
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its thread count and whether the kernel ran
        try:
            ok = float(cpu.matmul(a, a)[0, 0]) == 256.0
            os.write(write, f"{minidl.get_num_threads()} {ok}".encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 100).decode() == "1 True"
