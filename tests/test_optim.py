"""Optimizers and schedules: parity with torch.optim, state dicts, hyper-parameters,
discriminative learning rates, and fastai's one-cycle formulas.
"""
import math
import pickle

import numpy as np
import pytest

import minidl
from minidl.optim import (SGD, Adam, AdamW, Optimizer, combine_scheds, constant, cosine, fastai_adam,
                          lr_for_groups, one_cycle, sched_const, sched_cos, sched_exp, sched_lin)

SHAPES = [(3, 4), (5,), (), (2, 3, 2)]


def make_params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return [minidl.tensor(rng.standard_normal(s).astype(dtype), requires_grad=True) for s in SHAPES]


def copies(params):
    return [minidl.tensor(p.numpy().copy(), requires_grad=True) for p in params]


def two_groups(params, **first_group):
    """Group 0: the first two params (with overrides, e.g. another lr); group 1: the rest."""
    return [{"params": params[:2], **first_group}, {"params": params[2:]}]


def tiny_loss_backward(params, step):
    """A real loss: sum_i sum(w_i * tanh(p_i) + 0.5 * c * p_i^2), changing with the step."""
    rng = np.random.default_rng(100 + step)
    loss = 0
    for p in params:
        w = minidl.tensor(rng.standard_normal(p.shape).astype(p.dtype))
        loss = loss + (w * p.tanh() + 0.5 * (1 + step) * p * p).sum()
    loss.backward()


def train(opt, params, steps, first=0):
    for s in range(first, first + steps):
        opt.zero_grad()
        tiny_loss_backward(params, s)
        opt.step()


# ---------------------------------------------------------------- parity with torch.optim

SGD_CONFIGS = {
    "plain": dict(),
    "momentum": dict(momentum=0.9),
    "nesterov": dict(momentum=0.9, nesterov=True),
    "weight_decay": dict(weight_decay=0.1),
    "momentum+wd+nesterov": dict(momentum=0.8, weight_decay=0.05, nesterov=True),
    "dampening": dict(momentum=0.9, dampening=0.3),
}
ADAM_CONFIGS = {
    "adam": (Adam, "Adam", dict()),
    "adam_l2": (Adam, "Adam", dict(weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6)),
    "adamw": (AdamW, "AdamW", dict()),
    "adamw_wd": (AdamW, "AdamW", dict(weight_decay=0.3, betas=(0.9, 0.99), eps=1e-5)),
}


def run_both(make_minidl, make_torch, steps=5, first_group=None):
    """The same steps on minidl and on torch (torch gets minidl's gradients, bit for bit)."""
    torch = pytest.importorskip("torch")
    first_group = first_group or {"lr": 0.05}
    params = make_params()
    tparams = [torch.tensor(p.numpy().copy(), requires_grad=True) for p in params]
    opt = make_minidl(two_groups(params, **first_group))
    topt = make_torch(two_groups(tparams, **first_group))
    for s in range(steps):
        opt.zero_grad()
        tiny_loss_backward(params, s)
        for p, tp in zip(params, tparams):
            tp.grad = torch.tensor(p.grad.numpy().copy())
        opt.step()
        topt.step()
    for p, tp in zip(params, tparams):
        assert p.dtype == np.float64
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-12, atol=0)
    return params, opt


@pytest.mark.parametrize("config", SGD_CONFIGS.values(), ids=SGD_CONFIGS.keys())
def test_sgd_matches_torch(config):
    torch = pytest.importorskip("torch")
    params, opt = run_both(lambda g: SGD(g, 0.1, **config), lambda g: torch.optim.SGD(g, 0.1, **config))
    if config.get("momentum"):
        assert all(opt.state[p]["momentum_buffer"].shape == p.shape for p in params)
    else:
        assert opt.state == {}  # plain SGD keeps no state


@pytest.mark.parametrize("config", ADAM_CONFIGS.values(), ids=ADAM_CONFIGS.keys())
def test_adam_matches_torch(config):
    torch = pytest.importorskip("torch")
    cls, torch_name, kwargs = config
    params, opt = run_both(lambda g: cls(g, 0.01, **kwargs),
                           lambda g: getattr(torch.optim, torch_name)(g, 0.01, **kwargs))
    assert all(opt.state[p]["step"] == 5 for p in params)


