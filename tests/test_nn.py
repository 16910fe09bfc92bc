"""minidl.nn: layers, losses and Module against torch.nn, plus Module's own behaviour.

Parity tests build the same layer in both libraries, copy torch's weights into
minidl with load_state_dict (so the state_dict key names must agree too) and compare
outputs and gradients in float64. Tests that need torch skip without it.
"""
import math
import re

import numpy as np
import pytest

import minidl
from minidl import nn
from minidl.nn import init

RTOL, ATOL = 1e-10, 1e-12


# ---------------------------------------------------------------- helpers

def double(model):
    """Make every float parameter and buffer float64 (in place: the same Parameter objects)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.dtype.kind == "f":
            t.data = t.data.astype(np.float64)
    return model


def from_torch(model, tmodel):
    """Copy torch's weights into a (float64) minidl model, by state_dict name."""
    model.load_state_dict({k: v.detach().numpy() for k, v in tmodel.state_dict().items()})
    return model


def close(a, b, rtol=RTOL, atol=ATOL):
    a = a.numpy() if isinstance(a, minidl.Tensor) else a
    b = b.detach().numpy() if hasattr(b, "detach") else b
    assert np.shape(a) == np.shape(b)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def run_both(model, tmodel, x, seed=0):
    """Forward x (a numpy array) through both, backward a random upstream gradient;
    return the minidl and torch outputs and inputs (with their grads)."""
    import torch
    xm = minidl.from_numpy(x.copy())
    xt = torch.from_numpy(x.copy())
    if x.dtype.kind == "f":
        xm.requires_grad_()
        xt.requires_grad_()
    ym, yt = model(xm), tmodel(xt)
    g = np.random.default_rng(seed).standard_normal(tuple(yt.shape))
    if ym.requires_grad:
        ym.backward(minidl.from_numpy(g))
        yt.backward(torch.from_numpy(g))
    return ym, yt, xm, xt


def assert_same_grads(model, tmodel, rtol=RTOL):
    tparams = dict(tmodel.named_parameters())
    names = [n for n, _ in model.named_parameters()]
    assert names == list(tparams)
    for name, p in model.named_parameters():
        tp = tparams[name]
        if tp.grad is None:
            assert p.grad is None, name
        else:
            assert p.grad is not None, name
            close(p.grad, tp.grad, rtol=rtol)


def rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- layer parity with torch.nn
# Each case is (constructor taking the nn namespace, input shape); the same code builds
# the minidl and the torch layer, as the APIs agree.

LAYER_CASES = {
    "linear": (lambda n: n.Linear(5, 3), (4, 5)),
    "linear_3d_input": (lambda n: n.Linear(5, 3), (2, 4, 5)),
    "linear_no_bias": (lambda n: n.Linear(5, 3, bias=False), (4, 5)),
    "conv": (lambda n: n.Conv2d(3, 4, 3), (2, 3, 7, 6)),
    "conv_stride_padding": (lambda n: n.Conv2d(3, 6, 3, stride=2, padding=1), (2, 3, 9, 8)),
    "conv_rect_dilation_groups": (lambda n: n.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=2,
                                                     groups=2), (2, 4, 9, 7)),
    "conv_depthwise": (lambda n: n.Conv2d(4, 4, 3, padding=1, groups=4), (2, 4, 6, 6)),
    "conv_depthwise_multiplier_no_bias": (lambda n: n.Conv2d(3, 6, 3, groups=3, bias=False), (2, 3, 5, 5)),
    "conv_1x1": (lambda n: n.Conv2d(5, 2, 1), (3, 5, 4, 4)),
    "maxpool": (lambda n: n.MaxPool2d(2), (2, 3, 6, 7)),
    "maxpool_stride_padding": (lambda n: n.MaxPool2d(3, stride=2, padding=1), (2, 3, 7, 8)),
    "maxpool_dilation": (lambda n: n.MaxPool2d(2, stride=1, dilation=2), (2, 2, 6, 5)),
    "avgpool": (lambda n: n.AvgPool2d(2), (2, 3, 6, 7)),
    "avgpool_stride_padding": (lambda n: n.AvgPool2d(3, stride=2, padding=1), (2, 3, 7, 8)),
    "adaptive_avg_1": (lambda n: n.AdaptiveAvgPool2d(1), (2, 3, 5, 7)),
    "adaptive_avg_2x3": (lambda n: n.AdaptiveAvgPool2d((2, 3)), (2, 3, 5, 7)),
    "adaptive_max_1": (lambda n: n.AdaptiveMaxPool2d(1), (2, 3, 5, 7)),
    "adaptive_max_2x3": (lambda n: n.AdaptiveMaxPool2d((2, 3)), (2, 3, 5, 7)),
    "flatten": (lambda n: n.Flatten(), (2, 3, 4, 5)),
    "flatten_1_2": (lambda n: n.Flatten(1, 2), (2, 3, 4, 5)),
    "relu": (lambda n: n.ReLU(), (3, 4, 5)),
    "relu6": (lambda n: n.ReLU6(), (3, 4, 5)),
    "leaky_relu_0.2": (lambda n: n.LeakyReLU(0.2), (3, 4, 5)),
    "leaky_relu_default": (lambda n: n.LeakyReLU(), (3, 4, 5)),
    "gelu": (lambda n: n.GELU(), (3, 4, 5)),
    "sigmoid": (lambda n: n.Sigmoid(), (3, 4, 5)),
    "tanh": (lambda n: n.Tanh(), (3, 4, 5)),
    "identity": (lambda n: n.Identity(), (3, 4)),
}


@pytest.mark.parametrize("case", LAYER_CASES)
def test_layer_matches_torch(case):
    torch = pytest.importorskip("torch")
    make, shape = LAYER_CASES[case]
    torch.manual_seed(0)
    tmodel = make(torch.nn).double()
    model = from_torch(double(make(nn)), tmodel)
    x = rng().standard_normal(shape) * 4  # spreads values over ReLU6's and the pools' interesting ranges
    ym, yt, xm, xt = run_both(model, tmodel, x)
    close(ym, yt)
    close(xm.grad, xt.grad)
    assert_same_grads(model, tmodel)


