"""Checking gradients against finite differences: how minidl knows its backward passes are right.

    from minidl.testing import gradcheck
    x = minidl.randn(3, 4, dtype=minidl.float64, requires_grad=True)
    gradcheck(lambda x: (x * x).sum(dim=1), x)

For a function f and inputs x, autograd gives the gradient of L = sum(w * f(x)) for a
random weight w (one backward checks every output at once). Central differences give
the same number independently: dL/dx_i ~ (L(x + h e_i) - L(x - h e_i)) / 2h, with an
error of order h^2. In float64 with h = 1e-6 the two agree to about 1e-8.
"""
import numpy as np

from .autograd import no_grad
from .tensor import Tensor, float64


class GradcheckError(AssertionError):
    pass


def _outputs(fn, inputs):
    out = fn(*inputs)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def gradcheck(fn, *inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Compare autograd's gradients of ``fn(*inputs)`` with central differences.

    Inputs with ``requires_grad=True`` are checked; they should be float64 (float32
    rounding swamps the finite differences). Returns True, or raises GradcheckError
    naming the input, the worst element and both values.
    """
    checked = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, so there is nothing to check")
    for t in checked:
        if t.dtype != float64:
            raise ValueError(f"gradcheck: input of shape {t.shape} is {t.dtype}; use float64 "
                             f"(float32 rounding is larger than the finite-difference error)")

    rng = np.random.default_rng(seed)
    outputs = _outputs(fn, inputs)
    weights = [rng.standard_normal(o.shape) for o in outputs]

    def weighted_sum(outs):
        return sum(float((o.numpy().astype(np.float64) * w).sum()) for o, w in zip(outs, weights))

    # analytic: one backward of sum(w * f(x)); the inputs' own .grad is put back afterwards
    users_grads = [t.grad for t in checked]
    for t in checked:
        t.grad = None
    loss = sum(((o * Tensor(w, dtype=o.dtype, device=o.device)).sum() for o, w in zip(outputs, weights)
                if o.requires_grad), Tensor(0.0, dtype=float64, device=checked[0].device))
    if loss.requires_grad:
        loss.backward()

    analytic_grads = [t.grad.numpy() if t.grad is not None else np.zeros(t.shape) for t in checked]
    for t, g in zip(checked, users_grads):
        t.grad = g

    # numeric: perturb each element in place and re-run the function
    for k, (t, analytic) in enumerate(zip(checked, analytic_grads)):
        numeric = np.zeros(t.shape)
        host = t.detach().numpy()  # on "cpu" this is t's own memory (writable); other devices copy back below
        with no_grad():
            for i in np.ndindex(*t.shape):
                original = host[i]
                values = []
                for step in (eps, -eps):
                    host[i] = original + step
                    _write_back(t, host)
                    values.append(weighted_sum(_outputs(fn, inputs)))
                host[i] = original
                _write_back(t, host)
                numeric[i] = (values[0] - values[1]) / (2 * eps)
        error = np.abs(analytic - numeric)
        bound = atol + rtol * np.abs(numeric)
        bad = ~(error <= bound)  # also true where either side is nan
        if bad.any():
            worst = np.unravel_index(np.argmax(np.where(bad, np.nan_to_num(error - bound, nan=np.inf), -np.inf)),
                                     error.shape) if error.size else ()
            raise GradcheckError(
                f"gradcheck failed for input {k} (shape {t.shape}): at index {tuple(int(i) for i in worst)} "
                f"autograd gives {analytic[worst]:.8g} but finite differences give {numeric[worst]:.8g} "
                f"(|error| {error[worst]:.3g} > atol {atol} + rtol {rtol} * |numeric|); "
                f"{int(bad.sum())} of {error.size} elements are off (nan counts as off: is the function "
                f"defined at these inputs?)")
    return True


def _write_back(t, host):
    if t.device != "cpu":
        t.data[...] = t.backend.asarray(host)