def test_group_overrides_take_pytorch_names_or_uniform_names():
    torch = pytest.importorskip("torch")
    # PyTorch names in a group ...
    run_both(lambda g: SGD(g, 0.1, momentum=0.9), lambda g: torch.optim.SGD(g, 0.1, momentum=0.9),
             first_group={"lr": 0.02, "momentum": 0.5, "weight_decay": 0.1})
    run_both(lambda g: Adam(g, 0.01), lambda g: torch.optim.Adam(g, 0.01),
             first_group={"betas": (0.5, 0.9), "weight_decay": 0.1})
    # ... become the uniform ones
    params = make_params()
    opt = Adam(two_groups(params, betas=(0.5, 0.9)), 0.01)
    assert opt.hypers[0]["mom"] == 0.5 and opt.hypers[0]["sqr_mom"] == 0.9 and opt.hypers[1]["mom"] == 0.9
    opt = SGD(two_groups(params, mom=0.3, wd=0.2), 0.1)
    assert opt.hypers[0]["mom"] == 0.3 and opt.hypers[0]["wd"] == 0.2 and opt.hypers[1]["mom"] == 0.0


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, 0.1, momentum=0.9, weight_decay=0.1, nesterov=True),
                                  lambda ps: Adam(ps, 0.01, weight_decay=0.1),
                                  lambda ps: AdamW(ps, 0.01), lambda ps: fastai_adam(ps, 0.01)],
                         ids=["sgd", "adam", "adamw", "fastai_adam"])
def test_float32_params_and_state_stay_float32_and_match_torch(make):
    torch = pytest.importorskip("torch")
    params = make_params(np.float32)
    tparams = [torch.tensor(p.numpy().copy(), requires_grad=True) for p in params]
    opt = make(params)
    hypers = opt.hypers[0]
    if isinstance(opt, SGD):
        topt = torch.optim.SGD(tparams, 0.1, momentum=0.9, weight_decay=0.1, nesterov=True)
    else:
        cls = torch.optim.AdamW if type(opt) is AdamW else torch.optim.Adam
        topt = cls(tparams, hypers["lr"], betas=(hypers["mom"], hypers["sqr_mom"]), eps=hypers["eps"],
                   weight_decay=hypers["wd"])
    for s in range(5):
        opt.zero_grad()
        tiny_loss_backward(params, s)
        for p, tp in zip(params, tparams):
            tp.grad = torch.tensor(p.grad.numpy().copy())
        opt.step()
        topt.step()
    for p, tp in zip(params, tparams):
        assert p.dtype == np.float32 and p.data.dtype == np.float32
        assert all(v.dtype == np.float32 for v in opt.state[p].values() if not isinstance(v, int))
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=2e-6, atol=1e-7)


def test_kernels_keep_float32_with_numpy_float64_hyper_parameters_and_leave_grad_alone():
    backend = minidl.tensor([0.0]).backend
    rng = np.random.default_rng(0)
    param = rng.standard_normal(6).astype(np.float32)
    grad = rng.standard_normal(6).astype(np.float32)
    grad_before = grad.copy()
    buf = backend.sgd_step(param, grad, None, np.float64(0.1), np.float64(0.9), np.float64(0.1), False)
    assert param.dtype == buf.dtype == np.float32
    np.testing.assert_array_equal(grad, grad_before)
    ex_m, ex_v = np.zeros(6, np.float32), np.zeros(6, np.float32)
    backend.adam_step(param, grad, ex_m, ex_v, 1, np.float64(1e-3), np.float64(0.9), np.float64(0.999),
                      np.float64(1e-8), np.float64(0.01), False)
    assert param.dtype == ex_m.dtype == ex_v.dtype == np.float32
    np.testing.assert_array_equal(grad, grad_before)
    with pytest.raises(ValueError, match="step"):
        backend.adam_step(param, grad, ex_m, ex_v, 0, 1e-3, 0.9, 0.999, 1e-8, 0.0, False)