def test_embedding_matches_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tmodel = torch.nn.Embedding(7, 4).double()
    model = from_torch(double(nn.Embedding(7, 4)), tmodel)
    ids = np.array([[0, 3, 3, 6], [1, 3, 0, 0], [6, 6, 6, 2]])  # repeats: gradients must add up
    ym, yt, _, _ = run_both(model, tmodel, ids)
    close(ym, yt)
    assert_same_grads(model, tmodel)
    assert np.all(model.weight.grad.numpy()[[4, 5]] == 0)  # rows never looked up


def test_dropout_in_eval_is_identity_and_matches_torch():
    torch = pytest.importorskip("torch")
    model, tmodel = nn.Dropout(0.5).eval(), torch.nn.Dropout(0.5).eval()
    x = rng().standard_normal((4, 6))
    ym, yt, xm, xt = run_both(model, tmodel, x)
    close(ym, yt)
    close(ym, x)
    close(xm.grad, xt.grad)


@pytest.mark.parametrize("size", [1, (2, 3)])
def test_adaptive_concat_pool_is_max_then_avg(size):
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional
    model = nn.AdaptiveConcatPool2d(size)
    x = rng().standard_normal((2, 3, 5, 7))
    xm, xt = minidl.from_numpy(x.copy()).requires_grad_(), torch.from_numpy(x.copy()).requires_grad_()
    ym = model(xm)
    yt = torch.cat([tF.adaptive_max_pool2d(xt, size), tF.adaptive_avg_pool2d(xt, size)], 1)
    assert ym.shape == tuple(yt.shape) == (2, 6) + ((1, 1) if size == 1 else size)
    close(ym, yt)
    g = rng(1).standard_normal(ym.shape)
    ym.backward(minidl.from_numpy(g))
    yt.backward(torch.from_numpy(g))
    close(xm.grad, xt.grad)
    assert list(model.state_dict()) == [] and list(model.parameters()) == []


# ---------------------------------------------------------------- batch norm parity

BN_CASES = {
    "bn1d_2d_input": (lambda n: n.BatchNorm1d(4), (8, 4)),
    "bn1d_3d_input": (lambda n: n.BatchNorm1d(4), (6, 4, 5)),
    "bn2d": (lambda n: n.BatchNorm2d(3), (4, 3, 5, 5)),
    "bn2d_momentum_eps": (lambda n: n.BatchNorm2d(3, eps=1e-3, momentum=0.3), (2, 3, 4, 3)),
}


@pytest.mark.parametrize("case", BN_CASES)
def test_batchnorm_train_then_eval_matches_torch(case):
    torch = pytest.importorskip("torch")
    make, shape = BN_CASES[case]
    tmodel = make(torch.nn).double()
    with torch.no_grad():  # non-trivial affine parameters
        tmodel.weight.copy_(torch.from_numpy(rng(5).uniform(0.5, 2, shape[1])))
        tmodel.bias.copy_(torch.from_numpy(rng(6).standard_normal(shape[1])))
    model = from_torch(double(make(nn)), tmodel)
    assert list(model.state_dict()) == list(tmodel.state_dict()) == [
        "weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    for step in range(3):
        model.zero_grad()
        tmodel.zero_grad()
        x = rng(step).standard_normal(shape) * (step + 1) + step  # statistics change every step
        ym, yt, xm, xt = run_both(model, tmodel, x, seed=step)
        close(ym, yt)
        close(xm.grad, xt.grad)
        assert_same_grads(model, tmodel)
    close(model.running_mean, tmodel.running_mean)
    close(model.running_var, tmodel.running_var)
    assert model.num_batches_tracked.item() == tmodel.num_batches_tracked.item() == 3
    assert model.num_batches_tracked.dtype == minidl.int64

    model.eval()
    tmodel.eval()
    model.zero_grad()
    tmodel.zero_grad()
    running_mean = model.running_mean.numpy().copy()
    ym, yt, xm, xt = run_both(model, tmodel, rng(9).standard_normal(shape) + 1, seed=9)
    close(ym, yt)
    close(xm.grad, xt.grad)
    assert_same_grads(model, tmodel)
    # evaluation neither moves the running statistics nor counts the batch
    np.testing.assert_array_equal(model.running_mean.numpy(), running_mean)
    assert model.num_batches_tracked.item() == 3


def test_batchnorm_rejects_wrong_input_rank():
    with pytest.raises(ValueError):
        nn.BatchNorm2d(3)(minidl.ones(4, 3, 5))
    with pytest.raises(ValueError):
        nn.BatchNorm1d(3)(minidl.ones(4, 3, 5, 5))


# ---------------------------------------------------------------- a whole model

def small_cnn(n):
    return n.Sequential(
        n.Conv2d(3, 8, 3, padding=1), n.BatchNorm2d(8), n.ReLU(), n.MaxPool2d(2),
        n.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), n.Conv2d(8, 12, 1), n.BatchNorm2d(12), n.GELU(),
        n.AdaptiveAvgPool2d(1), n.Flatten(), n.Linear(12, 16), n.BatchNorm1d(16), n.LeakyReLU(0.2),
        n.Linear(16, 5))


