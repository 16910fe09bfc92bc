# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 — Autograd from scratch
#
# A neural network learns by nudging every parameter against its gradient: how much the
# loss would grow if the parameter grew a little. minidl computes those gradients the way
# PyTorch does: each op records how to send a gradient back to its inputs, and
# `backward()` walks the recorded graph from the loss to the leaves.
#
# Read alongside: `minidl/autograd.py`, then `minidl/tensor.py`, then one op in
# `minidl/ops/elementwise.py`.

# %%
import numpy as np

import minidl
import minidl.nn.functional as F
from minidl import viz
from minidl.autograd import Function
from minidl.testing import gradcheck

# %% [markdown]
# ## A graph, and its gradient
# $y = \sum_i \mathrm{relu}(x_i w_i)$. By hand: $\partial y/\partial x_i = w_i$ where
# $x_i w_i > 0$, else 0 (and the same with $x$ and $w$ swapped).

# %%
x = minidl.tensor([1.0, 2.0, -0.5], requires_grad=True)
w = minidl.tensor([3.0, -1.0, 2.0], requires_grad=True)
y = (x * w).relu().sum()
y.backward(retain_graph=True)   # keep the graph: we draw it below
print("y =", y.item())
print("dy/dx =", x.grad.numpy(), " by hand:", np.where(x.numpy() * w.numpy() > 0, w.numpy(), 0))
print("dy/dw =", w.grad.numpy(), " by hand:", np.where(x.numpy() * w.numpy() > 0, x.numpy(), 0))

# %% [markdown]
# Each result remembers the op that made it (`grad_fn`), and each op its inputs. That is
# the whole graph: boxes are tensors (leaves that learn in blue), ovals are ops.

# %%
print(y.grad_fn, "<-", y.grad_fn.inputs[0].grad_fn, "<-", y.grad_fn.inputs[0].grad_fn.inputs[0].grad_fn)
viz.draw(y, "autograd_graph.png", names={"x": x, "w": w, "y": y})

# %% [markdown]
# ![the graph](autograd_graph.png)
#
# ## Gradients are checked, not trusted
# A central difference $\frac{f(x+\varepsilon) - f(x-\varepsilon)}{2\varepsilon}$ estimates
# each partial derivative; `gradcheck` compares all of them with one backward pass, in
# float64 so that rounding does not hide a mistake.

# %%
a = minidl.randn(4, 3, dtype=minidl.float64, requires_grad=True)
b = minidl.randn(3, 5, dtype=minidl.float64, requires_grad=True)
gradcheck(lambda a, b: (a @ b).tanh() * 2, a, b)
print("matmul + tanh: backward agrees with finite differences")

# %% [markdown]
# ## Write your own op
# An op is a `Function` with a static `forward` on raw arrays and a `backward` that
# applies the chain rule. Here $\mathrm{softplus}(x) = \log(1 + e^x)$, whose derivative is
# the sigmoid $\sigma(x) = 1 / (1 + e^{-x})$. `ctx.backend` holds the kernels of the
# tensor's device, so the same op runs on numpy, the C++ kernels or CUDA.

# %%
class Softplus(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        be = ctx.backend
        return be.log(be.add(be.exp(x), 1.0))

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_arrays
        return ctx.backend.mul(grad, ctx.backend.sigmoid(x))


t = minidl.randn(6, dtype=minidl.float64, requires_grad=True)
gradcheck(Softplus.apply, t)
print("softplus:", Softplus.apply(t).numpy().round(3))

# %% [markdown]
# A wrong backward does not pass. Drop the sigmoid and gradcheck names the element that disagrees:

# %%
class WrongSoftplus(Softplus):
    @staticmethod
    def backward(ctx, grad):
        return grad


try:
    gradcheck(WrongSoftplus.apply, t)
except AssertionError as e:
    print(str(e).splitlines()[0])

# %% [markdown]
# ## Learning: gradient descent by hand
# Fit $y = 3x - 1$ from noisy points with two parameters and the three-line SGD update.

# %%
minidl.set_seed(0)
xs = minidl.randn(200, 1)
ys = 3 * xs - 1 + 0.1 * minidl.randn(200, 1)
slope = minidl.zeros(1, requires_grad=True)
bias = minidl.zeros(1, requires_grad=True)
for step in range(100):
    loss = F.mse_loss(xs * slope + bias, ys)
    loss.backward()
    with minidl.no_grad():
        for p in (slope, bias):
            p -= 0.1 * p.grad
            p.grad = None
print(f"slope {slope.item():.3f}, bias {bias.item():.3f}, loss {loss.item():.4f}")
assert abs(slope.item() - 3) < 0.05 and abs(bias.item() + 1) < 0.05
