"""Segmentation: masks that move with their photos, bad masks named, the void class left out of the loss
and the metrics, forward hooks, and a U-Net that finds its skips in any body and learns."""
import numpy as np
import pytest
from PIL import Image

import minidl
import minidl.nn as nn
from minidl.learn import DiceMulti, JaccardCoeffMulti, PixelAccuracy, foreground_acc
from minidl.vision import Resize, RandomResizedCrop
from minidl.vision.learner import SegmentationLearner, unet_learner, unet_split
from minidl.vision.models import efficientnet_lite0, resnet18, create_body
from minidl.vision.models.unet import DynamicUnet, skip_layers
from minidl.vision.segmentation import BadMaskError, SegmentationDataLoaders, SegmentationInterpretation, load_mask
from minidl.vision.transforms import AffineAugment, Lighting, Normalize

CODES = ["background", "square", "disc", "void"]


def scenes(folder, n=12, size=(40, 48), seed=0):
    """Photos with a red square (id 1) and a blue disc (id 2) on grey noise, a void border (id 3),
    and their masks as 8-bit PNGs: images/<k>.png, labels/<k>_P.png."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(exist_ok=True)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    for k in range(n):
        mask = np.zeros((h, w), np.uint8)
        top, left = rng.integers(2, h // 2), rng.integers(2, w // 2)
        mask[top:top + h // 3, left:left + w // 3] = 1
        cy, cx = rng.integers(h // 3, h - 6), rng.integers(w // 3, w - 6)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 < 25] = 2
        mask[:, :2] = 3
        pixels = rng.normal(120, 25, (h, w, 3))
        pixels[mask == 1] = (220, 40, 40)
        pixels[mask == 2] = (40, 40, 220)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / "images" / f"{k}.png")
        Image.fromarray(mask).save(folder / "labels" / f"{k}_P.png")
    return folder


def seg_dls(folder, **kwargs):
    from minidl.vision import get_image_files
    kwargs = {"bs": 4, "valid_pct": 0.25, **kwargs}
    return SegmentationDataLoaders.from_label_func(folder, get_image_files(folder / "images"),
                                                   lambda o: folder / "labels" / f"{o.stem}_P{o.suffix}",
                                                   codes=CODES, seed=0, num_workers=0, **kwargs)


# ---------------------------------------------------------------------- masks move with their photos
RED = np.array([0, 50, 90, 170, 250])   # the red of each id: blends of two or four of them are other numbers


def coded_pair(h=48, w=64):
    """A photo whose red channel is RED[id] on 8x8 blocks of ids, and the mask of those ids."""
    ids = (np.arange(h)[:, None] // 8 + np.arange(w)[None] // 8) % 5
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[..., 0] = RED[ids]
    return Image.fromarray(pixels), Image.fromarray(ids.astype(np.uint8))


def agrees(red, ids):
    """Where the photo was not blended (its red is one id's), the mask holds that id."""
    pure = np.isin(red, RED)
    return pure.mean() > 0.2 and (red[pure] == RED[ids[pure]]).mean() > 0.97


@pytest.mark.parametrize("tfm", [Resize(24), Resize((20, 40), method="squish"), Resize(32, method="pad"),
                                 RandomResizedCrop(24, min_scale=0.3)], ids=repr)
@pytest.mark.parametrize("train", [True, False])
def test_item_transforms_move_the_mask_with_its_photo_by_nearest(tfm, train):
    minidl.set_seed(3)
    image, mask = coded_pair()
    for _ in range(5):
        out, out_mask = tfm(image, train, mask)
        ids, red = np.asarray(out_mask), np.asarray(out)[..., 0].astype(int)
        assert out_mask.size == out.size and set(np.unique(ids)) <= set(range(5))   # never an interpolated id
        assert agrees(red, ids)          # the same place of the same picture (borders blend in the photo only)


def test_batch_transforms_move_masks_and_leave_their_ids_alone():
    minidl.set_seed(0)
    image, mask = coded_pair()
    x = np.repeat(np.asarray(image)[None].transpose(0, 3, 1, 2).astype(np.float32) / 255, 6, axis=0)
    masks = np.repeat(np.asarray(mask, np.int64)[None], 6, axis=0)
    moved, moved_masks = AffineAugment(max_rotate=30, max_zoom=1.3, p_affine=1.0)(x, True, masks)
    assert moved_masks.dtype == np.int64 and set(np.unique(moved_masks)) <= set(range(5))
    assert not np.array_equal(moved_masks, masks)
    assert agrees(np.rint(moved[:, 0] * 255).astype(int), moved_masks)
    lit, same = Lighting(0.5, p=1.0)(x, True, masks)
    assert same is masks and not np.array_equal(lit, x)
    normed, same = Normalize([0.5] * 3, [0.2] * 3)(x, False, masks)
    assert same is masks


def test_loaders_give_photos_and_masks(tmp_path):
    dls = seg_dls(scenes(tmp_path))
    x, y = dls.train.one_batch()
    assert x.shape == (4, 3, 40, 48) and y.shape == (4, 40, 48) and y.dtype == minidl.int64
    assert dls.vocab == CODES and dls.c == 4
    assert (tmp_path / "batch.png").exists() or dls.show_batch(str(tmp_path / "batch.png"))


# ---------------------------------------------------------------------- bad masks are named
def test_bad_masks_are_errors_naming_the_file(tmp_path):
    folder = scenes(tmp_path / "d", n=4)
    labels = folder / "labels"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(labels / "0_P.png")             # wrong size
    with pytest.raises(BadMaskError, match=r"0_P\.png: the mask is 10x10 .* but its photo .*0\.png is 48x40"):
        seg_dls(folder, valid_pct=0.0, bs=4).train.one_batch()
    Image.fromarray(np.full((40, 48), 9, np.uint8)).save(labels / "0_P.png")           # ids outside codes
    with pytest.raises(BadMaskError, match=r"0_P\.png: class ids \[9\] are outside codes \(0 \.\. 3, 4 codes\)"):
        load_mask(labels / "0_P.png", 4)
    (labels / "0_P.png").write_bytes(b"not a png")                                     # unreadable
    with pytest.raises(BadMaskError, match=r"0_P\.png: not a readable mask"):
        load_mask(labels / "0_P.png", 4)
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(labels / "0_P.png")          # colours, not ids
    with pytest.raises(BadMaskError, match=r"0_P\.png: a RGB image; a mask holds one class id per pixel"):
        load_mask(labels / "0_P.png", 4)
    (labels / "1_P.png").unlink()                                                     # label_func finds nothing
    with pytest.raises(BadMaskError, match=r"1 of 4 masks do not exist, e\.g\. .*1_P\.png"):
        seg_dls(folder)
    with pytest.raises(ValueError, match="give codes="):
        SegmentationDataLoaders.from_label_func(folder, [folder / "images" / "2.png"], lambda o: o)


# ---------------------------------------------------------------------- loss and metrics
def test_cross_entropy_ignores_the_void_class_as_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((2, 4, 3, 5))
    target = rng.integers(0, 4, (2, 3, 5))
    x = minidl.tensor(scores, requires_grad=True)
    loss = nn.CrossEntropyLossFlat(axis=1, ignore_index=3)(x, minidl.tensor(target))
    loss.backward()
    tx = torch.tensor(scores, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(tx, torch.tensor(target), ignore_index=3)
    tloss.backward()
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-10)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert np.all(x.grad.numpy().transpose(0, 2, 3, 1)[target == 3] == 0)
    only_void = nn.CrossEntropyLossFlat(axis=1, ignore_index=3)(x, minidl.tensor(np.full((2, 3, 5), 3)))
    assert only_void.item() == 0


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_ignored_rows_outside_the_classes_and_other_reductions_are_pytorchs(reduction):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    scores, target = rng.standard_normal((7, 4)), rng.integers(0, 4, 7)
    target[[1, 4]] = -100                                            # PyTorch's default ignore_index
    x = minidl.tensor(scores, requires_grad=True)
    loss = nn.CrossEntropyLoss(reduction=reduction, ignore_index=-100)(x, minidl.tensor(target))
    loss.sum().backward()
    tx = torch.tensor(scores, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(tx, torch.tensor(target), reduction=reduction, ignore_index=-100)
    tloss.sum().backward()
    np.testing.assert_allclose(loss.numpy(), tloss.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_pixel_metrics_count_over_the_whole_set_and_leave_void_out():
    targets = np.array([[[0, 1], [1, 3]], [[2, 2], [0, 3]]])          # 3 is void
    decided = np.array([[[0, 1], [0, 1]], [[2, 1], [0, 0]]])
    scores = np.eye(4)[decided].transpose(0, 3, 1, 2)                # one-hot scores (N, C, H, W)
    acc, iou, dice = PixelAccuracy(ignore_index=3), JaccardCoeffMulti(ignore_index=3), DiceMulti(ignore_index=3)
    for m in (acc, iou, dice):
        m.reset()
        for k in range(2):                                           # two batches of one image
            m.accumulate(minidl.tensor(scores[k:k + 1]), minidl.tensor(targets[k:k + 1]))
    assert acc.value == pytest.approx(4 / 6)                          # 6 non-void pixels, 4 right
    # class 0: pred {a, c, e}, target {a, e} -> 2/3; class 1: pred {b, f}, target {b, c} -> 1/3; class 2: 1/2
    np.testing.assert_allclose(iou.per_class[:3], [2 / 3, 1 / 3, 1 / 2])
    assert np.isnan(iou.per_class[3]) and iou.value == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    np.testing.assert_allclose(dice.per_class[:3], [4 / 5, 2 / 4, 2 / 3])
    assert foreground_acc(minidl.tensor(scores), minidl.tensor(targets), bkg_idx=3) == pytest.approx(4 / 6)


def test_pixel_metrics_on_a_device_count_there_and_read_once(monkeypatch):
    """On "emu" (cuda's host code) the counts stay on the device: no copy to the host per batch, the same values."""
    from minidl.backend import get_backend
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 5, (3, 6, 7))
    targets[0, :2] = 255                                                # void, outside the classes
    scores = rng.standard_normal((3, 4, 6, 7))
    results = []
    for device in ("cpu", "emu"):
        metrics = PixelAccuracy(ignore_index=255), JaccardCoeffMulti(ignore_index=255), DiceMulti(ignore_index=255)
        backend, reads = get_backend(device), []
        monkeypatch.setattr(backend, "to_numpy", lambda a, f=backend.to_numpy: reads.append(1) or f(a))
        for m in metrics:
            m.reset()
            for k in range(3):
                m.accumulate(minidl.tensor(scores[k:k + 1], device=device), minidl.tensor(targets[k:k + 1], device=device))
        assert device == "cpu" or reads == []
        results.append([m.value for m in metrics] + [metrics[1].per_class])
        monkeypatch.undo()
    assert results[0][:3] == pytest.approx(results[1][:3], rel=1e-12)
    np.testing.assert_array_equal(results[0][3], results[1][3])


# ---------------------------------------------------------------------- hooks and the U-Net
def test_forward_hooks_see_replace_and_go():
    layer = nn.Linear(3, 2)
    seen = []
    handle = layer.register_forward_hook(lambda m, inputs, out: seen.append((m, inputs[0].shape, out.shape)))
    layer(minidl.zeros(4, 3))
    assert seen == [(layer, (4, 3), (4, 2))]
    handle.remove()
    layer(minidl.zeros(1, 3))
    assert len(seen) == 1
    with layer.register_forward_hook(lambda m, i, out: out * 0):
        assert layer(minidl.ones(1, 3)).numpy().tolist() == [[0.0, 0.0]]
    assert layer(minidl.ones(1, 3)).numpy().any()
    hooks = nn.hook_outputs([layer])
    layer(minidl.ones(5, 3))
    assert hooks[0].stored.shape == (5, 2)


@pytest.mark.parametrize("arch, skips", [
    (efficientnet_lite0, [(16, 32), (24, 16), (40, 8), (112, 4)]),
    (resnet18, [(64, 32), (64, 16), (128, 8), (256, 4)]),
])
def test_skip_layers_are_found_in_any_body(arch, skips):
    found, out = skip_layers(create_body(arch, pretrained=False))
    assert [(c, h) for _, (c, h, w) in found] == skips and out[1:] == (2, 2)


def test_unet_gives_a_score_per_pixel_at_odd_sizes():
    minidl.set_seed(0)
    unet = DynamicUnet(create_body(efficientnet_lite0, pretrained=False), 5)
    unet.eval()
    with minidl.no_grad():
        assert unet(minidl.zeros(2, 3, 45, 61)).shape == (2, 5, 45, 61)
    assert unet[0] is unet.body and len(unet_split(unet)) == 2


def tiny_body():
    """Three stride-2 conv blocks: a body with skips at 1/2 and 1/4, fast enough to train in a test."""
    def block(a, b):
        return nn.Sequential(nn.Conv2d(a, b, 3, stride=2, padding=1), nn.BatchNorm2d(b), nn.ReLU())
    return nn.Sequential(block(3, 8), block(8, 16), block(16, 32))


def test_a_unet_learns_to_find_squares_and_discs(tmp_path):
    minidl.set_seed(0)
    dls = seg_dls(scenes(tmp_path, n=24, size=(32, 32)), bs=6)
    model = DynamicUnet(tiny_body(), 4, widths=(32, 16, 16))
    learn = SegmentationLearner(dls, model, loss_func=nn.CrossEntropyLossFlat(axis=1, ignore_index=3),
                                metrics=[PixelAccuracy(ignore_index=3), JaccardCoeffMulti(ignore_index=3)],
                                splitter=unet_split, path=tmp_path)
    learn.fit_one_cycle(12, 1e-2)
    loss, acc, miou = learn.validate()
    assert acc > 0.9 and miou > 0.6
    mask, _, probs = learn.predict(dls.valid.dataset.files[0])
    assert mask.shape == (32, 32) and probs.shape == (4, 32, 32)
    assert learn.show_results(max_n=2, path=str(tmp_path / "results.png"))
    interp = SegmentationInterpretation.from_learner(learn)
    losses, order = interp.top_losses(3)
    assert len(interp.losses) == len(dls.valid.dataset) and np.all(np.diff(losses) <= 0)
    worst = int(order[0])                                            # its loss, computed on that scene alone
    x, y = dls.valid.collate_fn([dls.valid.dataset[worst]], dls.valid.device)
    with minidl.no_grad():
        assert losses[0] == pytest.approx(learn.loss_func(learn.model(x), y).item(), rel=1e-5)
    assert interp.decoded.shape == (len(dls.valid.dataset), 32, 32)
    assert interp.plot_top_losses(2, path=str(tmp_path / "top.png"))


def test_unet_learner_starts_frozen_on_a_pretrained_body(tmp_path):
    dls = seg_dls(scenes(tmp_path, n=8, size=(32, 32)))
    learn = unet_learner(dls, efficientnet_lite0, path=tmp_path)
    assert isinstance(learn.loss_func, nn.CrossEntropyLossFlat) and learn.loss_func.axis == 1
    body_conv = learn.model[0][0].weight
    assert not body_conv.requires_grad and all(p.requires_grad for p in learn.model[1].parameters())
    assert dls.train.collate_fn.normalize is not None            # ImageNet statistics, as the body expects


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("arch, cut, last_cross", [(resnet18, None, True), (efficientnet_lite0, -2, False)],
                         ids=["resnet18-full-size-block", "lite0-cut-bilinear-scores"])
def test_unet_forward_matches_a_pytorch_copy(mode, arch, cut, last_cross):
    torch = pytest.importorskip("torch")
    from benchmarks.torch_twins import torch_unet
    from test_vision_models import randomise_batch_norms
    torch.manual_seed(0)
    reference = randomise_batch_norms(torch, torch_unet(torch, arch.__name__, n_out=5, last_cross=last_cross))
    ours = DynamicUnet(create_body(arch, pretrained=False, cut=cut), 5, last_cross=last_cross)
    ours.load_state_dict({k: v.detach().numpy() for k, v in reference.state_dict().items()})
    for block in ours.modules():
        if hasattr(block, "drop_connect_rate"):
            block.drop_connect_rate = 0.0                    # Lite0's stochastic depth: the twin has none
    getattr(reference, mode)()
    getattr(ours, mode)()
    x = np.random.default_rng(0).standard_normal((2, 3, 50, 66)).astype(np.float32)   # sizes that do not halve
    with torch.no_grad():
        theirs = reference(torch.from_numpy(x)).numpy()
    with minidl.no_grad():
        mine = ours(minidl.tensor(x)).numpy()
    assert mine.shape == theirs.shape == (2, 5, 50, 66) and np.abs(theirs).max() > 0.1
    assert np.abs(mine - theirs).max() <= 1e-4, np.abs(mine - theirs).max()