def test_sequential_cnn_matches_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tmodel = small_cnn(torch.nn).double()
    model = double(small_cnn(nn))
    assert list(model.state_dict()) == list(tmodel.state_dict())
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in tmodel.named_parameters()]
    assert [n for n, _ in model.named_buffers()] == [n for n, _ in tmodel.named_buffers()]
    from_torch(model, tmodel)

    x = rng().standard_normal((6, 3, 8, 8))
    target = np.array([0, 4, 2, 2, 1, 3])
    for step in range(2):
        model.zero_grad()
        tmodel.zero_grad()
        xm, xt = minidl.from_numpy(x + step), torch.from_numpy(x + step)
        out_m, out_t = model(xm), tmodel(xt)
        close(out_m, out_t, rtol=1e-9)
        loss_m = nn.CrossEntropyLoss()(out_m, minidl.from_numpy(target))
        loss_t = torch.nn.functional.cross_entropy(out_t, torch.from_numpy(target))
        close(loss_m, loss_t, rtol=1e-9)
        loss_m.backward()
        loss_t.backward()
        assert_same_grads(model, tmodel, rtol=1e-8)
    for (name, b), (tname, tb) in zip(model.named_buffers(), tmodel.named_buffers()):
        assert name == tname
        close(b, tb, rtol=1e-9)

    model.eval()
    tmodel.eval()
    close(model(minidl.from_numpy(x)), tmodel(torch.from_numpy(x)), rtol=1e-9)


# ---------------------------------------------------------------- losses

def test_cross_entropy_flat_2d_and_3d_match_torch():
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional
    for shape in [(6, 5), (3, 4, 5)]:
        logits = rng().standard_normal(shape) * 3
        target = rng(1).integers(0, 5, shape[:-1])
        xm, xt = minidl.from_numpy(logits.copy()).requires_grad_(), torch.from_numpy(logits.copy()).requires_grad_()
        loss_m = nn.CrossEntropyLossFlat()(xm, minidl.from_numpy(target))
        loss_t = tF.cross_entropy(xt.reshape(-1, 5), torch.from_numpy(target).reshape(-1))
        assert loss_m.shape == ()
        close(loss_m, loss_t)
        loss_m.backward()
        loss_t.backward()
        close(xm.grad, xt.grad)


def test_cross_entropy_flat_options_match_torch():
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional
    logits, target = rng().standard_normal((3, 4, 5)), rng(1).integers(0, 5, (3, 4))
    lt, tt = torch.from_numpy(logits), torch.from_numpy(target)
    xm, tm = minidl.from_numpy(logits), minidl.from_numpy(target)
    close(nn.CrossEntropyLossFlat(reduction="sum")(xm, tm), tF.cross_entropy(lt.reshape(-1, 5), tt.reshape(-1),
                                                                             reduction="sum"))
    close(nn.CrossEntropyLossFlat(reduction="none")(xm, tm),
          tF.cross_entropy(lt.reshape(-1, 5), tt.reshape(-1), reduction="none"))
    close(nn.CrossEntropyLossFlat(label_smoothing=0.1)(xm, tm),
          tF.cross_entropy(lt.reshape(-1, 5), tt.reshape(-1), label_smoothing=0.1))
    # classes on axis 1 of an (N, C, T) input: torch's own cross_entropy layout
    logits_nct = rng(2).standard_normal((3, 5, 4))
    close(nn.CrossEntropyLossFlat(axis=1)(minidl.from_numpy(logits_nct), tm),
          tF.cross_entropy(torch.from_numpy(logits_nct), tt))


def test_cross_entropy_flat_activation_and_decodes():
    logits = rng().standard_normal((3, 4, 5))
    loss = nn.CrossEntropyLossFlat()
    probs = loss.activation(minidl.from_numpy(logits)).numpy()
    e = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(-1, keepdims=True), rtol=1e-12)
    np.testing.assert_array_equal(loss.decodes(minidl.from_numpy(logits)).numpy(), logits.argmax(-1))
    logits_nct = rng(1).standard_normal((3, 5, 4))
    loss1 = nn.CrossEntropyLossFlat(axis=1)
    np.testing.assert_allclose(loss1.activation(minidl.from_numpy(logits_nct)).numpy().sum(1), 1, rtol=1e-12)
    np.testing.assert_array_equal(loss1.decodes(minidl.from_numpy(logits_nct)).numpy(), logits_nct.argmax(1))


@pytest.mark.parametrize("name", ["MSELossFlat", "L1LossFlat"])
def test_regression_losses_flat_match_torch(name):
    torch = pytest.importorskip("torch")
    tloss = {"MSELossFlat": torch.nn.functional.mse_loss, "L1LossFlat": torch.nn.functional.l1_loss}[name]
    pred, target = rng().standard_normal((7, 1)), rng(1).standard_normal(7)
    pm, pt = minidl.from_numpy(pred.copy()).requires_grad_(), torch.from_numpy(pred.copy()).requires_grad_()
    loss_m = getattr(nn, name)()(pm, minidl.from_numpy(target))  # (N, 1) vs (N,): no broadcasting to (N, N)
    loss_t = tloss(pt.reshape(-1), torch.from_numpy(target))
    close(loss_m, loss_t)
    loss_m.backward()
    loss_t.backward()
    close(pm.grad, pt.grad)
    # integer targets are converted to the predictions' dtype
    int_target = np.array([0, 1, 2, 3, 4, 5, 6])
    close(getattr(nn, name)()(minidl.from_numpy(pred), minidl.from_numpy(int_target)),
          tloss(torch.from_numpy(pred).reshape(-1), torch.from_numpy(int_target).double()))
    loss = getattr(nn, name)()
    out = minidl.from_numpy(pred)
    np.testing.assert_array_equal(loss.activation(out).numpy(), pred)
    np.testing.assert_array_equal(loss.decodes(out).numpy(), pred)


