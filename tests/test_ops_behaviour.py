"""Op behaviour that a gradcheck or a parity check on one call cannot see."""
import numpy as np
import pytest

import minidl
import minidl.nn.functional as F


def test_dropout_keeps_the_mean_and_zeroes_about_p():
    minidl.manual_seed(0)
    x = minidl.ones(200, 500)
    y = F.dropout(x, 0.3, training=True).numpy()
    assert abs((y == 0).mean() - 0.3) < 0.01
    np.testing.assert_allclose(y[y != 0], 1 / 0.7, rtol=1e-6)   # survivors scaled by 1/(1-p)
    assert abs(y.mean() - 1) < 0.02


def test_dropout_is_the_identity_in_eval_and_at_p0():
    x = minidl.randn(4, 5)
    assert F.dropout(x, 0.5, training=False) is x
    np.testing.assert_array_equal(F.dropout(x, 0.0).numpy(), x.numpy())
    assert (F.dropout(x, 1.0).numpy() == 0).all()
    with pytest.raises(ValueError, match="dropout"):
        F.dropout(x, 1.5)


def test_dropout_gradient_flows_only_through_kept_values():
    minidl.manual_seed(3)
    x = minidl.randn(50, requires_grad=True)
    y = F.dropout(x, 0.5)
    y.sum().backward()
    kept = y.numpy() != 0
    np.testing.assert_allclose(x.grad.numpy()[kept], 2.0)
    np.testing.assert_array_equal(x.grad.numpy()[~kept], 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_draws_the_same_mask_on_every_device(dtype):
    """One seed from minidl's generator, the mask made where the tensor lives (a GPU copies nothing from the
    host): the same seed gives the same mask on cpu and on the CUDA kernels (emu), in float32 and float64."""
    masks = []
    for device in ("cpu", "emu"):
        minidl.manual_seed(5)
        x = minidl.ones(3, 1000, dtype=dtype, device=device)
        masks.append(F.dropout(x, 0.4).numpy())
    assert masks[0].dtype == dtype
    np.testing.assert_array_equal(masks[0], masks[1])
    np.testing.assert_allclose(np.unique(masks[0]), [0, 1 / 0.6], rtol=1e-7 if dtype == np.float64 else 1e-6)


def test_batch_norm_running_statistics_follow_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    rm, rv = np.zeros(3), np.ones(3)
    trm, trv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    mrm, mrv = minidl.tensor(rm), minidl.tensor(rv)
    for _ in range(3):
        x = rng.standard_normal((4, 3, 2, 2)) * 2 + 1
        F.batch_norm(minidl.tensor(x), mrm, mrv, training=True, momentum=0.2)
        torch.nn.functional.batch_norm(torch.tensor(x), trm, trv, training=True, momentum=0.2)
    np.testing.assert_allclose(mrm.numpy(), trm.numpy(), rtol=1e-12)
    np.testing.assert_allclose(mrv.numpy(), trv.numpy(), rtol=1e-12)   # unbiased, as PyTorch


def test_batch_norm_training_output_is_normalised_per_channel():
    x = minidl.randn(8, 3, 4, 4) * 5 + 2
    y = F.batch_norm(x, None, None, training=True).numpy()
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, atol=1e-3)


def test_argmax_and_argmin_match_pytorch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((3, 4, 5))
    for dim in (None, 0, 1, -1):
        for name in ("argmax", "argmin"):
            ours = getattr(minidl.tensor(x), name)(dim=dim).numpy()
            theirs = getattr(torch.tensor(x), name)(dim=dim).numpy()
            np.testing.assert_array_equal(ours, theirs)
            assert getattr(minidl.tensor(x), name)(dim=dim).dtype == minidl.int64


def test_max_with_dim_returns_values_and_indices():
    x = minidl.tensor([[1.0, 5.0, 3.0], [7.0, 2.0, 0.0]])
    values, indices = x.max(dim=1)
    assert values.tolist() == [5.0, 7.0] and indices.tolist() == [1, 0]
    assert x.min(dim=0).indices.tolist() == [0, 1, 1]


def test_max_splits_the_gradient_between_ties_like_amax():
    x = minidl.tensor([3.0, 1.0, 3.0], requires_grad=True)
    x.max().backward()
    assert x.grad.tolist() == [0.5, 0.0, 0.5]


def test_softmax_and_logsumexp_are_stable_for_huge_inputs():
    x = minidl.tensor([[1000.0, 1000.0, -1000.0]], dtype=minidl.float64)
    np.testing.assert_allclose(F.softmax(x, 1).numpy(), [[0.5, 0.5, 0.0]])
    np.testing.assert_allclose(x.logsumexp(1).numpy(), [1000 + np.log(2)])
    np.testing.assert_allclose(F.log_softmax(x, 1).numpy()[0, :2], [-np.log(2)] * 2)
    assert np.isfinite(F.cross_entropy(x, minidl.tensor([2])).item())


def test_bce_with_logits_is_stable_for_huge_logits():
    x = minidl.tensor([1000.0, -1000.0], requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(x, minidl.tensor([0.0, 1.0]))
    assert np.isfinite(loss.item()) and abs(loss.item() - 1000) < 1e-3
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.5, -0.5])
