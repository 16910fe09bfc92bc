"""Module and Parameter: how a model keeps its weights.

A Module is an object whose attributes may be Parameters (tensors to train),
buffers (tensors to keep but not train, like batch norm's running averages) and
other Modules. Assigning one registers it, so ``model.parameters()`` can find every
weight of a model by walking the tree of modules, and ``state_dict()`` can name
each one by its path (``"layers.0.weight"``), the names PyTorch uses too.
"""
from collections import OrderedDict, namedtuple

import numpy as np

from ..autograd import no_grad
from ..tensor import Tensor

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _host_array(value):
    """A state dict value (numpy array, Tensor on any device, number, nested list) as a numpy array."""
    return value.numpy() if isinstance(value, Tensor) else np.asarray(value)


def _cast(host, dtype):
    """``host`` as ``dtype``, or ValueError/TypeError/FloatingPointError if that would change what it says."""
    if host.dtype.kind in "USVMm":
        raise TypeError(f"holds {host.dtype} values, not numbers; a {dtype} tensor cannot take them")
    if host.dtype.kind == "c" and dtype.kind != "c":
        raise TypeError(f"holds complex values; a {dtype} tensor would drop their imaginary parts")
    with np.errstate(invalid="raise", over="raise"):  # NaN or inf into an integer, 1e39 into float32
        cast = host.astype(dtype, copy=False)         # an object array may fail here too (None, dicts)
    if dtype.kind in "biu" and not np.array_equal(cast, host):
        raise ValueError(f"holds values a {dtype} tensor cannot hold exactly (fractions, or out of range)")
    return cast