def test_bce_with_logits_flat_matches_torch():
    torch = pytest.importorskip("torch")
    pred, target = rng().standard_normal((6, 1)) * 3, rng(1).integers(0, 2, 6).astype(np.float64)
    pm, pt = minidl.from_numpy(pred.copy()).requires_grad_(), torch.from_numpy(pred.copy()).requires_grad_()
    loss_m = nn.BCEWithLogitsLossFlat()(pm, minidl.from_numpy(target))
    loss_t = torch.nn.functional.binary_cross_entropy_with_logits(pt.reshape(-1), torch.from_numpy(target))
    close(loss_m, loss_t)
    loss_m.backward()
    loss_t.backward()
    close(pm.grad, pt.grad)

    loss = nn.BCEWithLogitsLossFlat(thresh=0.7)
    probs = loss.activation(minidl.from_numpy(pred))
    np.testing.assert_allclose(probs.numpy(), 1 / (1 + np.exp(-pred)), rtol=1e-12)
    decoded = loss.decodes(probs).numpy()
    assert decoded.dtype == np.bool_
    np.testing.assert_array_equal(decoded, 1 / (1 + np.exp(-pred)) > 0.7)


# ---------------------------------------------------------------- Module: registration and walking

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x):
        return self.bn(self.lin(x)).relu()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(minidl.ones(1))
        self.block = Block()
        self.heads = nn.ModuleList([nn.Linear(4, 2), nn.Linear(4, 2, bias=False)])
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        h = self.drop(self.block(x) * self.scale)
        return self.heads[0](h) + self.heads[1](h)


NET_PARAMS = ["scale", "block.lin.weight", "block.lin.bias", "block.bn.weight", "block.bn.bias",
              "heads.0.weight", "heads.0.bias", "heads.1.weight"]
NET_BUFFERS = ["block.bn.running_mean", "block.bn.running_var", "block.bn.num_batches_tracked"]


def test_named_parameters_and_buffers_of_nested_modules():
    net = Net()
    assert [n for n, _ in net.named_parameters()] == NET_PARAMS
    assert [p for p in net.parameters()] == [p for _, p in net.named_parameters()]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())
    assert net.heads[1].weight is dict(net.named_parameters())["heads.1.weight"]
    assert [n for n, _ in net.named_buffers()] == NET_BUFFERS
    assert not any(b is p for b in net.buffers() for p in net.parameters())
    # state_dict: parameters and buffers, module by module (PyTorch's order)
    assert list(net.state_dict()) == ["scale", "block.lin.weight", "block.lin.bias", "block.bn.weight",
                                      "block.bn.bias", *NET_BUFFERS, "heads.0.weight", "heads.0.bias",
                                      "heads.1.weight"]
    assert [n for n, _ in net.named_parameters(recurse=False)] == ["scale"]
    assert [n for n, _ in net.block.named_parameters()] == ["lin.weight", "lin.bias", "bn.weight", "bn.bias"]


def test_names_match_torch_for_the_same_architecture():
    torch = pytest.importorskip("torch")

    def build(n):
        return n.Sequential(n.Sequential(n.Linear(3, 4), n.BatchNorm1d(4)), n.ReLU(),
                            n.ModuleList([n.Linear(4, 4), n.Embedding(5, 4)]), n.Linear(4, 1))
    model, tmodel = build(nn), build(torch.nn)
    assert list(model.state_dict()) == list(tmodel.state_dict())
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in tmodel.named_parameters()]
    assert [n for n, _ in model.named_modules()] == [n for n, _ in tmodel.named_modules()]
    assert [n for n, _ in model.named_children()] == [n for n, _ in tmodel.named_children()]
    for (_, p), (_, tp) in zip(model.named_parameters(), tmodel.named_parameters()):
        assert p.shape == tuple(tp.shape)


def test_shared_parameter_is_listed_once():
    torch = pytest.importorskip("torch")

    def build(n):
        a, b = n.Linear(3, 3), n.Linear(3, 3)
        b.weight = a.weight  # tied weights
        return n.Sequential(a, n.ReLU(), b)
    model, tmodel = build(nn), build(torch.nn)
    assert model[0].weight is model[2].weight
    names = [n for n, _ in model.named_parameters()]
    assert names == [n for n, _ in tmodel.named_parameters()] == ["0.weight", "0.bias", "2.bias"]
    assert len(list(model.parameters())) == 3
    # the state_dict keeps both names, like PyTorch's
    assert sorted(model.state_dict()) == sorted(tmodel.state_dict())
    # a tied weight gets the gradient of both uses
    model.load_state_dict({k: v.detach().numpy() for k, v in tmodel.state_dict().items()})
    x = rng().standard_normal((4, 3)).astype(np.float32)
    model(minidl.from_numpy(x)).sum().backward()
    tmodel(torch.from_numpy(x)).sum().backward()
    close(model[0].weight.grad, tmodel[0].weight.grad, rtol=1e-5, atol=1e-6)
    close(model[2].bias.grad, tmodel[2].bias.grad, rtol=1e-5, atol=1e-6)


def test_shared_submodule_is_listed_once():
    torch = pytest.importorskip("torch")

    def build(n):
        lin = n.Linear(2, 2)
        return n.Sequential(lin, n.ReLU(), lin)
    model, tmodel = build(nn), build(torch.nn)
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in tmodel.named_parameters()]
    # PyTorch's named_modules / modules() skip a module already seen
    assert [n for n, _ in model.named_modules()] == [n for n, _ in tmodel.named_modules()] == ["", "0", "1"]
    assert len(list(model.modules())) == 3
    calls = []
    model.apply(calls.append)
    assert len(calls) == 3


def test_children_and_modules():
    net = Net()
    assert [n for n, _ in net.named_children()] == ["block", "heads", "drop"]
    assert list(net.children()) == [net.block, net.heads, net.drop]
    names = [n for n, _ in net.named_modules()]
    assert names == ["", "block", "block.lin", "block.bn", "heads", "heads.0", "heads.1", "drop"]
    assert list(net.modules())[0] is net
    assert list(net.modules())[2] is net.block.lin


