"""minidl.viz: the autograd graph as DOT text and as a picture."""
import pytest

import minidl
from minidl import viz


def small_graph():
    x = minidl.tensor([1.0, 2.0], requires_grad=True)
    w = minidl.tensor([3.0, -1.0], requires_grad=True)
    y = (x * w).relu().sum()
    return x, w, y


def test_graph_has_each_tensor_and_op_once_with_edges_both_ways():
    x, w, y = small_graph()
    tensors, ops, edges = viz.graph(y)
    assert len(tensors) == 5 and [fn.name for fn in ops] == ["SumBackward", "ReLUBackward", "MulBackward"]
    pairs = {(id(a), id(b)) for a, b in edges}
    assert {(id(x), id(ops[2])), (id(w), id(ops[2])), (id(ops[0]), id(y))} <= pairs
    assert len(edges) == 3 + 4  # one op -> result edge per op, one tensor -> op edge per input


def test_a_tensor_used_twice_appears_once():
    x = minidl.tensor([2.0], requires_grad=True)
    tensors, ops, edges = viz.graph(x * x)
    assert len(tensors) == 2 and len(ops) == 1
    assert [(a is x, b is ops[0]) for a, b in edges].count((True, True)) == 2


def test_dot_names_values_and_gradients():
    x, w, y = small_graph()
    y.backward(retain_graph=True)
    dot = viz.to_dot(y, names={"x": x, "w": w, "y": y})
    assert dot.startswith("digraph autograd {") and dot.rstrip().endswith("}")
    assert 'label="x\\n(2,) float32\\ndata [1., 2.]\\ngrad [3., 0.]"' in dot   # -0.0 printed as 0.
    assert 'label="Mul"' in dot and 'label="ReLU"' in dot and 'label="Sum"' in dot
    assert dot.count("fillcolor=lightblue") == 2  # the two leaves that learn
    assert dot.count("->") == 7


def test_large_tensors_show_shape_only():
    x = minidl.ones(3, 5, requires_grad=True)
    dot = viz.to_dot((x * 2).sum())
    assert "(3, 5) float32" in dot and "data" not in dot.split("(3, 5) float32")[1].split('"')[0]


def test_freed_graph_is_a_clear_error():
    x, w, y = small_graph()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        viz.graph(y)


def test_draw_with_matplotlib_writes_a_png(tmp_path):
    x, w, y = small_graph()
    path = viz.draw(y, tmp_path / "g.png", names={"x": x}, engine="matplotlib")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_draw_a_long_chain(tmp_path):
    x = minidl.tensor([0.5], requires_grad=True)
    y = x
    for _ in range(30):
        y = (y * 1.1).tanh()
    assert viz.draw(y, tmp_path / "chain.png", engine="matplotlib").exists()


def test_engine_dot_without_graphviz_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt install graphviz"):
        viz.draw(small_graph()[2], tmp_path / "g.png", engine="dot")
    with pytest.raises(ValueError, match="engine"):
        viz.draw(small_graph()[2], tmp_path / "g.png", engine="neato")


@pytest.mark.skipif(viz.shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_draw_with_graphviz(tmp_path):
    path = viz.draw(small_graph()[2], tmp_path / "g.svg", engine="dot")
    assert "<svg" in path.read_text()