class Parameter(Tensor):
    """A tensor that is a model's weight: it requires grad, and modules register it."""

    def __init__(self, data, requires_grad=True):
        if isinstance(data, Tensor):
            self._setup(data.data, data.device)
            self.requires_grad_(requires_grad)
        else:
            super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class RemovableHandle:
    """What register_forward_hook returns: ``remove()`` takes the hook off; a ``with`` block removes it at the end."""
    _next_key = 0

    def __init__(self, hooks):
        self.hooks, self.key = hooks, RemovableHandle._next_key
        RemovableHandle._next_key += 1

    def remove(self):
        """Take the hook off (removing it twice is harmless)."""
        self.hooks.pop(self.key, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


class Hook:
    """Keeps the last output of a module: ``hook.stored`` (fastai's Hook). ``remove()`` to stop."""

    def __init__(self, module, detach=False):
        self.stored, self.detach = None, detach
        self.handle = module.register_forward_hook(self._store)

    def _store(self, module, inputs, output):
        self.stored = output.detach() if self.detach else output

    def remove(self):
        """Stop keeping the module's outputs, and forget the last one."""
        self.handle.remove()
        self.stored = None


def hook_outputs(modules, detach=False):
    """A Hook on each of ``modules``: their outputs are kept as each forward runs (fastai's hook_outputs)."""
    return [Hook(m, detach=detach) for m in modules]


class Module:
    """Base class of every layer and model: subclasses set attributes in __init__ and define forward."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", {})
        object.__setattr__(self, "training", True)

    # ---------------------------------------------------------------- registration
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning {name!r}")
        params, buffers, modules = self._parameters, self._buffers, self._modules
        if isinstance(value, Parameter):
            kind, table = "parameter", params
        elif isinstance(value, Module):
            kind, table = "module", modules
        elif name in params:
            if value is not None:  # x.weight = x.weight * 2 would silently stop training it
                raise TypeError(f"cannot assign a {type(value).__name__} to parameter {name!r} of "
                                f"{type(self).__name__}: wrap it in nn.Parameter (or assign None)")
            kind, table = "parameter", params
        elif name in modules:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} to submodule {name!r}: a Module or None")
            kind, table = "module", modules
        elif name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign a {type(value).__name__} to buffer {name!r}: a Tensor or None")
            kind, table = "buffer", buffers
        else:
            object.__setattr__(self, name, value)
            return
        for other in (params, buffers, modules):
            if other is not table:
                other.pop(name, None)
        self.__dict__.pop(name, None)
        table[name] = value  # an existing entry keeps its place (the order of parameters() and state_dict)
    def __getattr__(self, name):  # only called when normal lookup fails
        for table in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(table, {})
            if name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __delattr__(self, name):
        for table in (self._parameters, self._buffers, self._modules):
            if name in table:
                del table[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name, tensor):
        """Keep a tensor that is state but not trained (saved in state_dict, moved by .to())."""
        if name in self._parameters or name in self._modules:
            raise KeyError(f"register_buffer: {name!r} is already a parameter or a submodule")
        self._buffers[name] = tensor

    # ---------------------------------------------------------------- walking the tree
    def named_modules(self, prefix=""):
        """This module and every module below it, with its dotted path (a shared module once)."""
        stack, seen = [(prefix, self)], set()
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{n}" if name else n, m) for n, m in module._modules.items() if m is not None]
            stack.extend(reversed(children))

    def modules(self):
        """This module and every module below it (each shared module once)."""
        return (m for _, m in self.named_modules())

    def named_children(self):
        """(name, module) for the direct submodules, each shared one once."""
        seen = set()
        for n, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield n, m

    def children(self):
        """The direct submodules."""
        return (m for _, m in self.named_children())

    def _named(self, table, recurse=True):
        seen = set()
        for path, module in (self.named_modules() if recurse else [("", self)]):
            for name, t in getattr(module, table).items():
                if t is None or id(t) in seen:
                    continue
                seen.add(id(t))  # a tensor shared by two modules is listed once
                yield (f"{path}.{name}" if path else name), t

    def named_parameters(self, recurse=True):
        """(dotted name, parameter) for the parameters here and (if recurse) below, each shared one once."""
        return self._named("_parameters", recurse)

    def parameters(self, recurse=True):
        """The parameters here and (if recurse) below, each shared one once: what an optimizer updates."""
        return (p for _, p in self.named_parameters(recurse))

    def named_buffers(self, recurse=True):
        """(dotted name, buffer) for the non-trained state (e.g. batch norm's running statistics)."""
        return self._named("_buffers", recurse)

    def buffers(self, recurse=True):
        """The buffers here and (if recurse) below: state that is saved but not trained."""
        return (b for _, b in self.named_buffers(recurse))

    # ---------------------------------------------------------------- modes and devices
    def train(self, mode=True):
        """Training mode (dropout on, batch norm uses batch statistics) for this module and all below."""
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        """Evaluation mode (dropout off, batch norm uses its running statistics): train(False)."""
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        """Turn gradients on or off for every parameter (False freezes the module)."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self):
        """Forget every parameter's gradient (grad = None) before the next backward."""
        for p in self.parameters():
            p.grad = None

    def to(self, device):
        """Move every parameter and buffer to ``device``, in place (optimizers keep working)."""
        for t in list(self.parameters()) + list(self.buffers()):
            if t.device != device:
                t.data = t.to(device).data
                t.device = device
                t.grad = None if t.grad is None else t.grad.to(device)
        return self

    def apply(self, fn):
        """Call fn(module) on every module, children first, in PyTorch's order (e.g. custom init)."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ---------------------------------------------------------------- saving and loading
    def state_dict(self):
        """Every parameter and buffer by its dotted name (tensors sharing memory with the model)."""
        entries = OrderedDict()
        for path, module in self.named_modules():
            for table in (module._parameters, module._buffers):
                for name, t in table.items():
                    if t is not None:
                        entries[f"{path}.{name}" if path else name] = t.detach()
        return entries

    def load_state_dict(self, state_dict, strict=True):
        """Copy values into the model's parameters and buffers by name, all or nothing.

        Shapes must match, and each value must convert to its tensor's dtype without
        losing what it says (no text, no complex into real, no NaN or 2.5 into an integer
        buffer, no overflow to inf). With strict=True (the default) the names must match
        too. Every value is converted and checked before the first one is copied in, so
        an error lists every missing key, unexpected key, shape mismatch and unusable
        value at once, and nothing is changed. With strict=False, matching names are
        loaded and the missing and unexpected keys are returned.
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        mismatched, unusable, values = [], [], {}
        for k, t in own.items():
            if k not in state_dict:
                continue
            try:
                host = _host_array(state_dict[k])
            except Exception as e:  # e.g. a tensor on a device that is gone: say which key, change nothing
                unusable.append(f"{k}: cannot be read ({type(e).__name__}: {e})")
                continue
            if host.shape != t.shape:
                mismatched.append(f"{k}: checkpoint {host.shape}, model {t.shape}")
                continue
            try:
                values[k] = _cast(host, t.dtype)
            except (TypeError, ValueError, ArithmeticError) as e:
                unusable.append(f"{k}: {e}")
        if mismatched or unusable or (strict and (missing or unexpected)):
            lines = [f"load_state_dict: the checkpoint does not fit {type(self).__name__}:"]
            for title, keys in (("missing keys (in the model, not the checkpoint)", missing if strict else []),
                                ("unexpected keys (in the checkpoint, not the model)", unexpected if strict else []),
                                ("shape mismatches", mismatched),
                                ("values that cannot be loaded (fix them, or drop them: strict=False)", unusable)):
                if keys:
                    lines.append(f"  {title}: " + ", ".join(keys))
            if strict and (missing or unexpected):
                lines.append("  (load_state_dict(..., strict=False) loads the keys that match)")
            lines.append("  Nothing was loaded: the model is unchanged.")
            raise RuntimeError("\n".join(lines))
        with no_grad():  # every value converted and checked: now copy them in
            for k, host in values.items():
                t = own[k]
                t.data[...] = t.backend.asarray(host)
                t._version_counter.value += 1
        return IncompatibleKeys(missing, unexpected)

    # ---------------------------------------------------------------- calling and printing
    def forward(self, *args, **kwargs):
        """The module's computation: y = f(x; parameters). Subclasses define it; calling the module runs it."""
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        out = self.forward(*args, **kwargs)
        if self._forward_hooks:  # most modules have none: one dict test per call
            for hook in list(self._forward_hooks.values()):
                result = hook(self, args, out)
                if result is not None:
                    out = result
        return out

    def register_forward_hook(self, hook):
        """Call ``hook(module, inputs, output)`` after every forward of this module; a value it returns
        replaces the output. Returns a handle: ``handle.remove()`` (or ``with`` it) takes the hook off.

        How a model reads what a layer inside another model computed, without changing that model:
        a U-Net keeps its pretrained body's activations this way (see ``hook_outputs``)."""
        handle = RemovableHandle(self._forward_hooks)
        self._forward_hooks[handle.key] = hook
        return handle

    def extra_repr(self):
        """The module's settings shown in its repr, e.g. "in_features=3, out_features=2"."""
        return ""

    def __repr__(self):
        children = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self.named_children()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not children:
            return head + ")"
        return head + "\n  " + "\n  ".join(children) + "\n)"