def test_apply_visits_children_first_in_torch_order():
    torch = pytest.importorskip("torch")

    def build(n):
        return n.Sequential(n.Sequential(n.Linear(1, 1), n.ReLU()), n.Sequential(n.Tanh(), n.Linear(1, 1)))
    model, tmodel = build(nn), build(torch.nn)
    seen, tseen = [], []
    assert model.apply(lambda m: seen.append(m)) is model
    tmodel.apply(lambda m: tseen.append(m))
    names = {id(m): n for n, m in model.named_modules()}
    tnames = {id(m): n for n, m in tmodel.named_modules()}
    assert sorted(names[id(m)] for m in seen) == sorted(names.values())
    for m in seen:  # every module comes after all of its children
        assert all(seen.index(c) < seen.index(m) for c in m.children())
    # PyTorch's order: each child's subtree in turn (post-order), then the module
    assert [names[id(m)] for m in seen] == [tnames[id(m)] for m in tseen] == ["0.0", "0.1", "0", "1.0", "1.1", "1", ""]


def test_apply_for_custom_init():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 2)))

    def init_fn(m):
        if isinstance(m, nn.Linear):
            init.constant_(m.weight, 0.5)
            init.zeros_(m.bias)
    model.apply(init_fn)
    assert np.all(model[0].weight.numpy() == 0.5) and np.all(model[2][0].weight.numpy() == 0.5)
    assert np.all(model[2][0].bias.numpy() == 0)


def test_register_buffer_and_plain_tensor_attributes():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(minidl.ones(2))
            self.register_buffer("stats", minidl.zeros(2))
            self.scratch = minidl.ones(3)  # a plain tensor attribute: neither parameter nor buffer
            self.factor = 3

        def forward(self, x):
            return x * self.w + self.stats

    m = M()
    assert [n for n, _ in m.named_parameters()] == ["w"]
    assert [n for n, _ in m.named_buffers()] == ["stats"]
    assert list(m.state_dict()) == ["w", "stats"]
    assert isinstance(m.stats, minidl.Tensor) and m.stats.shape == (2,)
    assert m.scratch.shape == (3,) and m.factor == 3
    assert not any(t is m.scratch for t in list(m.parameters()) + list(m.buffers()))
    with pytest.raises(KeyError):
        m.register_buffer("w", minidl.zeros(2))


def test_reassigning_a_parameter_keeps_its_place():
    torch = pytest.importorskip("torch")
    lin, tlin = nn.Linear(3, 2), torch.nn.Linear(3, 2)
    lin.weight = nn.Parameter(minidl.zeros(2, 3))
    tlin.weight = torch.nn.Parameter(torch.zeros(2, 3))
    # PyTorch replaces the entry in place: the order of parameters() (what an optimizer
    # and a checkpoint see) does not change
    assert [n for n, _ in lin.named_parameters()] == [n for n, _ in tlin.named_parameters()] == ["weight", "bias"]
    assert list(lin.state_dict()) == list(tlin.state_dict())


def test_assigning_a_plain_tensor_to_a_parameter_name_raises():
    torch = pytest.importorskip("torch")
    tlin = torch.nn.Linear(3, 2)
    with pytest.raises(TypeError):
        tlin.weight = tlin.weight * 2
    lin = nn.Linear(3, 2)
    # silently un-registering the weight would stop training it
    with pytest.raises(TypeError):
        lin.weight = lin.weight * 2


def test_assigning_a_tensor_to_a_buffer_name_keeps_it_a_buffer():
    torch = pytest.importorskip("torch")
    bn, tbn = nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    bn.running_mean = minidl.full((3,), 2.0)
    tbn.running_mean = torch.full((3,), 2.0)
    assert [n for n, _ in bn.named_buffers()] == [n for n, _ in tbn.named_buffers()]
    assert list(bn.state_dict()) == list(tbn.state_dict())
    np.testing.assert_array_equal(bn.state_dict()["running_mean"].numpy(), 2.0)


def test_forgetting_super_init_gives_a_clear_error():
    class Broken(nn.Module):
        def __init__(self):
            self.lin = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match=re.escape("super().__init__()")):
        Broken()


def test_missing_attribute_error():
    with pytest.raises(AttributeError, match="nope"):
        nn.Linear(2, 2).nope


def test_repr_of_nested_model():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                          nn.Sequential(nn.Flatten(), nn.Linear(8, 2)), nn.BatchNorm1d(2))
    text = repr(model)
    assert text.startswith("Sequential(")
    for part in ["(0): Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))", "(1): ReLU()",
                 "(2): Sequential(", "(1): Linear(in_features=8, out_features=2, bias=True)",
                 "(3): BatchNorm1d(2, eps=1e-05, momentum=0.1"]:
        assert part in text, (part, text)
    assert "\n    (1): Linear" in text  # nested modules are indented one more level


def test_repr_matches_torch_for_linear_conv_relu():
    torch = pytest.importorskip("torch")

    def build(n):
        return n.Sequential(n.Conv2d(3, 8, 3, stride=2, padding=1, groups=1, bias=False), n.ReLU(),
                            n.Sequential(n.Conv2d(8, 8, (3, 1), dilation=2, groups=4), n.Linear(8, 2)))
    assert repr(build(nn)) == repr(build(torch.nn))


def test_sequential_indexing():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    model = nn.Sequential(a, b, c)
    assert model[0] is a and model[-1] is c and len(model) == 3 and list(model) == [a, b, c]
    head = model[1:]
    assert isinstance(head, nn.Sequential) and list(head) == [b, c]
    assert [n for n, _ in head.named_parameters()] == ["2.weight", "2.bias"]   # a slice keeps the names, as in PyTorch


# ---------------------------------------------------------------- Module: modes, freezing, gradients

def test_train_and_eval_propagate():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    assert net.train() is net
    assert all(m.training for m in net.modules())
    net.train(False)
    assert not any(m.training for m in net.modules())


