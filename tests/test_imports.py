"""The reading order is true: minidl's modules import each other without a circle, each file of
the README's tour up to step 9 imports only files named before it, minidl/__init__.py names the
tour's first steps, and autograd.py reads (and imports) alone.

The import graph is built from the source with ast, not by importing: a node is a module of
minidl/ (``minidl.ops.shape``; a package is its ``__init__.py``), an edge an import statement,
at module level or inside a function alike (a lazy import is still a dependency of the
reader). Relative imports are resolved; ``from . import x`` means the submodule x when there is
one, else a name of the package. ``import a.b.c`` is an edge to a.b.c alone: the packages a
and a.b that Python runs first are not counted, or every module would depend on
minidl/__init__.py, which imports them all. Compiled extensions (minidl._C) import nothing.
"""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "minidl"


def module_name(path):
    """minidl/ops/shape.py -> "minidl.ops.shape"; minidl/ops/__init__.py -> "minidl.ops"."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
EXTENSIONS = {module_name(p.with_name(p.name.split(".")[0] + ".py")) for p in PACKAGE.rglob("*.so")} | \
             {module_name(p.with_name(p.name.split(".")[0] + ".py")) for p in PACKAGE.rglob("*.pyd")}


def _known(name):
    """``name`` if it is a module of minidl (or an extension), else the closest package above it that is."""
    while name not in MODULES and name not in EXTENSIONS and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(module):
    """{minidl module it imports: the line of the first such import} for one module."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [_known(a.name) for a in node.names if a.name.split(".")[0] == "minidl"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "minidl":
                continue
            for alias in node.names:   # `from . import x`: the submodule x if there is one
                sub = f"{source}.{alias.name}"
                targets.append(sub if sub in MODULES or sub in EXTENSIONS else _known(source))
        for target in targets:
            if target in MODULES and target != module:
                found.setdefault(target, node.lineno)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def find_cycle(graph):
    """One import cycle as [a, b, ..., a], or None: an iterative depth-first search."""
    state = {}   # absent: not seen; 1: on the current path; 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [], [(start, iter(sorted(graph[start])))]
        state[start] = 1
        path.append(start)
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif child not in state:
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))
    return None


def describe(cycle):
    return "\n  ".join(f"{a} imports {b} (line {GRAPH[a][b]} of {MODULES[a].relative_to(ROOT)})"
                       for a, b in zip(cycle, cycle[1:]))


def test_the_graph_is_read_from_the_source():
    assert GRAPH["minidl.ops.shape"].keys() >= {"minidl.autograd", "minidl.tensor", "minidl.ops.elementwise"}
    assert "minidl.backend" in GRAPH["minidl.autograd"]
    assert "minidl.ops.elementwise" in GRAPH["minidl.ops"]            # from . import elementwise: the submodule
    assert "minidl.random" in GRAPH["minidl.ops.norm"]                 # from .. import random
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}, "c": {"a": 1, "b": 1}}) is None


def test_no_import_cycle_in_minidl():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle in minidl/ (module-level or inside a function):\n  " + describe(cycle)


def test_autograd_imports_neither_tensor_nor_the_ops():
    """autograd.py is read first: of minidl it uses the kernels (backend) only."""
    assert set(GRAPH["minidl.autograd"]) <= {"minidl.backend"}, GRAPH["minidl.autograd"]


