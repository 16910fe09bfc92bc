# The two-command quick start:  make demo   /   make test
# Both create .venv (if missing) and install minidl into it with `pip install -e ".[dev,vision,cuda]"`,
# which compiles the C++ kernels (csrc/cpu -> minidl/_C*.so). The install is redone
# when setup.py, pyproject.toml or a file under csrc/ changes (the stamp file below).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.minidl-installed
BUILD_INPUTS := setup.py pyproject.toml $(shell find csrc -name '*.cpp' -o -name '*.h' 2>/dev/null)

# The examples find their data in $MINIDL_DATA (else ~/.minidl/data, else they download it; offline
# they fall back to synthetic data and say so). On this project's machines, ../shared/data holds it.
ifneq ($(wildcard ../shared/data),)
export MINIDL_DATA ?= $(abspath ../shared/data)
endif

.PHONY: install test demo bench notebooks clean distclean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) $(BUILD_INPUTS)
	$(PY) -m pip install -e ".[dev,vision,cuda]"
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q

# The main job: fastai's chapter-1 models (pets, segmentation, text, tabular, collab, bytes as images),
# after the two tours. CamVid runs at a quick setting here (3 minutes) and IMDb's classifier from
# random weights (5 minutes); the README's results table has the commands of the full runs.
demo: $(STAMP)
	$(PY) examples/00_autograd_tour.py
	$(PY) examples/01_learner_tour.py
	$(PY) examples/tabular.py
	$(PY) examples/collab.py
	$(PY) examples/pets.py
	$(PY) examples/camvid.py --size 96 --freeze-epochs 1 --epochs 3
	$(PY) examples/imdb.py --no-lm
	$(PY) examples/bytes_as_images.py

bench: $(STAMP)
	$(PY) -m benchmarks

# examples/notebooks/*.py (jupytext py:percent) are the source; this regenerates the .ipynb beside them.
notebooks: $(STAMP)
	$(VENV)/bin/jupytext --to ipynb examples/notebooks/[0-9][0-9]_*.py

clean:
	rm -rf build *.egg-info minidl/_C*.so .pytest_cache .hypothesis
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
	rm -f $(STAMP)

distclean: clean
	rm -rf $(VENV)
