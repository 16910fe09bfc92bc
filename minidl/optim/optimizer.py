"""Optimizers: how parameters move once their gradients are known.

An optimizer holds the parameters in *groups* (PyTorch's param groups): each group is
a dict with its "params" and its own hyper-parameters, so the body of a network can
learn more slowly than its head (discriminative learning rates, ``lr_for_groups``).

Hyper-parameters have the same names in every optimizer, so one schedule drives any
of them (``opt.set_hyper("lr", ...)``, ``opt.set_hyper("mom", ...)``):

    lr        learning rate
    mom       momentum: SGD's momentum, Adam's beta1
    sqr_mom   Adam's beta2 (the momentum of the squared gradient)
    eps       Adam's epsilon
    wd        weight decay (L2 for SGD and Adam, decoupled for AdamW)
    nesterov, dampening   SGD only

The constructors also take PyTorch's names (``momentum``, ``betas``, ``weight_decay``),
and so do the per-group dicts. The update itself is one backend kernel per parameter
(``sgd_step``, ``adam_step`` in backend/numpy_ref.py), run on the parameter's array,
its gradient's array and the state arrays, in place.

fastai's default optimizer is Adam with decoupled weight decay 0.01, betas (0.9, 0.99)
and eps 1e-5: ``fastai_adam(params, lr)``.
"""
import math
import numbers

from ..autograd import no_grad
from ..tensor import Tensor, is_float

# ---------------------------------------------------------------- hyper-parameter rules
# name -> (test, what a valid value is). Values are stored as Python floats/bools.

_RULES = {
    "lr": (lambda v: v >= 0, "a learning rate must be >= 0"),
    "wd": (lambda v: v >= 0, "weight decay must be >= 0"),
    "eps": (lambda v: v >= 0, "eps must be >= 0"),
    "sqr_mom": (lambda v: 0 <= v < 1, "Adam's beta2 (sqr_mom) must be in [0, 1)"),
    "dampening": (lambda v: 0 <= v <= 1, "dampening must be in [0, 1]"),
}