def test_autograd_imports_alone_in_a_fresh_process():
    """``import minidl.autograd`` works, and so does autograd.py without minidl/__init__.py (which imports
    everything): with an empty package in its place, importing it loads the kernels and nothing else."""
    done = subprocess.run([sys.executable, "-c", "import minidl.autograd as a; assert a.Function.apply"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    code = ("import sys, types; package = types.ModuleType('minidl'); package.__path__ = [sys.argv[1]]; "
            "sys.modules['minidl'] = package; import minidl.autograd as a\n"
            "with a.no_grad(): assert not a.is_grad_enabled()\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('minidl.'))))")
    done = subprocess.run([sys.executable, "-c", code, str(PACKAGE)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "minidl.autograd" in loaded and {m for m in loaded if not m.startswith("minidl.backend")} == \
        {"minidl.autograd"}, loaded


def tour_files():
    """(step, module) for the .py files of minidl/ that README's "Read the source in this order"
    names, in its order.

    A bare name (``reduce.py``, ``models/resnet.py``) is in the folder of the latest full path
    before it where that file exists (``minidl/ops/`` for ``reduce.py``)."""
    readme = (ROOT / "README.md").read_text()
    tour = readme.split("## Read the source in this order")[1].split("\n## ")[0]
    folders, files, step = [], [], 0
    for line in tour.splitlines():
        numbered = re.match(r"(\d+)\. ", line)
        step = int(numbered.group(1)) if numbered else step
        for name in re.findall(r"`([\w./-]+\.(?:py|cpp|cu|h|cuh))`", line):
            if name.split("/")[0] in ("minidl", "csrc", "tests"):
                path = ROOT / name
                folders.insert(0, path.parent)
            else:
                path = next((f / name for f in folders if (f / name).is_file()), None)
                assert path is not None, f"README's tour names {name}, in none of the folders named before it"
            if path.suffix == ".py" and PACKAGE in path.parents and module_name(path) not in [m for _, m in files]:
                files.append((step, module_name(path)))
    return files


BOTTOM_UP_STEPS = 9   # README: "Up to step 9 each Python file imports only files named before it"


def reachable(module):
    """Every minidl module that importing ``module`` may run, through any chain of imports,
    except what is reached through the kernels (minidl.backend: every op reaches them by device)."""
    seen, todo = set(), [module]
    while todo:
        for target in GRAPH[todo.pop()]:
            if target not in seen and not target.startswith("minidl.backend"):
                seen.add(target)
                todo.append(target)
    return seen


def test_each_file_of_the_tour_imports_only_files_named_before_it():
    tour = tour_files()
    order = [module for _, module in tour]
    assert order[:3] == ["minidl.autograd", "minidl.tensor", "minidl.ops.elementwise"]
    assert {step for step, _ in tour} >= set(range(1, BOTTOM_UP_STEPS + 1))
    late = []
    for i, (step, module) in enumerate(tour):
        if step > BOTTOM_UP_STEPS:
            break
        for later in sorted(reachable(module) & set(order[i + 1:])):
            late.append(f"{module} (step {step}) imports {later} (step {tour[order.index(later)][0]}, named later)")
    assert not late, "README's reading order names a file before one it imports:\n  " + "\n  ".join(late)


def test_init_names_the_first_steps_of_the_readme_tour():
    """One reading order: minidl/__init__.py's docstring lists the README tour's first files, in its order."""
    import minidl
    first_sentence = re.search(r"Read the source in this order: (.*?)\.\s", minidl.__doc__, re.S).group(1)
    named = re.findall(r"([\w/]+\.py)", first_sentence)
    tour = [MODULES[m].relative_to(PACKAGE).as_posix() for _, m in tour_files()]
    assert len(named) >= 3 and named == tour[:len(named)], (named, tour[:len(named)])


@pytest.mark.parametrize("module", ["minidl.tensor", "minidl.ops.elementwise", "minidl.random", "minidl.testing"])
def test_the_first_files_import_only_earlier_ones(module):
    """The core of the order, spelled out: autograd <- tensor <- ops <- random, testing."""
    allowed = {"minidl.tensor": {"minidl.autograd", "minidl.backend"},
               "minidl.ops.elementwise": {"minidl.autograd", "minidl.tensor"},
               "minidl.random": {"minidl.tensor", "minidl.backend"},
               "minidl.testing": {"minidl.autograd", "minidl.tensor"}}[module]
    assert set(GRAPH[module]) <= allowed, GRAPH[module]
