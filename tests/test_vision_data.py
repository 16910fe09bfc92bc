"""minidl.vision data: decoding (colour modes, EXIF, bad files), transforms, ImageDataLoaders."""
import re
import warnings

import numpy as np
import pytest

pytest.importorskip("PIL", reason="the vision extra (Pillow) is not installed")
from PIL import Image  # noqa: E402

import minidl
from minidl.vision import (AffineAugment, ImageDataLoaders, ImageDataset, Lighting, Normalize, RandomResizedCrop,
                           Resize, aug_transforms, get_image_files, imagenet_stats, load_image, verify_images)
from minidl.vision.transforms import affine_resample


def gradient_image(w, h, seed=0):
    """An RGB image whose every pixel differs (so crops and flips can be located)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def write_pets(folder, n_per_class=6, size=(40, 32), bad=()):
    """cat.N.png (reddish) and dog.N.png (bluish) in ``folder``, plus the bad files named in ``bad``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for label, channel in (("cat", 0), ("dog", 2)):
        for k in range(n_per_class):
            pixels = rng.integers(0, 80, (size[1], size[0], 3), dtype=np.uint8)
            pixels[..., channel] += 150
            Image.fromarray(pixels).save(folder / f"{label}.{k}.png")
    for name in bad:
        write_bad_file(folder / name)
    return folder


def write_bad_file(path):
    if path.name.startswith("text"):
        path.write_text("this is not an image\n")
    elif path.name.startswith("empty"):
        path.write_bytes(b"")
    else:  # a truncated JPEG: a valid header, then the data stops
        buf = path.with_suffix(".full.tmp")
        gradient_image(64, 64).save(buf, format="JPEG")
        path.write_bytes(buf.read_bytes()[:300])
        buf.unlink()


def is_cat(name):
    return name.startswith("cat")


# ---------------------------------------------------------------- decoding

@pytest.mark.parametrize("mode, fmt", [("RGB", "PNG"), ("L", "PNG"), ("1", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"),
                                       ("RGBA", "PNG"), ("LA", "PNG"), ("I;16", "PNG"), ("RGB", "JPEG"),
                                       ("RGB", "BMP"), ("RGB", "GIF"), ("RGB", "WEBP")])
def test_every_colour_mode_decodes_to_rgb(tmp_path, mode, fmt):
    base = gradient_image(12, 8)
    if mode == "I;16":
        image = Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257))  # 16-bit grey
    else:
        image = base.convert(mode)
    path = tmp_path / f"image.{fmt.lower()}"
    image.save(path, format=fmt)
    rgb = load_image(path)
    assert rgb.mode == "RGB" and rgb.size == (12, 8)
    pixels = np.asarray(rgb).astype(int)
    if mode == "I;16":  # scaled to 8 bits, not clipped to white
        np.testing.assert_array_equal(pixels[..., 0], np.asarray(base.convert("L")))
    if mode in ("L", "LA"):  # grey: the three channels equal
        assert (pixels[..., 0] == pixels[..., 2]).all()
    if fmt == "PNG" and mode in ("RGB", "RGBA"):
        np.testing.assert_array_equal(pixels, np.asarray(base))


def test_transparency_is_laid_on_white(tmp_path):
    pixels = np.zeros((2, 2, 4), dtype=np.uint8)
    pixels[0, 0] = (255, 0, 0, 255)       # opaque red
    pixels[0, 1] = (255, 0, 0, 0)         # fully transparent (its colour means nothing)
    pixels[1, 0] = (255, 0, 0, 128)       # half-transparent red over white
    Image.fromarray(pixels, "RGBA").save(tmp_path / "a.png")
    rgb = np.asarray(load_image(tmp_path / "a.png")).astype(int)
    assert rgb[0, 0].tolist() == [255, 0, 0] and rgb[0, 1].tolist() == [255, 255, 255]
    assert rgb[1, 0, 0] == 255 and abs(rgb[1, 0, 1] - 127) <= 1
    # a palette image with a transparent colour index
    palette = Image.fromarray(np.array([[0, 1]], dtype=np.uint8), "P")
    palette.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    palette.save(tmp_path / "p.png", transparency=0)
    assert np.asarray(load_image(tmp_path / "p.png")).tolist() == [[[255, 255, 255], [10, 200, 10]]]