def test_sgd_kernel_first_step_and_momentum_zero():
    backend = minidl.tensor([0.0]).backend
    param, grad = np.array([1.0, 2.0]), np.array([0.5, -1.0])
    buf = backend.sgd_step(param, grad, None, 0.1, 0.9, 0.0, False)
    np.testing.assert_array_equal(buf, grad)            # the buffer starts as the gradient
    assert buf is not grad                               # ... as a copy
    np.testing.assert_allclose(param, [1.0 - 0.05, 2.0 + 0.1])
    same = backend.sgd_step(param, grad, buf, 0.1, 0.9, 0.0, False)
    assert same is buf                                    # updated in place afterwards
    np.testing.assert_allclose(buf, 0.9 * grad + grad)
    assert backend.sgd_step(param, grad, None, 0.1, 0.0, 0.0, False) is None


# ---------------------------------------------------------------- state dicts

@pytest.mark.parametrize("make", [lambda ps: SGD(two_groups(ps, lr=0.05), 0.1, momentum=0.9, nesterov=True),
                                  lambda ps: Adam(two_groups(ps, lr=0.05), 0.01, weight_decay=0.1),
                                  lambda ps: AdamW(two_groups(ps, lr=0.05), 0.01)],
                         ids=["sgd", "adam", "adamw"])
def test_state_dict_round_trip_is_bit_identical(make):
    params = make_params()
    opt = make(params)
    train(opt, params, 3)
    sd = opt.state_dict()
    saved = pickle.loads(pickle.dumps(sd))   # a state dict can be pickled
    fresh = copies(params)
    opt2 = make(fresh)
    opt2.set_hyper("lr", 123.0)              # overwritten by the load
    opt2.load_state_dict(saved)
    assert opt2.hypers == opt.hypers
    train(opt, params, 2, first=3)
    train(opt2, fresh, 2, first=3)
    for p, q in zip(params, fresh):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
    # the saved copies did not move with training, in either optimizer
    for key, entry in sd["state"].items():
        for name, v in entry.items():
            if isinstance(v, int):
                assert v == saved["state"][key][name] == 3
            else:
                np.testing.assert_array_equal(v, saved["state"][key][name])
                assert not np.shares_memory(v, opt.state[params[key]][name])
    assert sd["param_groups"][0]["params"] == [0, 1] and sd["param_groups"][1]["params"] == [2, 3]


def test_load_state_dict_rejects_a_state_dict_that_does_not_fit():
    params = make_params()
    opt = Adam(two_groups(params), 0.01)
    train(opt, params, 1)
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="2 parameter groups but this optimizer has 1"):
        Adam(make_params(), 0.01).load_state_dict(sd)
    with pytest.raises(ValueError, match="group 1 has 2 parameters in the state dict but 1"):
        ps = make_params()
        Adam(two_groups(ps[:3]), 0.01).load_state_dict(sd)
    bad = opt.state_dict()
    bad["state"][0]["exp_avg"] = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"'exp_avg' of parameter 0 has shape \(4, 3\) but the parameter has "
                                         r"shape \(3, 4\)"):
        Adam(two_groups(make_params()), 0.01).load_state_dict(bad)
    with pytest.raises(ValueError, match="saved from another optimizer"):
        SGD(two_groups(make_params()), 0.1, momentum=0.9).load_state_dict(sd)
    bad = opt.state_dict()
    bad["state"][7] = bad["state"][0]
    with pytest.raises(ValueError, match="parameter 7"):
        Adam(two_groups(make_params()), 0.01).load_state_dict(bad)
    # a failed load changes nothing
    target = Adam(two_groups(make_params()), 0.5)
    with pytest.raises(ValueError):
        target.load_state_dict(bad)
    assert target.state == {} and target.hypers[0]["lr"] == 0.5


# ---------------------------------------------------------------- hyper-parameters, zero_grad, skipping

