"""Autograd: how minidl computes gradients.

Every op is a ``Function`` with two static methods:

    forward(ctx, *arrays, **params) -> array      compute the result, save what backward needs
    backward(ctx, grad) -> grad per input          the chain rule: dL/dinput from dL/doutput

``Function.apply`` runs forward on the input tensors' arrays and, when gradients are
wanted, stores the ``ctx`` (an instance of the Function) as the result's ``grad_fn``.
The ctx keeps its input tensors, so the results of a computation form a graph that
points back to the leaves. ``backward(loss)`` walks that graph from the loss to the
leaves in reverse topological order (each node after every node that uses it) and
calls each ``backward``; gradients of a tensor used twice are added up.

Three details make it correct in general, and each lives in exactly one place here:
  * broadcasting is undone: a gradient is summed back to its input's shape (unbroadcast);
  * in-place changes are caught: a saved array whose tensor changed since forward raises;
  * the walk is iterative, so a chain of 100,000 ops needs no recursion.
A fourth serves data-parallel training: a leaf's .grad is written as soon as its last
gradient has arrived, and its post-accumulate-grad hooks are told (end of this file).

This file is read first: of minidl it imports only the kernels (backend), not tensor.py,
which builds on it. It relies only on what every tensor has (``.data``, ``.device``,
``.requires_grad``, ``.grad_fn``, ...), and wraps an op's result in the class
that tensor.py hands it when imported (``register_tensor_class(Tensor)``).
"""
import threading

from .backend import get_backend

# ---------------------------------------------------------------- the tensor class

_Tensor = None   # the class of the tensors Function.apply returns: Tensor, once tensor.py is imported


def register_tensor_class(cls):
    """Make ``cls`` the class of the tensors ops return; tensor.py registers ``Tensor`` right after defining it."""
    global _Tensor
    _Tensor = cls


# ---------------------------------------------------------------- grad mode

_mode = threading.local()


def is_grad_enabled():
    """False inside ``no_grad()``: whether ops record the graph (per thread, True by default)."""
    return getattr(_mode, "enabled", True)


class _GradMode:
    """Context manager (and decorator) that switches recording of the graph on or off.

    Works as ``with no_grad():``, ``@no_grad()`` and, like PyTorch, bare ``@no_grad``.
    """

    def __new__(cls, fn=None):
        mode = super().__new__(cls)
        return mode if fn is None else mode(fn)

    def __enter__(self):
        self._prev = is_grad_enabled()
        _mode.enabled = self.enabled

    def __exit__(self, *exc):
        _mode.enabled = self._prev

    def __call__(self, fn):
        def wrapper(*args, **kwargs):
            with type(self)():
                return fn(*args, **kwargs)
        wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
        return wrapper


class no_grad(_GradMode):
    """``with no_grad():`` ops record no graph (evaluation, parameter updates)."""
    enabled = False


class enable_grad(_GradMode):
    """``with enable_grad():`` record the graph again inside a no_grad block."""
    enabled = True


# ---------------------------------------------------------------- in-place safety

class VersionCounter:
    """Counts in-place changes to an array; tensors that share an array share a counter."""
    __slots__ = ("value",)

    def __init__(self):
        self.value = 0


# ---------------------------------------------------------------- Function

