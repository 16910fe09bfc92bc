"""The notebooks in examples/notebooks: each .ipynb matches its py:percent source, and each runs.

The .py files are the source (readable diffs); `make notebooks` regenerates the .ipynb.
Each notebook is executed in a fresh kernel with MINIDL_NOTEBOOK_QUICK=1 (small data, one
epoch), in a temporary folder so the pictures it writes stay out of the repository; the chapter-1
notebook, which is the book's code unchanged, gets small copies of its data sets instead.
"""
import os
import shutil
from pathlib import Path

import pytest

from book_data import make_book_data

jupytext = pytest.importorskip("jupytext", reason="jupytext is in the dev extra: pip install -e .[dev]")
nbclient = pytest.importorskip("nbclient", reason="nbclient is in the dev extra: pip install -e .[dev]")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "examples" / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def test_there_is_a_notebook_for_each_chapter():
    assert [p.stem for p in SOURCES] == ["00_chapter1", "01_autograd", "02_kernels", "03_pets", "04_tabular",
                                         "05_collab"]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_ipynb_is_generated_from_the_py_source(source):
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run `make notebooks`"
    cells = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]
    assert cells(jupytext.read(ipynb)) == cells(jupytext.read(source)), \
        f"{ipynb.name} differs from {source.name}: edit the .py, then run `make notebooks`"
    assert all(not c.get("outputs") for c in jupytext.read(ipynb).cells), f"{ipynb.name}: commit it without outputs"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_runs(source, tmp_path, monkeypatch):
    shutil.copy(source, tmp_path)
    nb = jupytext.read(tmp_path / source.name)
    monkeypatch.setenv("MINIDL_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if source.stem == "00_chapter1":   # the book's cells, unchanged: small copies of the data in fastai's folders
        monkeypatch.setenv("MINIDL_DATA", str(make_book_data(tmp_path / "data")))
        monkeypatch.setenv("MINIDL_CACHE", str(tmp_path / "cache"))   # nothing found is downloaded
        for proxy in ("http_proxy", "https_proxy"):   # offline (a proxy that is not there): the text cell warns
            monkeypatch.setenv(proxy, "http://127.0.0.1:9")   # and trains from random weights, downloads nothing
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()   # raises CellExecutionError, with the cell and its traceback, on any failure
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