def test_dropout_active_only_in_train_mode():
    minidl.manual_seed(0)
    drop = nn.Dropout(0.5)
    x = minidl.ones(2000)
    y = drop(x).numpy()
    assert set(np.unique(y)) == {0.0, 2.0}  # dropped, or kept and scaled by 1 / (1 - p)
    assert 0.4 < (y == 0).mean() < 0.6
    drop.eval()
    np.testing.assert_array_equal(drop(x).numpy(), 1.0)
    model = nn.Sequential(nn.Sequential(nn.Dropout(0.9)))
    model.eval()
    np.testing.assert_array_equal(model(x).numpy(), 1.0)
    model.train()
    assert (model(x).numpy() == 0).mean() > 0.8


def test_batchnorm_uses_running_stats_in_eval():
    bn = nn.BatchNorm1d(3)
    x = minidl.randn(16, 3) * 3 + 5
    y = bn(x).numpy()  # training: the batch's own statistics
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-5)
    rm, rv = bn.running_mean.numpy().copy(), bn.running_var.numpy().copy()
    xn = x.numpy()
    np.testing.assert_allclose(rm, 0.1 * xn.mean(0), rtol=1e-5)
    np.testing.assert_allclose(rv, 0.9 + 0.1 * xn.var(0, ddof=1), rtol=1e-5)
    bn.eval()
    y_eval = bn(x).numpy()
    np.testing.assert_allclose(y_eval, (xn - rm) / np.sqrt(rv + 1e-5), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(bn.running_mean.numpy(), rm)  # not updated in eval
    assert bn.num_batches_tracked.item() == 1


def test_requires_grad_false_freezes():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert model[0].requires_grad_(False) is model[0]
    assert [p.requires_grad for p in model.parameters()] == [False, False, True, True]
    x = minidl.randn(5, 3)
    model(x).sum().backward()
    assert model[0].weight.grad is None and model[0].bias.grad is None
    assert model[2].weight.grad is not None and model[2].bias.grad is not None
    model.requires_grad_()
    assert all(p.requires_grad for p in model.parameters())
    model(x).sum().backward()
    assert model[0].weight.grad is not None


def test_frozen_model_does_not_need_grad():
    model = nn.Linear(3, 2).requires_grad_(False)
    out = model(minidl.randn(4, 3))
    assert not out.requires_grad


def test_zero_grad():
    net = Net()
    net(minidl.randn(4, 3)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())  # PyTorch's default: set_to_none=True


def test_gradients_accumulate_over_backward_calls():
    lin = nn.Linear(3, 2)
    x = minidl.randn(4, 3)
    lin(x).sum().backward()
    g = lin.weight.grad.numpy().copy()
    lin(x).sum().backward()
    np.testing.assert_allclose(lin.weight.grad.numpy(), 2 * g, rtol=1e-6)


# ---------------------------------------------------------------- state_dict

def make_model():
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def snapshot(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def test_state_dict_round_trip():
    minidl.manual_seed(1)
    model = make_model()
    model(minidl.randn(8, 3) + 1)  # move the running statistics away from their start
    model.eval()
    saved = snapshot(model)
    assert all(not v.requires_grad for v in model.state_dict().values())
    x = minidl.randn(5, 3)
    expected = model(x).numpy()

    minidl.manual_seed(2)
    fresh = make_model().eval()
    assert not np.allclose(fresh(x).numpy(), expected)
    params_before = list(fresh.parameters())
    result = fresh.load_state_dict(saved)
    assert list(result) == [[], []]
    assert result.missing_keys == [] and result.unexpected_keys == []
    np.testing.assert_array_equal(fresh(x).numpy(), expected)
    assert all(a is b for a, b in zip(fresh.parameters(), params_before))  # loaded in place
    for k, v in fresh.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), saved[k])
    # the loaded values are copies: changing the checkpoint does not change the model
    saved["0.weight"][...] = 0
    assert np.any(fresh[0].weight.numpy() != 0)


def test_load_state_dict_accepts_tensors():
    a, b = make_model(), make_model()
    b.load_state_dict(a.state_dict())
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(v.numpy(), w.numpy(), err_msg=k)
    a[0].weight.data[...] = 7  # not sharing memory with the source
    assert np.all(b[0].weight.numpy() != 7)


def test_load_state_dict_reports_every_problem():
    model = make_model()
    bad = snapshot(model)
    del bad["0.weight"]
    del bad["1.running_var"]
    bad["extra.weight"] = np.zeros(3)
    bad["3.weight"] = np.zeros((5, 4))
    before = snapshot(model)
    with pytest.raises(RuntimeError) as err:
        model.load_state_dict(bad)
    message = str(err.value)
    for key in ["0.weight", "1.running_var", "extra.weight", "3.weight"]:
        assert key in message, (key, message)
    assert "(5, 4)" in message and "(2, 4)" in message
    for k, v in model.state_dict().items():  # a failed load changes nothing
        np.testing.assert_array_equal(v.numpy(), before[k])


def test_failed_strict_load_changes_nothing():
    model = make_model()
    before = snapshot(model)
    other = {k: v + 1 for k, v in before.items()}  # all keys fine ...
    other["surplus"] = np.ones(1)  # ... but one
    with pytest.raises(RuntimeError, match="surplus"):
        model.load_state_dict(other)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])


def test_load_state_dict_non_strict_loads_the_rest():
    model = make_model()
    source = make_model()
    sd = snapshot(source)
    del sd["3.bias"]
    sd["head.weight"] = np.zeros((2, 2))
    old_bias = model[3].bias.numpy().copy()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert missing == ["3.bias"] and unexpected == ["head.weight"]
    np.testing.assert_array_equal(model[0].weight.numpy(), source[0].weight.numpy())
    np.testing.assert_array_equal(model[3].weight.numpy(), source[3].weight.numpy())
    np.testing.assert_array_equal(model[3].bias.numpy(), old_bias)


def test_load_state_dict_shape_mismatch_fails_even_when_not_strict():
    model = make_model()
    sd = snapshot(model)
    sd["0.bias"] = np.zeros(5)
    with pytest.raises(RuntimeError, match=re.escape("0.bias")):
        model.load_state_dict(sd, strict=False)