class Function:
    """Base class of every differentiable op. An instance is the op's ``ctx``: its node in the graph."""

    returns_view = False  # True when the result shares memory with the first input (reshape, permute, ...);
                          # forward may decide per call by setting ctx.returns_view

    def __init__(self, inputs, device):
        self.inputs = inputs                 # the input tensors: the graph's edges
        self.device = device                 # forward may change it (Tensor.to)
        self.backend = get_backend(device)   # the kernels forward and backward call
        self.needs_input_grad = tuple(t.requires_grad for t in inputs)
        self._saved = ()
        self._versions = ()
        self._freed = False

    @classmethod
    def apply(cls, *inputs, **params):
        """Run the op on tensors; record it in the graph if any input requires grad.

        It runs for every op of every step, so it is kept short (benchmarks/NOTES.md).
        """
        device = inputs[0].device
        for t in inputs:
            if t.device != device:
                devices = ", ".join(f"{tuple(t.shape)} on {t.device!r}" for t in inputs)
                raise RuntimeError(f"{cls.__name__.lower()}: inputs are on different devices ({devices}); "
                                   f"move them to one with .to(device)")
        ctx = cls(inputs, device)
        out = cls.forward(ctx, *[t.data for t in inputs], **params)
        requires_grad = True in ctx.needs_input_grad and is_grad_enabled()
        result = _Tensor._make(out, ctx.device, requires_grad)
        if ctx.returns_view:
            result._version_counter = inputs[0]._version_counter
        if requires_grad:
            result.grad_fn = ctx
            if ctx._saved:
                ctx._record_versions(result)
        return result

    @staticmethod
    def forward(ctx, *arrays, **params):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError

    def save_for_backward(self, *arrays):
        """Keep arrays for backward (inputs, the output or anything computed on the way)."""
        self._saved = arrays

    def _record_versions(self, out):
        # A saved array that is a tensor's array (or the array a view of it came from) could
        # be changed in place before backward runs; remember the tensor's version to notice it.
        saved = {id(a) for a in self._saved if a is not None}
        saved.update(id(a.base) for a in self._saved if getattr(a, "base", None) is not None)
        self._versions = [(t._version_counter, t._version_counter.value) for t in (*self.inputs, out)
                          if id(t.data) in saved or id(getattr(t.data, "base", None)) in saved]

    @property
    def saved_arrays(self):
        for counter, version in self._versions:
            if counter.value != version:
                raise RuntimeError(
                    f"{self.name}: an array it saved for backward was modified in place "
                    f"(version {counter.value}, expected {version}). Use an out-of-place op "
                    f"(y = x * 2 instead of x.mul_(2)), or .clone() the tensor before changing it.")
        return self._saved

    @property
    def name(self):
        return type(self).__name__ + "Backward"

    def release(self):
        """Free what backward needed; the graph cannot be walked through this node again."""
        self._saved, self.inputs, self._freed = (), (), True

    def __repr__(self):
        return f"<{self.name}>"


# ---------------------------------------------------------------- the backward walk

def unbroadcast(backend, grad, shape):
    """Sum ``grad`` over the axes broadcasting stretched, so it has ``shape`` again.

    Broadcasting copies a value to many places; the chain rule adds up the
    gradients of all the copies.
    """
    shape = tuple(shape)
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if n == 1 and grad.shape[lead + i] != 1)
    return backend.reshape(backend.sum(grad, axis=axes, keepdims=True), shape)


def topological_order(root):
    """Tensors that ``root`` depends on (and that require grad), each after all its inputs.

    An iterative depth-first search: a tensor is appended after every tensor below it.
    """
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        t, inputs_done = stack.pop()
        if inputs_done:
            order.append(t)
            continue
        if id(t) in seen:
            continue
        seen.add(id(t))
        stack.append((t, True))
        if t.grad_fn is not None:
            if t.grad_fn._freed:
                raise RuntimeError(
                    f"backward through {t.grad_fn.name} a second time: the first backward freed the "
                    f"arrays it saved. Pass retain_graph=True to the first .backward() to keep them.")
            stack.extend((i, False) for i in t.grad_fn.inputs if i.requires_grad and id(i) not in seen)
    return order