class Optimizer:
    """Base class: parameter groups, hyper-parameters, state, zero_grad and state dicts.

    A subclass sets ``defaults`` (hyper-parameter name -> value, via ``__init__``),
    ``aliases`` (PyTorch name -> minidl name(s)), ``state_keys`` and ``_update(p, group)``,
    which moves one parameter whose gradient is set.
    """

    aliases = {"weight_decay": ("wd",)}   # PyTorch name -> the uniform name(s) it stands for
    state_keys = ()                       # the keys of self.state[p], for load_state_dict's checks

    def __init__(self, params, defaults):
        name = type(self).__name__
        if isinstance(params, (Tensor, dict)):
            raise TypeError(f"{name}: params must be a list of tensors or a list of dicts "
                            f"(parameter groups), got a single {type(params).__name__}; wrap it in a list")
        self.defaults = {k: self._checked(k, v) for k, v in defaults.items()}
        self.param_groups = []
        self.state = {}   # param -> dict of state arrays and counters (keyed by identity)
        self.no_weight_decay = set()   # ids of parameters that get no weight decay (exclude_from_weight_decay)
        params = list(params)
        if not params:
            raise ValueError(f"{name}: got an empty parameter list; pass model.parameters() "
                             f"(is the model built, and does it have parameters?)")
        if all(isinstance(p, dict) for p in params):
            groups = params
        elif any(isinstance(p, dict) for p in params):
            raise TypeError(f"{name}: params mixes tensors and dicts; pass either tensors or "
                            f"parameter groups ({{'params': [...], 'lr': ...}}), not both")
        else:
            groups = [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    # ---------------------------------------------------------------- groups and hyper-parameters
    def add_param_group(self, group):
        """Add a group: {"params": [...], **hyper-parameters}; missing ones come from the defaults."""
        name = type(self).__name__
        group = dict(group)
        if "params" not in group:
            raise ValueError(f"{name}: a parameter group needs a 'params' key, got keys {sorted(group)}")
        params = group.pop("params")
        params = [params] if isinstance(params, Tensor) else list(params)
        if not params:
            raise ValueError(f"{name}: parameter group {len(self.param_groups)} has an empty parameter list")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{name}: parameters must be minidl Tensors, got {type(p).__name__}")
            if not is_float(p.dtype):
                raise TypeError(f"{name}: a parameter of dtype {p.dtype} cannot be optimized; "
                                f"parameters must be float32 or float64")
            if id(p) in seen:
                raise ValueError(f"{name}: a parameter (shape {p.shape}) appears twice, in one group or "
                                 f"in two; give each parameter to one group only")
            seen.add(id(p))
        hypers = dict(self.defaults)
        for key, value in group.items():
            hypers.update(self._translate(key, value))
        self._check_group(hypers)
        self.param_groups.append({"params": params, **hypers})

    def _translate(self, key, value):
        """One group entry -> {uniform name: checked value} (PyTorch names accepted)."""
        if key in self.defaults:
            return {key: self._checked(key, value)}
        if key in self.aliases:
            names = self.aliases[key]
            values = (value,) if len(names) == 1 else tuple(value)
            if len(values) != len(names):
                raise ValueError(f"{type(self).__name__}: {key} must have {len(names)} values, got {value!r}")
            return {n: self._checked(n, v) for n, v in zip(names, values)}
        raise ValueError(f"{type(self).__name__}: unknown hyper-parameter {key!r}; "
                         f"this optimizer has {self._known_names()}")

    def _known_names(self):
        return ", ".join(list(self.defaults) + [f"{k} (PyTorch name)" for k in self.aliases])

    def _checked(self, name, value):
        """Validate one hyper-parameter; return it as a Python float (bool for nesterov)."""
        opt = type(self).__name__
        if name == "nesterov":
            if not isinstance(value, bool):
                raise TypeError(f"{opt}: nesterov must be True or False, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{opt}: hyper-parameter {name} must be a number, got {value!r} "
                            f"({type(value).__name__})")
        value = float(value)
        test, rule = self._rules().get(name, (None, None))
        if test is not None and (math.isnan(value) or not test(value)):
            raise ValueError(f"{opt}: invalid {name}={value}: {rule}")
        return value

    def _rules(self):
        return _RULES

    def _check_group(self, group):
        """Checks across hyper-parameters of one group (SGD: nesterov needs momentum)."""

    def set_hyper(self, name, value):
        """Set hyper-parameter ``name``: one value for every group, or a list with one per group.

        The names are uniform across optimizers (lr, mom, wd, ...), so a schedule from
        minidl.optim.schedule can drive any optimizer.
        """
        opt = type(self).__name__
        if name not in self.defaults:
            hint = ""
            for alias, names in self.aliases.items():
                if alias == name:
                    hint = f" (minidl calls it {' and '.join(repr(n) for n in names)})"
            raise ValueError(f"{opt}.set_hyper: unknown hyper-parameter {name!r}{hint}; "
                             f"this optimizer has {', '.join(self.defaults)}")
        if hasattr(value, "tolist"):   # a numpy array (or 0-d array) of values
            value = value.tolist()
        if isinstance(value, (numbers.Real, bool)):
            values = [value] * len(self.param_groups)
        else:
            values = list(value)
            if len(values) != len(self.param_groups):
                raise ValueError(f"{opt}.set_hyper: {len(values)} values for {name!r} but the optimizer has "
                                 f"{len(self.param_groups)} parameter groups; pass one value per group, "
                                 f"or a single value for all of them")
        values = [self._checked(name, v) for v in values]  # all checked before any is set
        for group, v in zip(self.param_groups, values):
            group[name] = v

    @property
    def hypers(self):
        """The hyper-parameters of each group: a list of dicts (without "params")."""
        return [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]

    # ---------------------------------------------------------------- the update
    def exclude_from_weight_decay(self, params):
        """No weight decay for these parameters (fastai's default for biases and batch norm)."""
        self.no_weight_decay.update(id(p) for p in params)

    def step(self):
        """Move every parameter that has a gradient (parameters whose .grad is None are skipped)."""
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    self._check_grad(p)
                    self._update(p, group, 0.0 if id(p) in self.no_weight_decay else group["wd"])
                    p._version_counter.value += 1   # its array changed in place

    def _update(self, p, group, wd):
        raise NotImplementedError

    def _check_grad(self, p):
        g = p.grad
        if g.shape != p.shape or g.dtype != p.dtype or g.device != p.device:
            raise RuntimeError(
                f"{type(self).__name__}.step: a parameter of shape {p.shape}, {p.dtype} on {p.device!r} has a "
                f"gradient of shape {g.shape}, {g.dtype} on {g.device!r}; a gradient must match its "
                f"parameter (set p.grad to a tensor like p, or let backward() fill it)")

    def zero_grad(self):
        """Forget every gradient (sets .grad to None, so the next backward starts afresh)."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    # ---------------------------------------------------------------- saving and loading
    def _all_params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self):
        """A copy of the state, PyTorch-style, with parameters named by their index:

            {"state": {index: {name: numpy array or int}},
             "param_groups": [{hyper-parameters..., "params": [indices]}]}

        Indices count the parameters of every group, in order. Arrays are copied to
        numpy, so the dict can be pickled and does not change when training goes on.
        """
        index = {id(p): i for i, p in enumerate(self._all_params())}
        state = {}
        for p, entry in self.state.items():
            state[index[id(p)]] = {k: v if isinstance(v, int) else p.backend.to_numpy(p.backend.copy(v))
                                   for k, v in entry.items()}
        groups = [{**hypers, "params": [index[id(p)] for p in g["params"]]}
                  for hypers, g in zip(self.hypers, self.param_groups)]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters and state saved by ``state_dict()``.

        The optimizer must have the same groups, with the same number of parameters
        each, of the same shapes. Everything is checked before anything is changed.
        State arrays are copied onto each parameter's device, in its dtype.
        """
        opt = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError(f"{opt}: expected a dict with keys 'state' and 'param_groups' "
                             f"(from optimizer.state_dict())")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{opt}: the state dict has {len(saved_groups)} parameter groups but this optimizer "
                             f"has {len(self.param_groups)}; build the optimizer with the same groups as the one saved")
        new_hypers = []
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{opt}: parameter group {i} has {len(saved['params'])} parameters in the state "
                                 f"dict but {len(group['params'])} in this optimizer; build the optimizer over "
                                 f"the same model (and the same groups) as the one saved")
            hypers = {k: v for k, v in saved.items() if k != "params"}
            if set(hypers) != set(self.defaults):
                raise ValueError(f"{opt}: parameter group {i} has hyper-parameters {sorted(hypers)}, "
                                 f"expected {sorted(self.defaults)}; was it saved from another optimizer?")
            hypers = {k: self._checked(k, v) for k, v in hypers.items()}
            self._check_group(hypers)
            new_hypers.append(hypers)
        params = self._all_params()
        new_state = {}
        for key, entry in state_dict["state"].items():
            i = int(key)
            if not 0 <= i < len(params):
                raise ValueError(f"{opt}: the state dict has state for parameter {i}, but this optimizer has "
                                 f"{len(params)} parameters (0 to {len(params) - 1})")
            p = params[i]
            if set(entry) != set(self.state_keys):
                raise ValueError(f"{opt}: the state of parameter {i} has keys {sorted(entry)}, expected "
                                 f"{sorted(self.state_keys)}; was it saved from another optimizer?")
            restored = {}
            for k, v in entry.items():
                if isinstance(v, numbers.Integral):
                    restored[k] = int(v)
                    continue
                shape = getattr(v, "shape", None)
                if shape is None or tuple(shape) != p.shape:
                    raise ValueError(f"{opt}: state {k!r} of parameter {i} has shape "
                                     f"{None if shape is None else tuple(shape)} but the parameter has shape "
                                     f"{p.shape}; the state dict belongs to a different model")
                restored[k] = p.backend.copy(p.backend.asarray(v, p.dtype))
            new_state[p] = restored
        for group, hypers in zip(self.param_groups, new_hypers):
            group.update(hypers)
        self.state = new_state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            hypers = ", ".join(f"{k}={v}" for k, v in g.items() if k != "params")
            lines.append(f"  group {i}: {len(g['params'])} params, {hypers}")
        return "\n".join(lines + [")"])


