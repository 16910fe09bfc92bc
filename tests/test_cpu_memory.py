"""minidl/backend/cpu.py makes glibc's malloc keep freed memory (csrc/cpu/bindings.cpp,
keep_freed_memory): a training step's arrays then reuse the last step's pages instead of
page-faulting in fresh ones.  Checked by counting the page faults of a loop that makes and
drops a few-MB array, in a fresh process with and without MINIDL_KEEP_MEMORY=0."""
import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc",
                                reason="keep_freed_memory tunes glibc's malloc")

LOOP = """
import json, resource
import numpy as np
import minidl.backend.cpu as cpu
x = np.ones((1024, 1024), np.float32)
big = np.ones((12, 1024, 1024), np.float32)
def step():  # like a training step: a few activations made, then all dropped
    acts = [x + i for i in range(6)]  # 4 MiB each
    acts += [big + i for i in range(2)]  # 48 MiB each: above the largest mmap threshold glibc allows
    del acts
step()  # the first step's arrays may fault; count the ones of the steps after it
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"tuned": bool(cpu.MALLOC_TUNED), "faults": after - before}))
"""


def page_faults(keep):
    env = dict(os.environ, MINIDL_KEEP_MEMORY="1" if keep else "0")
    out = subprocess.run([sys.executable, "-c", LOOP], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_freed_memory_is_reused_without_page_faults():
    kept, default = page_faults(True), page_faults(False)
    assert kept["tuned"] and not default["tuned"]
    # 60 arrays of 4 MiB and 20 of 48 MiB are 307200 pages.  With glibc's defaults the memory
    # freed at the end of each step goes back to the OS, and the next step faults its pages in again.
    assert default["faults"] > 20000, default
    assert kept["faults"] < 1000, kept
