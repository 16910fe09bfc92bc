"""Draw the autograd graph behind a tensor: the picture micrograd made famous.

    x = minidl.tensor([1.0, 2.0], requires_grad=True)
    w = minidl.tensor([3.0, -1.0], requires_grad=True)
    y = (x * w).relu().sum()
    y.backward(retain_graph=True)
    minidl.viz.draw(y, "graph.png", names={"x": x, "w": w, "y": y})

Boxes are tensors (name, shape, dtype, and the values and gradient when small), ovals are
the ops that made them (each op's ``grad_fn``). Arrows follow the forward pass; backward
walks them the other way. With Graphviz's ``dot`` program installed the picture is laid
out by it; without, matplotlib draws it in layers (leaves left, the root right).
"""
import shutil
import subprocess
from pathlib import Path

import numpy as np

__all__ = ["draw", "to_dot", "graph"]

SMALL = 4  # show a tensor's values (and gradient) when it has at most this many elements


def graph(root):
    """The graph behind ``root``: ``(tensors, ops, edges)``.

    ``tensors`` and ``ops`` are lists (each object once; ops are ``grad_fn`` nodes), and
    ``edges`` lists ``(source, target)`` pairs: tensor -> op for an op's inputs, op ->
    tensor for its result. An iterative walk, so long chains are fine.
    """
    tensors, ops, edges, seen, stack = [], [], [], set(), [root]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        tensors.append(t)
        fn = t.grad_fn
        if fn is None:
            continue
        if fn._freed:
            raise RuntimeError("viz.graph: backward() already freed this graph; draw it before backward(), "
                               "or call backward(retain_graph=True)")
        ops.append(fn)
        edges.append((fn, t))
        for inp in fn.inputs:
            edges.append((inp, fn))
            stack.append(inp)
    return tensors, ops, edges


def _values(a):
    a = np.asarray(a) + 0  # + 0 prints -0.0 as 0.0
    text = np.array2string(a.reshape(-1), precision=4, separator=", ", suppress_small=True)
    return text if a.ndim <= 1 else f"{text} (flattened)"


def _tensor_label(t, names):
    lines = [names[id(t)]] if id(t) in names else []
    lines.append(f"{tuple(t.shape)} {t.dtype}")
    if t.numel() <= SMALL:
        lines.append(f"data {_values(t.numpy())}")
        if t.grad is not None:
            lines.append(f"grad {_values(t.grad.numpy())}")
    return lines


def _op_label(fn):
    return fn.name[:-len("Backward")] if fn.name.endswith("Backward") else fn.name


def _names(names):
    return {id(t): label for label, t in (names or {}).items()}


def to_dot(root, names=None):
    """Graphviz DOT source of ``root``'s graph; ``names`` maps labels to tensors, ``{"x": x}``."""
    tensors, ops, edges = graph(root)
    names = _names(names)
    ids = {id(obj): f"n{i}" for i, obj in enumerate([*tensors, *ops])}
    out = ["digraph autograd {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];']
    for t in tensors:
        label = "\\n".join(s.replace('"', "'") for s in _tensor_label(t, names))
        fill = "lightblue" if t.requires_grad and t.grad_fn is None else "white"  # leaves that learn
        out.append(f'  {ids[id(t)]} [shape=box, style=filled, fillcolor={fill}, label="{label}"];')
    for fn in ops:
        out.append(f'  {ids[id(fn)]} [shape=ellipse, label="{_op_label(fn)}"];')
    for a, b in edges:
        out.append(f"  {ids[id(a)]} -> {ids[id(b)]};")
    out.append("}")
    return "\n".join(out) + "\n"


def draw(root, path="graph.png", names=None, engine="auto"):
    """Render ``root``'s autograd graph to ``path`` (.png, .svg or .pdf); returns the path.

    ``engine``: "dot" (Graphviz, must be installed), "matplotlib", or "auto" (dot when found).
    """
    path = Path(path)
    if engine not in ("auto", "dot", "matplotlib"):
        raise ValueError(f"viz.draw: engine={engine!r}; use 'auto', 'dot' or 'matplotlib'")
    dot = shutil.which("dot")
    if engine == "dot" and dot is None:
        raise RuntimeError("viz.draw: Graphviz's `dot` is not installed (apt install graphviz); "
                           "use engine='matplotlib'")
    if dot is not None and engine != "matplotlib":
        fmt = path.suffix.lstrip(".") or "png"
        subprocess.run([dot, f"-T{fmt}", "-o", str(path)], input=to_dot(root, names), text=True, check=True)
        return path
    _draw_matplotlib(root, path, _names(names))
    return path


def _draw_matplotlib(root, path, names):
    """Layered drawing: a node's column is its distance from the leaves, root rightmost."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tensors, ops, edges = graph(root)
    inputs = {}
    for a, b in edges:
        inputs.setdefault(id(b), []).append(a)
    column = {}
    for node in [*tensors, *ops]:                  # depth-first, iteratively: inputs before the node
        stack = [node]
        while stack:
            n = stack[-1]
            pending = [i for i in inputs.get(id(n), []) if id(i) not in column]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            column[id(n)] = 1 + max((column[id(i)] for i in inputs.get(id(n), [])), default=-1)
    by_column = {}
    for n in [*tensors, *ops]:
        by_column.setdefault(column[id(n)], []).append(n)
    pos = {id(n): (c, -row + (len(col) - 1) / 2) for c, col in by_column.items() for row, n in enumerate(col)}

    width, height = 2.4 * (len(by_column) + 1), 1.3 * (max(len(c) for c in by_column.values()) + 1)
    fig, ax = plt.subplots(figsize=(min(width, 40), min(height, 40)))
    for a, b in edges:
        (x0, y0), (x1, y1) = pos[id(a)], pos[id(b)]
        ax.annotate("", xy=(x1 - 0.3, y1), xytext=(x0 + 0.3, y0),
                    arrowprops=dict(arrowstyle="->", color="gray", shrinkA=0, shrinkB=0))
    op_ids = {id(fn) for fn in ops}
    for n in [*tensors, *ops]:
        x, y = pos[id(n)]
        if id(n) in op_ids:
            ax.text(x, y, _op_label(n), ha="center", va="center", fontsize=9,
                    bbox=dict(boxstyle="round,pad=0.4", fc="lightyellow", ec="black"))
        else:
            leaf = n.requires_grad and n.grad_fn is None
            ax.text(x, y, "\n".join(_tensor_label(n, names)), ha="center", va="center", fontsize=8,
                    bbox=dict(boxstyle="square,pad=0.4", fc="lightblue" if leaf else "white", ec="black"))
    ax.set_xlim(-0.8, len(by_column) - 0.2)
    ax.set_ylim(min(y for _, y in pos.values()) - 0.8, max(y for _, y in pos.values()) + 0.8)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
