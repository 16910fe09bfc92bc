# The two-command quick start:  make demo   /   make test
# Both create .venv (if missing) and install minidl into it with `pip install -e ".[dev,vision,cuda13,distributed]"`
# (cuda12 where nvidia-smi shows a driver older than R580: see CUDA_EXTRA below),
# which compiles the C++ kernels (csrc/cpu -> minidl/_C*.so). The install is redone
# when setup.py, pyproject.toml or a file under csrc/ changes (the stamp file below).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CUDA_EXTRA: which CuPy and NVRTC to install, cuda13 (NVIDIA driver R580+) or cuda12 (driver R525+).
# Picked from `nvidia-smi`'s driver version where there is one, else cuda13 (NVRTC alone compiles the
# kernels in CI); one CuPy at a time: switching uninstalls the other, and the stamp names the extra.
DRIVER_MAJOR := $(shell nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1 | cut -d. -f1)
CUDA_EXTRA ?= $(if $(DRIVER_MAJOR),$(if $(shell [ "$(DRIVER_MAJOR)" -ge 580 ] 2>/dev/null && echo new),cuda13,cuda12),cuda13)
OTHER_CUPY := $(if $(filter cuda12,$(CUDA_EXTRA)),cupy-cuda13x,cupy-cuda12x)
STAMP := $(VENV)/.minidl-installed-$(CUDA_EXTRA)
# DEVICE=cpu (default), cuda (a GPU) or emu (the CUDA kernels on the CPU): where `make demo` trains.
DEVICE ?= cpu
BUILD_INPUTS := setup.py pyproject.toml $(shell find csrc -name '*.cpp' -o -name '*.h' 2>/dev/null)

# The examples find their data in $MINIDL_DATA (else ~/.minidl/data, else they download it; offline
# they fall back to synthetic data and say so). On this project's machines, ../shared/data holds it.
ifneq ($(wildcard ../shared/data),)
export MINIDL_DATA ?= $(abspath ../shared/data)
endif

.PHONY: install test demo gpu-check bench notebooks clean distclean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) $(BUILD_INPUTS)
	$(PY) -m pip uninstall -y -q $(OTHER_CUPY) 2>/dev/null || true
	$(PY) -m pip install -e ".[dev,vision,$(CUDA_EXTRA),distributed]"
	rm -f $(VENV)/.minidl-installed*
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q

# The main job: fastai's chapter-1 models (pets, segmentation, text, tabular, collab, bytes as images),
# after the two tours. CamVid runs at a quick setting here (3 minutes) and IMDb's classifier from
# random weights (5 minutes); the README's results table has the commands of the full runs.
# `make demo DEVICE=cuda` trains them all on a GPU (DEVICE=emu: the CUDA kernels on the CPU, very slow).
demo: $(STAMP)
	$(PY) examples/00_autograd_tour.py --device $(DEVICE)
	$(PY) examples/01_learner_tour.py --device $(DEVICE)
	$(PY) examples/tabular.py --device $(DEVICE)
	$(PY) examples/collab.py --device $(DEVICE)
	$(PY) examples/pets.py --device $(DEVICE)
	$(PY) examples/camvid.py --size 96 --freeze-epochs 1 --epochs 3 --device $(DEVICE)
	$(PY) examples/imdb.py --no-lm --ensemble --device $(DEVICE)
	$(PY) examples/bytes_as_images.py --device $(DEVICE)

# On a machine with an NVIDIA GPU: the driver and toolkit, the GPU tests (MINIDL_REQUIRE_GPU=1),
# compute-sanitizer on the kernel tests, bench_gpu, three examples on cuda; writes benchmarks/gpu_report.md.
# Without a GPU it stops at once and says why.
gpu-check: $(STAMP)
	$(PY) -m benchmarks.gpu_check

bench: $(STAMP)
	$(PY) -m benchmarks

# examples/notebooks/*.py (jupytext py:percent) are the source; this regenerates the .ipynb beside them.
notebooks: $(STAMP)
	$(VENV)/bin/jupytext --to ipynb examples/notebooks/[0-9][0-9]_*.py

clean:
	rm -rf build *.egg-info minidl/_C*.so .pytest_cache .hypothesis
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
	rm -f $(VENV)/.minidl-installed*

distclean: clean
	rm -rf $(VENV)