def backward(root, grad=None, retain_graph=False):
    """Fill ``.grad`` of every leaf that ``root`` depends on with d(root)/d(leaf) (times ``grad``)."""
    if not root.requires_grad:
        raise RuntimeError("backward: this tensor does not require grad: none of the tensors it was "
                           "computed from has requires_grad=True (or it was computed under no_grad())")
    backend = root.backend
    if grad is None:
        if root.numel() != 1:
            raise RuntimeError(f"backward: the tensor has shape {tuple(root.shape)}, not a single value; "
                               f"pass a gradient of that shape, y.backward(g), or reduce first: y.sum().backward()")
        grad = backend.ones(root.shape, root.dtype)
    else:
        grad = grad.data if isinstance(grad, _Tensor) else backend.asarray(grad, root.dtype)
        if tuple(grad.shape) != tuple(root.shape) or grad.dtype != root.dtype:
            raise RuntimeError(f"backward: gradient is {tuple(grad.shape)} {grad.dtype} but the tensor is "
                               f"{tuple(root.shape)} {root.dtype}; they must match")

    order = topological_order(root)
    waiting = _gradients_awaited_by_leaves(order)
    grads = {id(root): grad}
    for t in reversed(order):
        g = grads.pop(id(t), None)
        if g is None:
            continue
        if t.grad_fn is None:
            _leaf_grad_is_final(t, g)
            continue
        if t._retains_grad:
            t._accumulate_grad(g)
        fn = t.grad_fn
        input_grads = fn.backward(fn, g)
        backend = fn.backend  # each node's own backend: a graph may span devices (Tensor.to)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        if len(input_grads) != len(fn.inputs):
            raise RuntimeError(f"{fn.name} returned {len(input_grads)} gradients for {len(fn.inputs)} inputs; "
                               f"backward must return one per input (None where there is none)")
        for inp, ig in zip(fn.inputs, input_grads):
            if ig is None or not inp.requires_grad:
                _one_less(inp, waiting, grads)
                continue
            try:
                ig = unbroadcast(backend, ig, inp.shape)
            except ValueError:
                raise RuntimeError(f"{fn.name} returned a gradient of shape {tuple(ig.shape)} for an input of "
                                   f"shape {tuple(inp.shape)}") from None
            if ig.dtype != inp.dtype:
                ig = backend.astype(ig, inp.dtype)
            prev = grads.get(id(inp))
            grads[id(inp)] = ig if prev is None else backend.add(prev, ig)
            _one_less(inp, waiting, grads)
        if not retain_graph:
            fn.release()


# ---------------------------------------------------------------- "this leaf's gradient is final"
# A leaf (a parameter) gets one gradient from each op that used it. The walk above would add
# them up and write .grad only when it reaches the leaf, which is near the end: leaves have no
# inputs, so the topological order puts them last. Counting the gradients each leaf still waits
# for lets the walk write a leaf's .grad as soon as its last one has arrived, and tell the
# leaf's post-accumulate-grad hooks (Tensor.register_post_accumulate_grad_hook): data-parallel
# training starts sending the last layer's gradients while backward still runs on the first
# layers (distributed.py). Without hooks nothing changes but when .grad is written.

def _gradients_awaited_by_leaves(order):
    """{id(leaf): how many ops of the graph use it}: the gradients the leaf will receive."""
    waiting = {}
    for t in order:
        if t.grad_fn is not None:
            for i in t.grad_fn.inputs:
                if i.grad_fn is None and i.requires_grad:
                    waiting[id(i)] = waiting.get(id(i), 0) + 1
    return waiting


def _one_less(inp, waiting, grads):
    """One more op has sent ``inp`` its gradient (or None); after the last, a leaf's gradient is final."""
    left = waiting.get(id(inp))
    if left is None:
        return
    waiting[id(inp)] = left - 1
    if left == 1:
        g = grads.pop(id(inp), None)
        if g is not None:
            _leaf_grad_is_final(inp, g)


def _leaf_grad_is_final(leaf, g):
    """Add ``g`` into leaf.grad, then call the leaf's post-accumulate-grad hooks with the leaf."""
    leaf._accumulate_grad(g)
    for hook in getattr(leaf, "_post_accumulate_grad_hooks", ()):
        hook(leaf)


class HookHandle:
    """Adds ``hook`` to the list ``hooks``; ``remove()`` takes it off (twice is harmless)."""

    def __init__(self, hooks, hook):
        self.hooks, self.hook = hooks, hook
        hooks.append(hook)

    def remove(self):
        """Take the hook off."""
        if self.hook in self.hooks:
            self.hooks.remove(self.hook)