# ---------------------------------------------------------------- SGD

class SGD(Optimizer):
    """Stochastic gradient descent, with optional momentum, Nesterov momentum and L2 weight decay.

        g = grad + wd * param;  buf = mom * buf + (1 - dampening) * g  (buf = g at first)
        param -= lr * (g + mom * buf  if nesterov else  buf)

    (torch.optim.SGD's semantics; kernel ``sgd_step``.) Hyper-parameters: lr, mom, wd,
    nesterov, dampening.
    """

    aliases = {"momentum": ("mom",), "weight_decay": ("wd",)}
    state_keys = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False, *, dampening=0.0):
        super().__init__(params, dict(lr=lr, mom=momentum, wd=weight_decay, nesterov=nesterov,
                                      dampening=dampening))

    def _rules(self):
        return {**_RULES, "mom": (lambda v: v >= 0, "momentum must be >= 0")}

    def _check_group(self, group):
        if group["nesterov"] and (group["mom"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"SGD: nesterov=True needs momentum > 0 and dampening 0 "
                             f"(got momentum={group['mom']}, dampening={group['dampening']})")

    def _update(self, p, group, wd):
        state = self.state.get(p, {})
        buf = p.backend.sgd_step(p.data, p.grad.data, state.get("momentum_buffer"), group["lr"], group["mom"],
                                 wd, group["nesterov"], group["dampening"])
        if buf is not None:
            self.state[p] = {"momentum_buffer": buf}


# ---------------------------------------------------------------- Adam and AdamW

class Adam(Optimizer):
    """Adam: steps scaled by running averages of the gradient and of its square.

        m = mom * m + (1 - mom) * g;  v = sqr_mom * v + (1 - sqr_mom) * g^2
        param -= lr * m_hat / (sqrt(v_hat) + eps),  m_hat = m / (1 - mom^t), v_hat = v / (1 - sqr_mom^t)

    Weight decay is L2 (g = grad + wd * param), as in torch.optim.Adam; AdamW decouples
    it. Kernel ``adam_step``. Hyper-parameters: lr, mom (beta1), sqr_mom (beta2), eps, wd.
    """

    decoupled = False   # True: decoupled weight decay (AdamW)
    aliases = {"betas": ("mom", "sqr_mom"), "weight_decay": ("wd",)}
    state_keys = ("step", "exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        betas = tuple(betas)
        if len(betas) != 2:
            raise ValueError(f"{type(self).__name__}: betas must be (beta1, beta2), got {betas!r}")
        super().__init__(params, dict(lr=lr, mom=betas[0], sqr_mom=betas[1], eps=eps, wd=weight_decay))

    def _rules(self):
        return {**_RULES, "mom": (lambda v: 0 <= v < 1, "Adam's beta1 (mom) must be in [0, 1)")}

    def _update(self, p, group, wd):
        state = self.state.get(p)
        if state is None:
            state = self.state[p] = {"step": 0, "exp_avg": p.backend.zeros(p.shape, p.dtype),
                                     "exp_avg_sq": p.backend.zeros(p.shape, p.dtype)}
        state["step"] += 1
        p.backend.adam_step(p.data, p.grad.data, state["exp_avg"], state["exp_avg_sq"], state["step"],
                            group["lr"], group["mom"], group["sqr_mom"], group["eps"], wd, self.decoupled)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): param *= 1 - lr * wd before each step.

    torch.optim.AdamW's semantics (weight_decay 0.01 by default).
    """

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr, betas, eps, weight_decay)


def fastai_adam(params, lr=1e-3, wd=0.01):
    """fastai's default optimizer: Adam, decoupled weight decay 0.01, betas (0.9, 0.99), eps 1e-5.

    The same update as fastai's ``Adam(params, lr, mom=0.9, sqr_mom=0.99, eps=1e-5, wd=0.01)``
    (which decouples weight decay by default).
    """
    return AdamW(params, lr, betas=(0.9, 0.99), eps=1e-5, weight_decay=wd)


# ---------------------------------------------------------------- discriminative learning rates

def lr_for_groups(lr, n_groups):
    """One learning rate per parameter group, fastai-style; returns a list of floats.

      * a number: the same rate for every group;
      * ``slice(hi)``: hi / 10 for every group but the last, hi for the last (the head);
      * ``slice(lo, hi)``: rates spaced geometrically from lo (first group) to hi (last):
        lr_i = lo * (hi / lo) ** (i / (n - 1))   (fastai's even_mults);
      * a list or tuple with one rate per group: as it is.
    """
    if not isinstance(n_groups, numbers.Integral) or n_groups < 1:
        raise ValueError(f"lr_for_groups: n_groups must be a positive int, got {n_groups!r}")

    def rate(v, what):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not v >= 0:
            raise ValueError(f"lr_for_groups: {what} must be a number >= 0, got {v!r}")
        return float(v)

    if isinstance(lr, slice):
        if lr.step is not None or lr.stop is None:
            raise ValueError(f"lr_for_groups: use slice(hi) or slice(lo, hi), got {lr!r}")
        hi = rate(lr.stop, "the slice's upper rate")
        if lr.start is None:
            return [hi / 10] * (n_groups - 1) + [hi]
        lo = rate(lr.start, "the slice's lower rate")
        if lo == 0:
            raise ValueError("lr_for_groups: slice(lo, hi) spaces the rates geometrically, so lo must be > 0")
        if n_groups == 1:
            return [hi]
        middle = [lo * (hi / lo) ** (i / (n_groups - 1)) for i in range(1, n_groups - 1)]
        return [lo] + middle + [hi]
    if hasattr(lr, "tolist"):   # a numpy array
        lr = lr.tolist()
    if isinstance(lr, numbers.Real) and not isinstance(lr, bool):
        return [rate(lr, "a learning rate")] * n_groups
    if isinstance(lr, (list, tuple)):
        if len(lr) != n_groups:
            raise ValueError(f"lr_for_groups: {len(lr)} learning rates for {n_groups} parameter groups; "
                             f"pass one per group, a single number, or a slice")
        return [rate(v, "each learning rate") for v in lr]
    raise TypeError(f"lr_for_groups: lr must be a number, a slice(lo, hi) or a list, got {type(lr).__name__}")