@pytest.mark.parametrize("orientation, turn", [(1, 0), (3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied(tmp_path, orientation, turn):
    """A camera stores the sensor's pixels and a tag saying how to turn them upright."""
    stored = gradient_image(6, 4)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(tmp_path / "photo.png", exif=exif)
    upright = np.asarray(load_image(tmp_path / "photo.png"))
    np.testing.assert_array_equal(upright, np.rot90(np.asarray(stored), turn))  # rot90 turns anticlockwise


def test_get_image_files(tmp_path):
    for rel in ("a.jpg", "b.PNG", "notes.txt", ".hidden.jpg", "sub/c.webp", "sub/deeper/d.jpeg", ".git/e.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    names = [p.relative_to(tmp_path).as_posix() for p in get_image_files(tmp_path)]
    assert names == ["a.jpg", "b.PNG", "sub/c.webp", "sub/deeper/d.jpeg"]
    assert [p.name for p in get_image_files(tmp_path, recurse=False)] == ["a.jpg", "b.PNG"]
    assert [p.name for p in get_image_files(tmp_path, folders=["sub"])] == ["c.webp", "d.jpeg"]
    with pytest.raises(FileNotFoundError, match="not a folder"):
        get_image_files(tmp_path / "nope")


def test_corrupt_and_non_image_files_are_skipped_with_a_warning_and_counted(tmp_path):
    bad = ("text.1.jpg", "empty.2.png", "truncated.3.jpg")
    folder = write_pets(tmp_path / "pets", n_per_class=5, bad=bad)
    files = get_image_files(folder)
    assert sorted(p.name for p in verify_images(files)) == sorted(bad)
    labels = [f.name.split(".")[0] for f in files]      # 'text', 'empty', 'truncated' are classes of one file
    everything = np.arange(len(files))                  # 13 files: 10 images, 3 bad; in both loaders
    dls = ImageDataLoaders.from_lists(folder, files, labels, splits=(everything, everything), seed=0,
                                      item_tfms=Resize(16), bs=4, num_workers=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(2):  # never a crash; each bad file warned about once per dataset, counted once
            trained = sum(len(y) for _, y in dls.train)
            validated = sum(len(y) for _, y in dls.valid)
            assert validated == 10 and 12 - 3 <= trained <= 12   # train drops its last partial batch (of 1)
    messages = [str(w.message) for w in caught if "skipping" in str(w.message)]
    assert len(messages) == 6 and all("not a readable image" in m for m in messages)
    assert dls.train.skipped == dls.valid.skipped == 3 and dls.skipped == 6
    assert {p.name for p in dls.train.dataset.bad_files} == set(bad)
    # in file order the batches are [4 cats] [cat, 3 dogs] [2 dogs, empty, text] [truncated]: a batch holding
    # bad files is that much shorter (not padded with duplicates), a batch of nothing but bad files is left out
    assert [len(y) for _, y in dls.valid] == [4, 4, 2]


def test_a_batch_of_only_bad_files_is_skipped_and_one_batch_says_why(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    for k in range(3):
        write_bad_file(folder / f"text.{k}.jpg")
    write_pets(folder, n_per_class=1)
    files = sorted(get_image_files(folder), key=lambda f: not f.name.startswith("text"))  # bad files first
    dls = ImageDataLoaders.from_lists(folder, files, [is_cat(f.name) for f in files], splits=([], range(5)),
                                      item_tfms=Resize(8), bs=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(dls.valid)
        assert [len(y) for _, y in batches] == [2]   # batch 1 (3 bad files) skipped; batch 2 has the 2 images
        with pytest.raises(ValueError, match="none of the first 3 files is a readable image"):
            dls.valid.one_batch()


# ---------------------------------------------------------------- item transforms

def test_resize_crop_takes_the_centre_on_valid_and_random_boxes_on_train():
    image = gradient_image(60, 30)
    valid = np.asarray(Resize(30)(image, train=False))
    np.testing.assert_array_equal(valid, np.asarray(image)[:, 15:45])   # the centre square, unscaled
    tall = Resize((30, 15))(image, train=False)                          # (height, width)
    assert tall.size == (15, 30)
    lefts = set()
    for seed in range(20):
        with minidl.random.using(np.random.default_rng(seed)):
            crop = np.asarray(Resize(30)(image, train=True))
        assert crop.shape == (30, 30, 3)
        lefts.add(int(np.flatnonzero((np.asarray(image)[0] == crop[0, 0]).all(axis=1))[0]))
    assert len(lefts) > 5 and min(lefts) >= 0 and max(lefts) <= 30


def test_resize_squish_and_pad():
    image = Image.fromarray(np.full((20, 40, 3), 200, dtype=np.uint8))
    squished = Resize(10, method="squish")(image, train=True)
    assert squished.size == (10, 10) and (np.asarray(squished) == 200).all()
    padded = np.asarray(Resize(20, method="pad", pad_mode="zeros")(image, train=False))
    assert padded.shape == (20, 20, 3)
    assert (padded[:5] == 0).all() and (padded[15:] == 0).all() and (padded[5:15] == 200).all()
    reflected = np.asarray(Resize(20, method="pad")(image, train=False))   # fastai's default: reflection
    assert (reflected == 200).all()
    with pytest.raises(ValueError, match="method must be one of"):
        Resize(8, method="stretch")


def test_random_resized_crop():
    image = gradient_image(80, 60)
    rrc = RandomResizedCrop(32, min_scale=0.35)
    outs = []
    for seed in range(5):
        with minidl.random.using(np.random.default_rng(seed)):
            outs.append(np.asarray(rrc(image, train=True)))
    assert all(o.shape == (32, 32, 3) for o in outs) and len({o.tobytes() for o in outs}) == 5
    valid = [np.asarray(rrc(image, train=False)) for _ in range(2)]
    assert valid[0].shape == (32, 32, 3) and (valid[0] == valid[1]).all()   # deterministic on valid
    with pytest.raises(ValueError):
        RandomResizedCrop(32, min_scale=0)


# ---------------------------------------------------------------- batch transforms

def test_affine_resample_flips_and_turns_exactly_and_the_identity_changes_nothing():
    x = np.random.default_rng(0).random((2, 3, 5, 5)).astype(np.float32)
    identity = np.array([[[1, 0, 0], [0, 1, 0]]] * 2, dtype=np.float64)
    np.testing.assert_allclose(affine_resample(x, identity), x, atol=1e-6)
    flip = identity.copy()
    flip[:, 0, 0] = -1
    np.testing.assert_allclose(affine_resample(x, flip), x[..., ::-1], atol=1e-6)
    quarter = np.array([[[0, -1, 0], [1, 0, 0]]] * 2, dtype=np.float64)  # source = R(90 deg) . output
    np.testing.assert_allclose(affine_resample(x, quarter), np.rot90(x, 1, axes=(2, 3)), atol=1e-5)
    outside = identity.copy()
    outside[:, 0, 2] = 1.0           # read one pixel to the right: the last column is mirrored back in
    shifted = affine_resample(x, outside)
    np.testing.assert_allclose(shifted[..., :4], x[..., 1:], atol=1e-6)
    np.testing.assert_allclose(shifted[..., 4], x[..., 3], atol=1e-6)


def test_augmentations_keep_shape_and_range_and_act_on_train_only():
    x = np.random.default_rng(1).random((16, 3, 12, 10)).astype(np.float32)
    tfms = aug_transforms(max_rotate=30, max_zoom=1.5, max_lighting=0.5)
    assert [type(t) for t in tfms] == [AffineAugment, Lighting]
    with minidl.random.using(np.random.default_rng(0)):
        y = x
        for t in tfms:
            y = t(y, train=True)
    assert y.shape == x.shape and y.dtype == np.float32 and 0 <= y.min() and y.max() <= 1
    changed = ~np.isclose(y, x).all(axis=(1, 2, 3))
    assert 8 <= changed.sum() <= 16          # p = 0.75 for each of rotate/zoom/lighting, 0.5 for the flip
    for t in tfms:
        assert t(x, train=False) is x        # validation batches pass untouched


def test_lighting_moves_brightness_in_logit_space():
    x = np.full((200, 3, 2, 2), 0.5, dtype=np.float32)
    with minidl.random.using(np.random.default_rng(0)):
        y = Lighting(max_lighting=0.2, p=1.0)(x, train=True)
    means = y.mean(axis=(1, 2, 3))
    # at x = 0.5 (logit 0) contrast does nothing, and x' = b, uniform in [0.4, 0.6]
    assert 0.4 <= means.min() < 0.43 and 0.57 < means.max() <= 0.6


def test_normalize_encodes_every_set_and_decodes():
    norm = Normalize.from_stats(*imagenet_stats)
    x = np.random.default_rng(2).random((2, 3, 4, 4)).astype(np.float32)
    for train in (True, False):
        z = norm(x, train)
        np.testing.assert_allclose(z[:, 1], (x[:, 1] - 0.456) / 0.224, rtol=1e-5)
    np.testing.assert_allclose(norm.decode(norm(x, False)), x, atol=1e-6)


# ---------------------------------------------------------------- ImageDataLoaders

def test_from_name_func_splits_labels_and_batches(tmp_path):
    folder = write_pets(tmp_path, n_per_class=10)
    files = get_image_files(folder)
    dls = ImageDataLoaders.from_name_func(folder, files, is_cat, valid_pct=0.25, seed=42, item_tfms=Resize(24),
                                          batch_tfms=Normalize.from_stats(*imagenet_stats), bs=4)
    assert dls.vocab == [False, True] and dls.c == 2
    assert len(dls.train.dataset) == 15 and len(dls.valid.dataset) == 5
    assert not set(dls.train.dataset.files) & set(dls.valid.dataset.files)
    x, y = dls.train.one_batch()
    assert x.shape == (4, 3, 24, 24) and x.dtype == minidl.float32 and y.dtype == minidl.int64
    for ds in (dls.train.dataset, dls.valid.dataset):
        assert [ds.label(i) for i in range(len(ds))] == [is_cat(f.name) for f in ds.files]
    # the same seed, the same split; the colours are learnable: cats are red, dogs blue
    again = ImageDataLoaders.from_name_func(folder, files, is_cat, valid_pct=0.25, seed=42, item_tfms=Resize(24))
    assert again.valid.dataset.files == dls.valid.dataset.files
    xv, yv = next(iter(again.valid))
    red_minus_blue = (xv.numpy()[:, 0] - xv.numpy()[:, 2]).mean(axis=(1, 2))
    assert ((red_minus_blue > 0) == yv.numpy().astype(bool)).all()
    assert len(dls.train) == 3 and [len(b[1]) for b in dls.valid] == [4, 1]  # train drops its last partial batch


def test_from_name_re_and_from_path_func(tmp_path):
    folder = write_pets(tmp_path, n_per_class=4)
    files = get_image_files(folder)
    dls = ImageDataLoaders.from_name_re(folder, files, r"^([a-z]+)\.\d+\.png$", valid_pct=0.5, seed=1,
                                        item_tfms=Resize(8), bs=2)
    assert dls.vocab == ["cat", "dog"]
    with pytest.raises(ValueError, match=re.escape("does not match the file name 'cat.0.png'")):
        ImageDataLoaders.from_name_re(folder, files, r"^(\d+)_", item_tfms=Resize(8))
    by_path = ImageDataLoaders.from_path_func(folder, files, lambda p: p.stem.split(".")[0], valid_pct=0.5, seed=1,
                                              item_tfms=Resize(8))
    assert by_path.train.dataset.files == dls.train.dataset.files


def test_from_folder_with_train_valid_folders_or_a_random_split(tmp_path):
    for split, n in (("train", 3), ("valid", 2)):
        for label in ("bird", "fish"):
            d = tmp_path / split / label
            d.mkdir(parents=True)
            for k in range(n):
                gradient_image(10, 10, seed=k).save(d / f"{k}.png")
    dls = ImageDataLoaders.from_folder(tmp_path, item_tfms=Resize(8), bs=2)
    assert dls.vocab == ["bird", "fish"]
    assert len(dls.train.dataset) == 6 and len(dls.valid.dataset) == 4
    assert all(f.parts[-3] == "valid" for f in dls.valid.dataset.files)
    assert all(dls.valid.dataset.label(i) == f.parent.name for i, f in enumerate(dls.valid.dataset.files))
    mixed = ImageDataLoaders.from_folder(tmp_path, valid_pct=0.5, seed=0, item_tfms=Resize(8))
    assert len(mixed.train.dataset) == len(mixed.valid.dataset) == 5
    with pytest.raises(FileNotFoundError, match="valid_pct"):
        ImageDataLoaders.from_folder(tmp_path / "train", item_tfms=Resize(8))


def test_images_of_different_sizes_need_an_item_transform(tmp_path):
    for k, w in enumerate((10, 12)):
        gradient_image(w, 10).save(tmp_path / f"cat.{k}.png")
    dls = ImageDataLoaders.from_name_func(tmp_path, get_image_files(tmp_path), is_cat, valid_pct=0, bs=2)
    with pytest.raises(ValueError, match=re.escape("item_tfms=Resize(size)")):
        dls.train.one_batch()


def test_seeded_augmented_batches_are_reproducible_whatever_the_number_of_workers(tmp_path):
    folder = write_pets(tmp_path, n_per_class=8, size=(30, 20))
    files = get_image_files(folder)

    def epochs(num_workers, prefetch, seed=7):
        dls = ImageDataLoaders.from_name_func(folder, files, is_cat, valid_pct=0.25, seed=seed, bs=4,
                                              item_tfms=RandomResizedCrop(16, min_scale=0.5),
                                              batch_tfms=aug_transforms(), num_workers=num_workers, prefetch=prefetch)
        return [np.concatenate([x.numpy() for x, _ in dls.train]) for _ in range(2)]

    first = epochs(0, 0)
    for other in (epochs(0, 0), epochs(3, 2), epochs(1, 0)):
        for a, b in zip(first, other):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])               # a new order and new augmentations each epoch
    assert not np.array_equal(first[0], epochs(0, 0, seed=8)[0])


def test_show_batch_test_dl_and_repr(tmp_path):
    folder = write_pets(tmp_path / "data", n_per_class=6)
    files = get_image_files(folder)
    dls = ImageDataLoaders.from_name_func(folder, files, is_cat, valid_pct=0.5, seed=0, item_tfms=Resize(16),
                                          batch_tfms=[*aug_transforms(), Normalize.from_stats(*imagenet_stats)],
                                          bs=4)
    png = dls.show_batch(str(tmp_path / "out" / "batch.png"), max_n=4)
    assert Image.open(png).size[0] > 100
    x, _ = dls.train.one_batch()
    decoded = dls.train.decode(x)
    assert decoded.shape == (4, 16, 16, 3) and 0 <= decoded.min() and decoded.max() <= 1
    test = dls.test_dl(files[:3], labels=[True, True, True])
    xt, yt = test.one_batch()
    assert xt.shape == (3, 3, 16, 16) and yt.tolist() == [1, 1, 1]
    xv, _ = dls.valid.one_batch()
    # the test set is processed like the validation set: centre crops and Normalize, no augmentation
    np.testing.assert_array_equal(dls.test_dl(dls.valid.dataset.files[:3]).one_batch()[0].numpy(), xv.numpy()[:3])
    assert "vocab=[False, True]" in repr(dls) and isinstance(dls.train.dataset, ImageDataset)
