"""make gpu-check: everything a GPU machine should prove about minidl's CUDA side, in under 10 minutes.

    .venv/bin/python -m benchmarks.gpu_check                   # writes benchmarks/gpu_report.md
    .venv/bin/python -m benchmarks.gpu_check --report /tmp/r.md --no-install

In order, each step with its own time limit (the install and the limits add up to under 10 minutes):

  1. the GPU, the driver (nvidia-smi), the CUDA extra that fits the driver (cuda12: R525+,
     cuda13: R580+) installed if CuPy is not already the matching one, the versions of CUDA
     that the driver runs, that CuPy was built for and of NVRTC;
  2. the GPU tests (`pytest -k cuda`) with MINIDL_REQUIRE_GPU=1: a GPU test that would skip fails;
  3. the kernel tests under compute-sanitizer, memcheck then racecheck, with CuPy's memory pool
     off (MINIDL_CUPY_POOL=0: each array its own allocation, so reading past its end is caught)
     and few hypothesis examples (the sanitizer is 10 to 100 times slower);
  4. benchmarks/bench_gpu.py: every kernel checked against the reference, then timed;
  5. pets, tabular and collab on --device cuda, one epoch each.

The report (Markdown) has each step's command, status, time and the end of its output. Without
a GPU, step 1 stops at once with the reason (no driver, CuPy or NVRTC missing, ...) and exit 1.
"""
import argparse
import datetime
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "benchmarks" / "gpu_report.md"
# (oldest driver branch, extra): the CUDA major version a driver branch runs (minor-version compatibility)
EXTRAS = [(580, "cuda13"), (525, "cuda12")]
INSTALL_TIMEOUT = 120   # seconds; with the steps' limits below, 9 minutes and a half at most
KERNEL_TESTS = ["tests/test_emu_kernels.py", "tests/test_lstm_op.py", "tests/test_resize.py"]


@dataclass
class Step:
    name: str
    command: list
    timeout: int
    env: dict = field(default_factory=dict)
    status: str = "not run"
    seconds: float = 0.0
    output: str = ""


def driver_version():
    """nvidia-smi's driver version ("550.54.15") and GPU name, or (None, why not)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None, "nvidia-smi not found: no NVIDIA driver is installed on this machine"
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version,name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"nvidia-smi failed: {e}"
    if out.returncode != 0 or not out.stdout.strip():
        return None, f"nvidia-smi failed (exit {out.returncode}): {(out.stdout + out.stderr).strip()[:300]}"
    version, _, name = out.stdout.strip().splitlines()[0].partition(",")
    return version.strip(), name.strip()


def extra_for(driver):
    """The pyproject extra whose CUDA runs on this driver version ("550.54.15" -> "cuda12"), or None."""
    try:
        major = int(str(driver).split(".")[0])
    except ValueError:
        return None
    return next((extra for oldest, extra in EXTRAS if major >= oldest), None)


def installed_cupy():
    """The installed CuPy wheel's extra ("cuda12"/"cuda13"), or None."""
    from importlib import metadata
    for extra, wheel in (("cuda12", "cupy-cuda12x"), ("cuda13", "cupy-cuda13x")):
        try:
            metadata.version(wheel)
            return extra
        except metadata.PackageNotFoundError:
            continue
    return None


def unavailable_reason():
    """cuda_unavailable_reason() in a fresh interpreter (after an install), or None when the GPU works."""
    code = ("from minidl.backend.cuda import cuda_unavailable_reason as r, import_cupy\n"
            "reason = r()\n"
            "if reason: print('REASON', reason)\n"
            "else:\n"
            " c = import_cupy(); rt = c.cuda.runtime; from cupy.cuda import nvrtc\n"
            " v = lambda n: f'{n // 1000}.{n % 1000 // 10}'\n"
            " print('OK', f'driver runs CUDA {v(rt.driverGetVersion())}; CuPy {c.__version__} built for CUDA '"
            "f'{v(rt.runtimeGetVersion())}; NVRTC {\".\".join(map(str, nvrtc.getVersion()))}; '"
            "f'{rt.getDeviceCount()} GPU(s)')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    text = out.stdout.strip() or out.stderr.strip()
    last = text.splitlines()[-1] if text else ""
    if out.returncode != 0 or not last.startswith(("OK ", "REASON ")):
        return f"checking the cuda device failed: {text[-500:]}", None
    kind, _, rest = last.partition(" ")
    return (rest, None) if kind == "REASON" else (None, rest)


def sanitizer():
    """compute-sanitizer's path: on PATH, in $CUDA_HOME/bin, in /usr/local/cuda/bin; else None."""
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "compute-sanitizer").is_file():
            return str(Path(home) / "bin" / "compute-sanitizer")
    return None