def test_load_state_dict_bumps_version_and_keeps_dtype():
    model = make_model()
    w = model[0].weight
    version = w.version
    sd = snapshot(model)
    sd["0.weight"] = sd["0.weight"].astype(np.float64)  # a float64 checkpoint into float32 weights
    model.load_state_dict(sd)
    assert w.dtype == minidl.float32 and w.version > version
    assert model[1].num_batches_tracked.dtype == minidl.int64


def test_load_torch_state_dict_into_float32_model():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tmodel = small_cnn(torch.nn)
    model = small_cnn(nn)
    model.load_state_dict({k: v.numpy() for k, v in tmodel.state_dict().items()})
    model.eval()
    tmodel.eval()
    x = rng().standard_normal((2, 3, 8, 8)).astype(np.float32)
    close(model(minidl.from_numpy(x)), tmodel(torch.from_numpy(x)), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- devices

def test_to_device_moves_parameters_and_buffers_in_place(cpu2):
    model = make_model()
    x = minidl.randn(6, 3)
    model(x).sum().backward()
    params, buffers = list(model.parameters()), list(model.buffers())
    values = snapshot(model)
    held = list(model.parameters())  # as an optimizer would hold them

    assert model.to(cpu2) is model
    assert all(t.device == "cpu2" for t in list(model.parameters()) + list(model.buffers()))
    assert all(a is b for a, b in zip(model.parameters(), params))
    assert all(a is b for a, b in zip(model.buffers(), buffers))
    assert all(p.grad is None or p.grad.device == "cpu2" for p in model.parameters())
    for k, v in model.state_dict().items():
        assert v.device == "cpu2"
        np.testing.assert_array_equal(v.numpy(), values[k])

    model.zero_grad()
    out = model(x.to(cpu2))
    assert out.device == "cpu2"
    out.sum().backward()
    assert all(p.grad is not None and p.grad.device == "cpu2" for p in held)
    with minidl.no_grad():  # an SGD step through the references held before the move
        for p in held:
            p.sub_(p.grad * 0.1)
    np.testing.assert_allclose(model[0].weight.numpy(), values["0.weight"] - 0.1 * held[0].grad.numpy(),
                               rtol=1e-6)
    assert model[1].num_batches_tracked.item() == 2

    model.to("cpu")
    assert all(t.device == "cpu" for t in list(model.parameters()) + list(model.buffers()))
    assert model(x).device == "cpu"


# ---------------------------------------------------------------- init

def empty(*shape):
    return nn.Parameter(minidl.zeros(*shape, dtype=minidl.float64))


def trunc_normal_std(std, a, b):
    """Standard deviation of N(0, std^2) truncated to [a, b] (mean 0, symmetric bounds)."""
    alpha, beta = a / std, b / std
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    Z = cdf(beta) - cdf(alpha)
    return std * math.sqrt(1 + (alpha * pdf(alpha) - beta * pdf(beta)) / Z - ((pdf(alpha) - pdf(beta)) / Z) ** 2)


INIT_CASES = {
    "kaiming_uniform": (lambda t: init.kaiming_uniform_(t), (512, 512), math.sqrt(2 / 512)),
    "kaiming_uniform_a": (lambda t: init.kaiming_uniform_(t, a=0.2), (512, 512), math.sqrt(2 / 1.04 / 512)),
    "kaiming_uniform_fan_out": (lambda t: init.kaiming_uniform_(t, mode="fan_out", nonlinearity="relu"),
                                (128, 2048), math.sqrt(2 / 128)),
    "kaiming_normal": (lambda t: init.kaiming_normal_(t), (512, 512), math.sqrt(2 / 512)),
    "kaiming_normal_fan_out": (lambda t: init.kaiming_normal_(t, mode="fan_out"), (128, 2048), math.sqrt(2 / 128)),
    "kaiming_normal_conv": (lambda t: init.kaiming_normal_(t, nonlinearity="relu"), (64, 32, 3, 3),
                            math.sqrt(2 / 288)),
    "xavier_uniform": (lambda t: init.xavier_uniform_(t), (512, 512), math.sqrt(2 / 1024)),
    "xavier_uniform_gain": (lambda t: init.xavier_uniform_(t, gain=5 / 3), (256, 1024), 5 / 3 * math.sqrt(2 / 1280)),
    "xavier_normal": (lambda t: init.xavier_normal_(t), (512, 512), math.sqrt(2 / 1024)),
    "xavier_normal_conv": (lambda t: init.xavier_normal_(t), (64, 32, 3, 3), math.sqrt(2 / (288 + 576))),
    "trunc_normal": (lambda t: init.trunc_normal_(t), (512, 512), trunc_normal_std(1, -2, 2)),
    "trunc_normal_small_std": (lambda t: init.trunc_normal_(t, std=0.02), (512, 512), 0.02),
    "trunc_normal_tight": (lambda t: init.trunc_normal_(t, std=1.0, a=-0.5, b=0.5), (512, 512),
                           trunc_normal_std(1, -0.5, 0.5)),
    "normal": (lambda t: init.normal_(t, 1.0, 0.3), (512, 512), 0.3),
    "uniform": (lambda t: init.uniform_(t, -2.0, 4.0), (512, 512), 6 / math.sqrt(12)),
}


@pytest.mark.parametrize("case", INIT_CASES)
def test_init_std(case):
    fill, shape, std = INIT_CASES[case]
    minidl.manual_seed(0)
    t = empty(*shape)
    version = t.version
    assert fill(t) is t
    values = t.numpy()
    assert abs(values.std() / std - 1) < 0.02, (values.std(), std)
    assert t.version > version and t.requires_grad and t.grad is None and t.is_leaf


def test_init_draws_are_the_right_distribution():
    minidl.manual_seed(0)
    t = init.kaiming_uniform_(empty(512, 512))
    bound = math.sqrt(6 / 512)
    assert np.abs(t.numpy()).max() <= bound and np.abs(t.numpy()).max() > 0.999 * bound
    t = init.normal_(empty(512, 512), 1.0, 0.3)
    assert abs(t.numpy().mean() - 1.0) < 0.01
    t = init.uniform_(empty(512, 512), -2.0, 4.0)
    assert t.numpy().min() >= -2.0 and t.numpy().max() < 4.0


@pytest.mark.parametrize("mean,std,a,b", [(0.0, 1.0, -2.0, 2.0), (0.0, 1.0, -0.5, 0.5), (1.0, 2.0, 0.0, 1.5),
                                          (0.0, 0.02, -0.01, 0.03)])
def test_trunc_normal_stays_inside_bounds(mean, std, a, b):
    minidl.manual_seed(0)
    t = init.trunc_normal_(empty(256, 256), mean=mean, std=std, a=a, b=b).numpy()
    assert t.min() >= a and t.max() <= b
    assert t.min() < a + 0.01 * (b - a) and t.max() > b - 0.01 * (b - a)  # fills the whole interval
    assert len(np.unique(t)) > 0.99 * t.size


def test_init_fills_float32_in_place():
    w = nn.Linear(64, 64).weight
    data = w.data
    init.xavier_uniform_(w)
    assert w.data is data and w.dtype == minidl.float32
    init.zeros_(w)
    assert np.all(w.numpy() == 0)
    init.ones_(w)
    assert np.all(w.numpy() == 1)


def test_fan_needs_two_dims():
    with pytest.raises(ValueError):
        init.kaiming_uniform_(empty(5))
    with pytest.raises(ValueError):
        init.kaiming_normal_(empty(4, 4), mode="fan_avg")


GAINS = [("linear", None), ("conv1d", None), ("conv2d", None), ("conv3d", None), ("conv_transpose1d", None),
         ("conv_transpose2d", None), ("conv_transpose3d", None), ("sigmoid", None), ("tanh", None), ("relu", None),
         ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", 0), ("leaky_relu", math.sqrt(5)), ("selu", None)]


@pytest.mark.parametrize("nonlinearity,param", GAINS)
def test_calculate_gain_matches_torch(nonlinearity, param):
    torch = pytest.importorskip("torch")
    expected = torch.nn.init.calculate_gain(nonlinearity, param)
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(expected, rel=1e-12)


def test_calculate_gain_rejects_unknown():
    with pytest.raises(ValueError, match="swish"):
        init.calculate_gain("swish")


@pytest.mark.parametrize("make,fan_in", [(lambda: nn.Linear(512, 256), 512), (lambda: nn.Conv2d(16, 32, 3), 144),
                                         (lambda: nn.Conv2d(32, 64, (3, 5), groups=4), 8 * 15)])
def test_default_init_bound_is_one_over_sqrt_fan_in(make, fan_in):
    minidl.manual_seed(0)
    layer = make()
    bound = 1 / math.sqrt(fan_in)
    w = np.abs(layer.weight.numpy())
    assert w.max() <= bound * (1 + 1e-6) and w.max() > 0.99 * bound
    assert abs(layer.weight.numpy().std() / (bound / math.sqrt(3)) - 1) < 0.05  # uniform on [-bound, bound]
    b = np.abs(layer.bias.numpy())
    assert b.max() <= bound * (1 + 1e-6) and b.max() > 0.8 * bound
    assert layer.weight.dtype == minidl.float32


def test_default_init_of_embedding_and_batchnorm():
    minidl.manual_seed(0)
    emb = nn.Embedding(1000, 64)
    assert abs(emb.weight.numpy().std() - 1) < 0.02 and abs(emb.weight.numpy().mean()) < 0.02
    bn = nn.BatchNorm2d(5)
    for t, v in [(bn.weight, 1), (bn.bias, 0), (bn.running_mean, 0), (bn.running_var, 1)]:
        np.testing.assert_array_equal(t.numpy(), v)
    assert bn.num_batches_tracked.item() == 0


def test_manual_seed_makes_init_reproducible():
    minidl.manual_seed(42)
    a = small_cnn(nn)
    minidl.manual_seed(42)
    b = small_cnn(nn)
    minidl.manual_seed(43)
    c = small_cnn(nn)
    for (k, v), (_, w), (_, u) in zip(a.state_dict().items(), b.state_dict().items(), c.state_dict().items()):
        np.testing.assert_array_equal(v.numpy(), w.numpy(), err_msg=k)
    assert not np.array_equal(a[0].weight.numpy(), c[0].weight.numpy())
    minidl.manual_seed(7)
    t1 = init.trunc_normal_(empty(50, 50), std=0.5, a=-0.3, b=0.3).numpy()
    minidl.manual_seed(7)
    t2 = init.trunc_normal_(empty(50, 50), std=0.5, a=-0.3, b=0.3).numpy()
    np.testing.assert_array_equal(t1, t2)


def test_cross_entropy_flat_with_the_class_axis_first_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 3, 4, 5)), rng.integers(0, 3, (2, 4, 5))
    ours = nn.CrossEntropyLossFlat(axis=1)(minidl.tensor(x), minidl.tensor(y)).item()
    theirs = torch.nn.functional.cross_entropy(torch.tensor(x), torch.tensor(y)).item()
    assert ours == pytest.approx(theirs, rel=1e-12)


def test_batch_norm_momentum_none_is_a_cumulative_average_like_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = nn.BatchNorm1d(3, momentum=None), torch.nn.BatchNorm1d(3, momentum=None)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.standard_normal((8, 3)).astype(np.float32) * 2 + 1
        ours(minidl.tensor(x))
        theirs(torch.tensor(x))
    np.testing.assert_allclose(ours.running_mean.numpy(), theirs.running_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(ours.running_var.numpy(), theirs.running_var.numpy(), rtol=1e-5)
