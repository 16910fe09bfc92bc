"""The docs stay true: every public function and class says what it does, and the README's
reading tour names files that exist."""
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import minidl

ROOT = Path(__file__).resolve().parents[1]


def public_objects():
    """(qualified name, object) for minidl's public functions, classes and their public methods."""
    for info in pkgutil.walk_packages(minidl.__path__, "minidl."):
        if info.name.startswith("minidl._C"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                yield f"{module.__name__}.{name}", obj
            if inspect.isclass(obj):
                for method, fn in vars(obj).items():
                    if not method.startswith("_") and inspect.isfunction(fn):
                        # getdoc falls back to the overridden method's docstring (Module.forward, ...)
                        yield f"{module.__name__}.{name}.{method}", getattr(obj, method)


def test_every_public_function_and_class_has_a_docstring():
    missing = [name for name, obj in public_objects() if not inspect.getdoc(obj)]
    assert not missing, f"{len(missing)} public names without a docstring:\n  " + "\n  ".join(missing)


def test_the_reading_tour_names_files_that_exist():
    readme = (ROOT / "README.md").read_text()
    tour = readme.split("## Read the source in this order")[1].split("\n## ")[0]
    names = set(re.findall(r"`([\w./-]+\.(?:py|cpp|cu|h|cuh))`", tour))
    assert len(names) > 20
    files = [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*")
             if p.is_file() and not {".venv", "build", ".git"} & set(p.parts)]
    for name in names:   # a path from the root, or from a folder the tour is in (`backend/cpu.py`, `reduce.py`)
        assert any(f == name or f.endswith("/" + name) for f in files), \
            f"README's reading tour names {name}, which does not exist"