def steps(python, sanitizer_path, quick=False):
    """The checks after the set-up, each a command with its time limit in seconds."""
    pytest = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs"]
    gpu = {"MINIDL_REQUIRE_GPU": "1"}
    out = []
    out.append(Step("GPU tests (MINIDL_REQUIRE_GPU=1)", pytest + ["-k", "cuda", "tests/"], 120, gpu))
    for tool in ("memcheck", "racecheck"):
        command = ([sanitizer_path, "--tool", tool, "--error-exitcode", "99", "--print-limit", "20",
                    "--target-processes", "all"] + pytest + ["-x", "-k", "cuda"] + KERNEL_TESTS) \
            if sanitizer_path else None
        out.append(Step(f"compute-sanitizer {tool} (kernel tests, CuPy's pool off)", command, 60,
                        {**gpu, "MINIDL_CUPY_POOL": "0", "HYPOTHESIS_PROFILE": "sanitizer"}))
    out.append(Step("bench_gpu (checked, then timed)", [python, "-m", "benchmarks.bench_gpu", "--quick"], 75))
    out.append(Step("examples/pets.py on cuda, one epoch", [python, "examples/pets.py", "--device", "cuda",
                    "--epochs", "1", "--out", "examples/output/gpu_check/pets"], 75))
    out.append(Step("examples/tabular.py on cuda, one epoch", [python, "examples/tabular.py", "--device", "cuda",
                    "--epochs", "1"], 25))
    out.append(Step("examples/collab.py on cuda, one epoch", [python, "examples/collab.py", "--device", "cuda",
                    "--epochs", "1", "--out", "examples/output/gpu_check"], 25))
    return out


def run_step(step):
    if step.command is None:
        step.status, step.output = "FAILED", ("compute-sanitizer not found (on PATH, $CUDA_HOME/bin, "
                                              "/usr/local/cuda/bin): install the CUDA toolkit's sanitizer, e.g. "
                                              "apt's cuda-sanitizer-<version> package")
        return step
    print(f"gpu-check: {step.name} ...", flush=True)
    start = time.perf_counter()
    try:
        out = subprocess.run(step.command, capture_output=True, text=True, cwd=ROOT, timeout=step.timeout,
                             env={**os.environ, **step.env})
        step.status = "ok" if out.returncode == 0 else f"FAILED (exit {out.returncode})"
        step.output = out.stdout + out.stderr
    except subprocess.TimeoutExpired as e:
        step.status = f"TIMEOUT after {step.timeout} s"
        step.output = "".join(x.decode() if isinstance(x, bytes) else (x or "") for x in (e.stdout, e.stderr))
    step.seconds = time.perf_counter() - start
    print(f"gpu-check: {step.name}: {step.status} ({step.seconds:.0f} s)", flush=True)
    return step


def tail(text, lines=40):
    kept = text.strip().splitlines()[-lines:]
    return "\n".join(kept) if kept else "(no output)"


def report(setup, done, started):
    """The Markdown report: the machine, then one section per step."""
    ok = all(s.status == "ok" for s in done)
    lines = [f"# make gpu-check: {'all passed' if ok else 'FAILED'}", "",
             f"{started:%Y-%m-%d %H:%M} UTC, {sum(s.seconds for s in done):.0f} s of checks.", "",
             "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in setup.items()]
    lines += ["", "| step | status | seconds |", "| --- | --- | --- |"]
    lines += [f"| {s.name} | {s.status} | {s.seconds:.0f} |" for s in done]
    for s in done:
        shown = " ".join(f"{k}={v}" for k, v in s.env.items())
        command = " ".join(str(c) for c in s.command) if s.command else "(not run)"
        lines += ["", f"## {s.name}: {s.status}", "", f"`{shown + ' ' if shown else ''}{command}`", "",
                  "```", tail(s.output), "```"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=REPORT)
    parser.add_argument("--install", action=argparse.BooleanOptionalAction, default=True,
                        help="pip install the CUDA extra that fits the driver when CuPy is not the matching one")
    args = parser.parse_args(argv)
    started = datetime.datetime.now(datetime.timezone.utc)

    driver, name = driver_version()
    if driver is None:
        reason, _ = unavailable_reason()
        print(f"gpu-check: no GPU: {name}" + (f"; minidl says: {reason}" if reason else ""), file=sys.stderr)
        return 1
    extra = extra_for(driver)
    if extra is None:
        print(f"gpu-check: the NVIDIA driver {driver} is older than R525, which CUDA 12 (the oldest CuPy here) "
              f"needs: update the driver", file=sys.stderr)
        return 1
    setup = {"GPU": name, "driver": driver, "extra for this driver": extra}
    print(f"gpu-check: {name}, driver {driver}: the {extra} extra", flush=True)
    have = installed_cupy()
    if have != extra and args.install:
        other = "cupy-cuda13x" if extra == "cuda12" else "cupy-cuda12x"
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", other], cwd=ROOT)
        try:
            code = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", f".[{extra}]"], cwd=ROOT,
                                  timeout=INSTALL_TIMEOUT).returncode
        except subprocess.TimeoutExpired:
            code = f"timed out after {INSTALL_TIMEOUT} s"
        setup["installed"] = f'`pip install -e ".[{extra}]"` (CuPy was {have or "absent"}): exit {code}'
    reason, versions = unavailable_reason()
    if reason is not None:
        print(f"gpu-check: the cuda device does not work: {reason}", file=sys.stderr)
        return 1
    setup["CUDA"] = versions
    print(f"gpu-check: {versions}", flush=True)

    done = [run_step(s) for s in steps(sys.executable, sanitizer())]
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report(setup, done, started))
    failed = [s.name for s in done if s.status != "ok"]
    print(f"gpu-check: report in {args.report}" + (f"; FAILED: {', '.join(failed)}" if failed else "; all passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
