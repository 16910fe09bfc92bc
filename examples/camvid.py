"""Chapter 1's second model: a class for every pixel of a street scene (a U-Net on CamVid).

The book's code, on minidl:

    dls = SegmentationDataLoaders.from_label_func(path, bs=8, fnames=get_image_files(path/"images"),
              label_func=lambda o: path/'labels'/f'{o.stem}_P{o.suffix}', codes=np.loadtxt(path/'codes.txt', dtype=str))
    learn = unet_learner(dls, resnet34)
    learn.fine_tune(8)

Here on SegNet's split of CamVid (the benchmark's): 367 training and 101 validation scenes of
480 x 360, 11 classes and a 12th, "Unlabelled", the void class, left out of the loss and the
scores. A U-Net on EfficientNet-Lite0's ImageNet body (models/unet.py; the body without its head
convolution, decoder widths 256 -> 128/96/64/32, scores made at half size and resized bilinearly:
1.3 GMAC per 180 x 240 scene, 5.2 M parameters; --last-cross adds fastai's full-size block,
+0.85 GMAC), trained at --size (height; width 4/3 of it) with horizontal flips, fastai's
fine_tune (frozen body, then all).

Data: --data PATH, else $MINIDL_DATA, else ~/.minidl/data, else fastai's CamVid archive downloaded
there: a folder "camvid" in SegNet's layout (train/, trainannot/, val/, valannot/, codes.txt) or in
fastai's (images/, labels/ with `<name>_P.png` masks, valid.txt naming the validation photos,
codes.txt with 32 classes of which "Void" is the void one). With none found and no download
(offline, or --no-download), it trains on a SYNTHETIC stand-in (sky, road, cars) and says so.
Prints `valid pixel accuracy X` and `valid miou X` (void excluded), and per-class IoU.
  --test DIR   DIR holds test/ and testannot/ (SegNet's layout): train on train + val, as the
               published figures do, and end with `test pixel accuracy X` and `test miou X`.
  --device cuda  train on a GPU (emu: the CUDA kernels on the CPU, slow); --limit N: N scenes a split.
Writes batch.png and results.png (photo / truth / prediction) to --out.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import minidl
from minidl.data import decode_workers
from minidl.data.external import DataNotFoundError, find_data
from minidl.learn import JaccardCoeffMulti, PixelAccuracy
from minidl.nn import CrossEntropyLossFlat
from minidl.vision import Resize, efficientnet_lite0, get_image_files, resnet18, resnet34
from minidl.vision.learner import unet_learner
from minidl.vision.segmentation import SegmentationDataLoaders
from minidl.vision.transforms import AffineAugment

ARCHS = {"efficientnet_lite0": efficientnet_lite0, "resnet18": resnet18, "resnet34": resnet34}
VOIDS = ("Unlabelled", "Void")   # SegNet's name for the void class, fastai's


def segnet_files(folder, split):
    """The photos of ``split`` (train, val, test) in SegNet's layout."""
    photos = get_image_files(folder / split)
    if not photos:
        raise FileNotFoundError(f"camvid: no photos in {folder / split}; SegNet's layout has {split}/ and {split}annot/")
    return photos


def label_func(photo):
    """A photo's mask: SegNet's train/x.png -> trainannot/x.png, fastai's images/x.png -> labels/x_P.png."""
    if photo.parent.name == "images":
        return photo.parent.parent / "labels" / f"{photo.stem}_P{photo.suffix}"
    return photo.parent.parent / f"{photo.parent.name}annot" / photo.name