def test_set_hyper_per_group_scalar_and_length_mismatch():
    params = make_params()
    opt = SGD(two_groups(params), 0.1)
    opt.set_hyper("lr", [0.0, 0.2])
    assert [h["lr"] for h in opt.hypers] == [0.0, 0.2]
    before = [p.numpy().copy() for p in params]
    train(opt, params, 1)
    for p, b in zip(params[:2], before[:2]):   # lr 0: group 0 did not move
        np.testing.assert_array_equal(p.numpy(), b)
    for p, b in zip(params[2:], before[2:]):
        assert not np.array_equal(p.numpy(), b)
    opt.set_hyper("mom", np.float64(0.5))      # a numpy scalar is stored as a Python float
    assert [h["mom"] for h in opt.hypers] == [0.5, 0.5] and type(opt.hypers[0]["mom"]) is float
    opt.set_hyper("lr", np.array([0.3, 0.4]))
    assert [h["lr"] for h in opt.hypers] == [0.3, 0.4]
    with pytest.raises(ValueError, match="3 values for 'lr' but the optimizer has 2 parameter groups"):
        opt.set_hyper("lr", [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="minidl calls it 'mom'"):
        opt.set_hyper("momentum", 0.9)
    with pytest.raises(ValueError, match="learning rate must be >= 0"):
        opt.set_hyper("lr", [0.1, -1.0])
    assert [h["lr"] for h in opt.hypers] == [0.3, 0.4]   # nothing set when one value is bad


def test_one_cycle_schedule_drives_adam_hypers_per_group():
    params = make_params()
    opt = Adam(two_groups(params), 0.01)
    policy = one_cycle([1e-3, 1e-2])
    for name, sched in policy.items():
        opt.set_hyper(name, sched(0.25))
    assert [h["lr"] for h in opt.hypers] == [1e-3, 1e-2]
    assert [h["mom"] for h in opt.hypers] == [0.85, 0.85]


def test_zero_grad_and_params_without_grad_are_skipped():
    params = make_params()
    opt = Adam(params, 0.01)
    tiny_loss_backward(params, 0)
    assert all(p.grad is not None for p in params)
    opt.zero_grad()
    assert all(p.grad is None for p in params)
    frozen = params[1]
    tiny_loss_backward(params, 0)
    frozen.grad = None
    before, version = frozen.numpy().copy(), frozen.version
    versions = [p.version for p in params]
    opt.step()
    np.testing.assert_array_equal(frozen.numpy(), before)
    assert frozen not in opt.state and frozen.version == version
    assert all(p.version == v + 1 for p, v in zip(params, versions) if p is not frozen)


def test_step_refuses_a_gradient_that_does_not_match_its_parameter():
    p = minidl.tensor(np.ones((2, 3)), requires_grad=True)
    p.grad = minidl.tensor(np.ones((3, 2)))
    with pytest.raises(RuntimeError, match=r"shape \(2, 3\).*gradient of shape \(3, 2\)"):
        SGD([p], 0.1).step()


def test_a_step_between_forward_and_backward_is_caught_by_the_version_counter():
    p = minidl.tensor(np.array([1.0, 2.0]), requires_grad=True)
    loss = (p * p).sum()                  # saves p's array for backward
    p.grad = minidl.tensor(np.array([1.0, 1.0]))
    SGD([p], 0.1).step()                  # changes that array in place
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()


@pytest.mark.parametrize("build, message", [
    (lambda ps: SGD([], 0.1), "empty parameter list"),
    (lambda ps: SGD(ps[0], 0.1), "list of tensors"),
    (lambda ps: SGD(ps, -0.1), "learning rate must be >= 0"),
    (lambda ps: SGD(ps, 0.1, momentum=-0.5), "momentum must be >= 0"),
    (lambda ps: SGD(ps, 0.1, nesterov=True), "nesterov=True needs momentum > 0"),
    (lambda ps: SGD(ps, 0.1, weight_decay=float("nan")), "weight decay"),
    (lambda ps: Adam(ps, betas=(0.9, 1.0)), "beta2"),
    (lambda ps: Adam(ps, betas=(1.5, 0.9)), "beta1"),
    (lambda ps: Adam(ps, eps=-1.0), "eps"),
    (lambda ps: SGD([ps[0], ps[0]], 0.1), "appears twice"),
    (lambda ps: SGD([{"params": ps[:1]}, {"params": ps[:1]}], 0.1), "appears twice"),
    (lambda ps: SGD([{"params": ps, "betas": (0.9, 0.99)}], 0.1), "unknown hyper-parameter 'betas'"),
    (lambda ps: SGD([{"params": []}], 0.1), "empty parameter list"),
    (lambda ps: SGD([ps[0], {"params": ps[1:]}], 0.1), "mixes tensors and dicts"),
    (lambda ps: SGD([minidl.tensor([1, 2])], 0.1), "int64 cannot be optimized"),
])
def test_constructor_errors(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build(make_params())


def test_optimizer_is_the_base_class():
    opt = AdamW(make_params(), 0.01)
    assert isinstance(opt, Adam) and isinstance(opt, Optimizer)
    assert opt.hypers[0] == {"lr": 0.01, "mom": 0.9, "sqr_mom": 0.999, "eps": 1e-8, "wd": 0.01}
    assert fastai_adam(make_params(), 3e-3).hypers[0] == {"lr": 3e-3, "mom": 0.9, "sqr_mom": 0.99,
                                                          "eps": 1e-5, "wd": 0.01}
    assert "group 0: 4 params" in repr(opt)


# ---------------------------------------------------------------- discriminative learning rates

def even_mults(start, stop, n):
    """fastai's even_mults, written out."""
    step = (stop / start) ** (1 / (n - 1))
    return [start * step ** i for i in range(n)]


def test_lr_for_groups():
    assert lr_for_groups(1e-3, 3) == [1e-3] * 3
    assert lr_for_groups(slice(1e-3), 3) == [1e-4, 1e-4, 1e-3]
    assert lr_for_groups(slice(1e-3), 1) == [1e-3]
    rates = lr_for_groups(slice(1e-5, 1e-3), 3)
    assert rates == pytest.approx(even_mults(1e-5, 1e-3, 3), rel=1e-12)
    assert rates[0] == 1e-5 and rates[-1] == 1e-3 and rates[1] == pytest.approx(1e-4, rel=1e-12)
    assert lr_for_groups(slice(1e-6, 1e-2), 5) == pytest.approx([1e-6, 1e-5, 1e-4, 1e-3, 1e-2], rel=1e-12)
    assert lr_for_groups(slice(1e-5, 1e-3), 1) == [1e-3]
    assert lr_for_groups([1e-4, 1e-3], 2) == [1e-4, 1e-3]
    with pytest.raises(ValueError, match="3 learning rates for 2 parameter groups"):
        lr_for_groups([1, 2, 3], 2)
    with pytest.raises(ValueError, match="lo must be > 0"):
        lr_for_groups(slice(0, 1e-3), 3)
    with pytest.raises(ValueError, match=r"slice\(hi\) or slice\(lo, hi\)"):
        lr_for_groups(slice(1e-5, 1e-3, 2), 3)


# ---------------------------------------------------------------- schedules

def fastai_cos(start, end, pos):
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def fastai_one_cycle_lr(pos, lr_max, div=25.0, div_final=1e5, pct_start=0.25):
    if pos < pct_start:
        return fastai_cos(lr_max / div, lr_max, pos / pct_start)
    return fastai_cos(lr_max, lr_max / div_final, (pos - pct_start) / (1 - pct_start))


def test_building_blocks():
    assert sched_lin(1.0, 3.0)(0.25) == 1.5
    assert sched_cos(1.0, 3.0)(0.0) == 1.0 and sched_cos(1.0, 3.0)(0.5) == pytest.approx(2.0)
    assert sched_cos(1.0, 3.0)(0.3) == pytest.approx(fastai_cos(1.0, 3.0, 0.3), rel=1e-15)
    assert sched_const(4.0)(0.7) == 4.0
    assert sched_exp(1e-7, 10.0)(0.5) == pytest.approx(1e-3, rel=1e-12)
    assert sched_lin([0.0, 1.0], 2.0)(0.5) == [1.0, 1.5]   # one value per group
    with pytest.raises(ValueError, match=r"pct .* must be in \[0, 1\]"):
        sched_lin(0.0, 1.0)(1.5)


def test_combine_scheds_three_pieces():
    sched = combine_scheds([0.2, 0.5, 0.3], [sched_lin(0.0, 1.0), sched_const(5.0), sched_cos(2.0, 4.0)])
    assert sched(0.0) == 0.0
    assert sched(0.1) == pytest.approx(0.5)
    assert sched(0.2) == 5.0                                   # a boundary starts the next piece
    assert sched(0.69) == 5.0
    assert sched(0.7) == 2.0
    assert sched(0.85) == pytest.approx(fastai_cos(2.0, 4.0, 0.5))
    assert sched(1.0) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="add up to 1"):
        combine_scheds([0.5, 0.4], [sched_const(1), sched_const(2)])
    with pytest.raises(ValueError, match="one fraction per schedule"):
        combine_scheds([1.0], [sched_const(1), sched_const(2)])
    # a piece of width 0 is never used (fastai would divide by zero)
    assert combine_scheds([1.0, 0.0], [sched_lin(0.0, 1.0), sched_const(9.0)])(1.0) == 1.0
    assert combine_scheds([0.0, 1.0], [sched_const(9.0), sched_lin(0.0, 1.0)])(0.0) == 0.0


def test_one_cycle_matches_fastai():
    lr_max = 1e-2
    policy = one_cycle(lr_max)
    lr, mom = policy["lr"], policy["mom"]
    assert lr(0.0) == pytest.approx(lr_max / 25, rel=1e-12) and mom(0.0) == pytest.approx(0.95, rel=1e-12)
    assert lr(0.25) == lr_max and mom(0.25) == 0.85
    assert lr(1.0) == pytest.approx(lr_max / 1e5, rel=1e-9) and mom(1.0) == pytest.approx(0.95, rel=1e-12)
    for pos in [0.0, 0.05, 0.1, 0.2, 0.25, 0.3, 0.5, 0.77, 0.99, 1.0]:
        assert lr(pos) == pytest.approx(fastai_one_cycle_lr(pos, lr_max), rel=1e-12)
        m = fastai_cos(0.95, 0.85, pos / 0.25) if pos < 0.25 else fastai_cos(0.85, 0.95, (pos - 0.25) / 0.75)
        assert mom(pos) == pytest.approx(m, rel=1e-12)
    grid = [i / 400 for i in range(401)]
    lrs, moms = [lr(p) for p in grid], [mom(p) for p in grid]
    peak = 100   # pct 0.25
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a > b for a, b in zip(lrs[peak:], lrs[peak + 1:]))
    assert all(a > b for a, b in zip(moms[:peak], moms[1:peak + 1]))
    assert all(a < b for a, b in zip(moms[peak:], moms[peak + 1:]))
    # other settings, and one lr_max per group
    custom = one_cycle(np.array([1e-3, 1e-2]), div=10.0, div_final=1e4, pct_start=0.3, moms=None)
    assert set(custom) == {"lr"}
    assert custom["lr"](0.6) == pytest.approx([fastai_one_cycle_lr(0.6, v, 10.0, 1e4, 0.3) for v in (1e-3, 1e-2)],
                                              rel=1e-12)


def test_cosine_and_constant_policies():
    policy = cosine(0.1, div_final=100.0)
    assert set(policy) == {"lr"}
    assert policy["lr"](0.0) == 0.1 and policy["lr"](1.0) == pytest.approx(1e-3, rel=1e-12)
    assert policy["lr"](0.4) == pytest.approx(fastai_cos(0.1, 1e-3, 0.4), rel=1e-12)
    flat = cosine(0.1, pct_start=0.75)["lr"]        # fastai's fit_flat_cos
    assert flat(0.5) == 0.1 and flat(0.875) == pytest.approx(fastai_cos(0.1, 1e-6, 0.5), rel=1e-12)
    assert constant(3e-3)["lr"](0.9) == 3e-3
    assert constant([1e-3, 2e-3])["lr"](0.1) == [1e-3, 2e-3]
