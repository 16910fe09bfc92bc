"""Chapter 1's second model: a class for every pixel of a street scene (a U-Net on CamVid).

The book's code, on minidl:

    dls = SegmentationDataLoaders.from_label_func(path, bs=8, fnames=get_image_files(path/"images"),
              label_func=lambda o: path/'labels'/f'{o.stem}_P{o.suffix}', codes=np.loadtxt(path/'codes.txt', dtype=str))
    learn = unet_learner(dls, resnet34)
    learn.fine_tune(8)

Here on SegNet's split of CamVid (the benchmark's): 367 training and 101 validation scenes of
480 x 360, 11 classes and a 12th, "Unlabelled", the void class, left out of the loss and the
scores. A U-Net on EfficientNet-Lite0's ImageNet body (models/unet.py), trained at --size
(height; width 4/3 of it) with horizontal flips, fastai's fine_tune (frozen body, then all).

Data: --data PATH, else $MINIDL_DATA, else ~/.minidl/data: a folder "camvid" with SegNet's
layout (train/, trainannot/, val/, valannot/, codes.txt).
Prints `valid pixel accuracy X` and `valid miou X` (void excluded), and per-class IoU.
  --test DIR   DIR holds test/ and testannot/ (SegNet's layout): train on train + val, as the
               published figures do, and end with `test pixel accuracy X` and `test miou X`.
Writes batch.png and results.png (photo / truth / prediction) to --out.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

import minidl
from minidl.data.external import DataNotFoundError, find_data
from minidl.learn import JaccardCoeffMulti, PixelAccuracy
from minidl.nn import CrossEntropyLossFlat
from minidl.vision import Resize, efficientnet_lite0, get_image_files, resnet18, resnet34
from minidl.vision.learner import unet_learner
from minidl.vision.segmentation import SegmentationDataLoaders
from minidl.vision.transforms import AffineAugment

ARCHS = {"efficientnet_lite0": efficientnet_lite0, "resnet18": resnet18, "resnet34": resnet34}
VOID = "Unlabelled"


def segnet_files(folder, split):
    """The photos of ``split`` (train, val, test) in SegNet's layout, and a label_func to their masks."""
    photos = get_image_files(folder / split)
    if not photos:
        raise FileNotFoundError(f"camvid: no photos in {folder / split}; SegNet's layout has {split}/ and {split}annot/")
    return photos


def label_func(photo):
    return photo.parent.parent / f"{photo.parent.name}annot" / photo.name


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
    parser.add_argument("--arch", choices=sorted(ARCHS), default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=180, help="scenes are scaled to size x (4/3 size)")
    parser.add_argument("--epochs", type=int, default=12, help="fine_tune's epochs after the frozen ones")
    parser.add_argument("--freeze-epochs", type=int, default=3)
    parser.add_argument("--bs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3, help="fine_tune's base_lr")
    parser.add_argument("--limit", type=int, default=None, help="use only this many scenes of each split (quick runs)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default="examples/output/camvid", help="folder for the PNGs")
    args = parser.parse_args(argv)
    try:
        folder = find_data("camvid", args.data, download=False)
    except DataNotFoundError as e:
        sys.exit(f"camvid: {e}")
    codes = (folder / "codes.txt").read_text().split()
    void = codes.index(VOID) if VOID in codes else None
    train, valid = segnet_files(folder, "train")[:args.limit], segnet_files(folder, "val")[:args.limit]
    if args.test:
        train, valid = train + valid, segnet_files(Path(args.test), "test")[:args.limit]
    size = (args.size, args.size * 4 // 3)
    minidl.set_seed(args.seed)
    dls = SegmentationDataLoaders.from_label_func(
        folder, train + valid, label_func, codes=codes, bs=args.bs, seed=args.seed,
        splits=(np.arange(len(train)), np.arange(len(train), len(train) + len(valid))),
        item_tfms=Resize(size, method="squish"), batch_tfms=[AffineAugment(max_rotate=0, max_zoom=1.0)])
    print(f"data: {folder}, {len(train)} training and {len(valid)} {'test' if args.test else 'validation'} scenes, "
          f"{len(codes)} codes (void: {VOID if void is not None else 'none'}), {size[0]}x{size[1]} px")
    dls.show_batch(os.path.join(args.out, "batch.png"))
    learn = unet_learner(dls, ARCHS[args.arch], loss_func=CrossEntropyLossFlat(axis=1, ignore_index=void),
                         metrics=[PixelAccuracy(ignore_index=void), JaccardCoeffMulti(ignore_index=void)],
                         path=args.out)
    start = time.perf_counter()
    learn.fine_tune(args.epochs, base_lr=args.lr, freeze_epochs=args.freeze_epochs)
    train_time = time.perf_counter() - start
    accuracy, miou, per_class = scores(learn, dls.valid, codes, void)
    learn.show_results(max_n=4, shuffle=False, path=os.path.join(args.out, "results.png"))
    print("per-class IoU: " + ", ".join(f"{c} {v:.3f}" for c, v in per_class.items() if not np.isnan(v)))
    print(f"wall time: {train_time:.1f} s to train on {os.cpu_count()} CPU cores; PNGs in {args.out}")
    split = "test" if args.test else "valid"
    print(f"{split} pixel accuracy {accuracy:.4f}")
    print(f"{split} miou {miou:.4f}")
    return accuracy, miou


if __name__ == "__main__":
    main()