def street_scene(rng, colours, size=(36, 48)):
    """A made-up scene: sky above road, a car somewhere, a void strip at the left; (pixels (H, W, 3), ids (H, W))."""
    h, w = size
    ids = np.zeros((h, w), np.uint8)
    ids[h // 2:] = 1
    top, left = rng.integers(h // 4, h * 5 // 8), rng.integers(0, w * 2 // 3)
    ids[top:top + h // 4, left:left + w * 2 // 7] = 2
    ids[:, :max(w // 24, 1)] = 3
    return np.clip(colours[ids] + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8), ids


def synthetic_camvid(folder, n=(40, 12), size=(36, 48), seed=0):
    """A stand-in for offline runs in SegNet's layout: n[0] training and n[1] validation street scenes,
    codes Sky, Road, Car and Unlabelled (void). Returns the folder."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    colours = np.array([(90, 140, 230), (90, 90, 90), (220, 30, 30), (0, 0, 0)])
    for split, count in zip(("train", "val"), n):
        (folder / split).mkdir(parents=True, exist_ok=True)
        (folder / f"{split}annot").mkdir(exist_ok=True)
        for k in range(count):
            pixels, ids = street_scene(rng, colours, size)
            Image.fromarray(pixels).save(folder / split / f"{k}.png")
            Image.fromarray(ids).save(folder / f"{split}annot" / f"{k}.png")
    (folder / "codes.txt").write_text("Sky\nRoad\nCar\nUnlabelled\n")
    return folder


def splits(folder):
    """(training photos, validation photos) in either layout."""
    if (folder / "train").is_dir():
        return segnet_files(folder, "train"), segnet_files(folder, "val")
    valid = set((folder / "valid.txt").read_text().split())
    photos = get_image_files(folder / "images")
    return [p for p in photos if p.name not in valid], [p for p in photos if p.name in valid]


def scores(learn, dl, codes, void):
    """(pixel accuracy, mean IoU, per-class IoU) over a whole loader, the void class left out."""
    acc, iou = PixelAccuracy(ignore_index=void), JaccardCoeffMulti(ignore_index=void)
    for m in (acc, iou):
        m.reset()
    learn.model.eval()
    with minidl.no_grad():
        for x, y in dl:
            out = learn.model(x)
            acc.accumulate(out, y)
            iou.accumulate(out, y)
    return acc.value, iou.value, dict(zip(codes, iou.per_class))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="folder holding camvid/ (default: $MINIDL_DATA, the cache)")
    parser.add_argument("--test", help="a folder with test/ and testannot/: train on train + val, score on it")
    parser.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                        help="download fastai's CamVid when none is found (--no-download: the synthetic stand-in)")
    parser.add_argument("--arch", choices=sorted(ARCHS), default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=180, help="scenes are scaled to size x (4/3 size)")
    parser.add_argument("--epochs", type=int, default=12, help="fine_tune's epochs after the frozen ones")
    parser.add_argument("--freeze-epochs", type=int, default=3)
    parser.add_argument("--bs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3, help="fine_tune's base_lr")
    parser.add_argument("--limit", type=int, default=None, help="use only this many scenes of each split (quick runs)")
    parser.add_argument("--last-cross", action="store_true", help="end with fastai's block at full size")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default="examples/output/camvid", help="folder for the PNGs")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "emu"],
                        help="where the batches and the model go (emu: the CUDA kernels on the CPU)")
    parser.add_argument("--workers", type=int, default=None,
                        help="threads decoding the scenes (default: 2 on the CPU, most cores for a GPU)")
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel training on the ranks of mpirun -n N ... --distributed (README)")
    args = parser.parse_args(argv)
    if args.distributed:  # rank 0 prints "world size: N" and writes the PNGs; the other ranks stay quiet
        minidl.distributed.init(device=args.device, only_rank0_prints=True)
    main_rank = minidl.distributed.is_main_process()
    try:
        folder = find_data("camvid", args.data, download=args.download)
    except DataNotFoundError as e:
        if args.data:
            sys.exit(f"camvid: {e}")
        folder = synthetic_camvid(Path(tempfile.mkdtemp(prefix="minidl-camvid-")))
        print(f"{e}\n\n*** No CamVid found: training on a SYNTHETIC stand-in ({folder}: sky, road and cars). "
              "Its scores say nothing about CamVid's. ***", file=sys.stderr)
    codes = (folder / "codes.txt").read_text().split()
    void_name = next((v for v in VOIDS if v in codes), None)
    void = codes.index(void_name) if void_name else None
    train, valid = (photos[:args.limit] for photos in splits(folder))
    if args.test:
        train, valid = train + valid, segnet_files(Path(args.test), "test")[:args.limit]
    size = (args.size, args.size * 4 // 3)
    minidl.set_seed(args.seed)
    dls = SegmentationDataLoaders.from_label_func(
        folder, train + valid, label_func, codes=codes, bs=args.bs, seed=args.seed,
        splits=(np.arange(len(train)), np.arange(len(train), len(train) + len(valid))),
        item_tfms=Resize(size, method="squish"), batch_tfms=[AffineAugment(max_rotate=0, max_zoom=1.0)],
        device=args.device, num_workers=args.workers or decode_workers(args.device))
    print(f"data: {folder}, {len(train)} training and {len(valid)} {'test' if args.test else 'validation'} scenes, "
          f"{len(codes)} codes (void: {void_name or 'none'}), {size[0]}x{size[1]} px, on {args.device!r}")
    if main_rank:
        dls.show_batch(os.path.join(args.out, "batch.png"))
    learn = unet_learner(dls, ARCHS[args.arch], last_cross=args.last_cross, loss_func=CrossEntropyLossFlat(axis=1, ignore_index=void),
                         metrics=[PixelAccuracy(ignore_index=void), JaccardCoeffMulti(ignore_index=void)],
                         path=args.out)
    if args.distributed:
        learn.to_distributed()
    start = time.perf_counter()
    learn.fine_tune(args.epochs, base_lr=args.lr, freeze_epochs=args.freeze_epochs)
    train_time = time.perf_counter() - start
    accuracy, miou, per_class = scores(learn, dls.valid, codes, void)
    if main_rank:
        learn.show_results(max_n=4, shuffle=False, path=os.path.join(args.out, "results.png"))
    print("per-class IoU: " + ", ".join(f"{c} {v:.3f}" for c, v in per_class.items() if not np.isnan(v)))
    print(f"wall time: {train_time:.1f} s to train on {os.cpu_count()} CPU cores; PNGs in {args.out}")
    split = "test" if args.test else "valid"
    print(f"{split} pixel accuracy {accuracy:.4f}")
    print(f"{split} miou {miou:.4f}")
    return accuracy, miou


if __name__ == "__main__":
    main()
