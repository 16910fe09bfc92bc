"""Chapter 1's "image recognizers can tackle non-image tasks": files' raw bytes as pictures.

The book shows sound, time series, mouse movements and malware turned into images, and an
image model pretrained on photos classifying them. Malware classification (Nataraj et al.
2011) draws each byte of a binary as a grey pixel, in rows of fixed width. We do the same
with files every Python installation has, and ask which kind of file a picture came from:

    source       .py files of the standard library            (text: bytes 32-126, short lines)
    bytecode     their compiled .pyc files                      (opcodes mixed with names and constants)
    native       .so extension modules and shared libraries     (x86 machine code, symbol tables)
    compressed   standard-library files gzip-compressed here    (near-uniform noise); few installations
                 ship enough archives of their own, so the example makes them, with gzip, from
                 other .py files than the source class uses

Each picture is a 4,096-byte window of one file (64 rows of 64 bytes), taken past the first
512 bytes where the file is long enough, so the magic numbers at the start of a .pyc, an ELF
or a gzip file rarely show: the network has to go by the bytes' texture. Files are split
60/20/20 into train, validation (the choices) and a held-out test set, one window per file,
so no file is in two splits. The body is the pet classifier's (EfficientNet-Lite0, ImageNet
weights), fine-tuned with fastai's recipe:

    dls = ImageDataLoaders.from_folder(out / "images", train="train", valid="valid", item_tfms=Resize(128))
    learn = vision_learner(dls, efficientnet_lite0, metrics=error_rate)
    learn.fine_tune(3)

Prints the validation and the held-out test error rates; writes batch.png and
confusion_matrix.png (test set) to --out. --device cuda trains on a GPU (emu: the CUDA kernels
on the CPU; quick: --n 5 --size 32 --epochs 1).
"""
import argparse
import gzip
import os
import shutil
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
from PIL import Image

import minidl
from minidl.data import decode_workers
from minidl.vision.all import ClassificationInterpretation, ImageDataLoaders, Resize, efficientnet_lite0, error_rate
from minidl.vision.all import get_image_files, vision_learner

WIDTH = 64          # bytes per row: one row of pixels
WINDOW = WIDTH * WIDTH
SKIP = 512          # start past the header when the file is long enough
KINDS = ("source", "bytecode", "native", "compressed")


def installation_files(min_size=WINDOW):
    """Every file of each kind in this Python installation (standard library, site-packages), sorted."""
    roots = sorted({Path(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib")})
    found = {".py": set(), ".pyc": set(), ".so": set()}
    for root in roots:
        for ext, files in found.items():
            files.update(p for p in root.rglob(f"*{ext}") if p.is_file() and p.stat().st_size >= min_size)
    return {ext: sorted(files) for ext, files in found.items()}


def byte_picture(data, rng):
    """A WIDTH x WIDTH greyscale picture of a window of ``data`` (zero-padded when shorter)."""
    start = int(rng.integers(SKIP, len(data) - WINDOW + 1)) if len(data) >= SKIP + WINDOW else 0
    window = np.frombuffer(data[start:start + WINDOW], dtype=np.uint8)
    window = np.pad(window, (0, WINDOW - len(window)))
    return Image.fromarray(window.reshape(WIDTH, WIDTH), mode="L")


def make_pictures(out, n_per_kind, seed):
    """Draw ``n_per_kind`` files of each kind, split them 60/20/20 by file, and write their pictures
    as out/<split>/<kind>/<n>.png. Returns {split: count}."""
    rng = np.random.default_rng(seed)
    files = installation_files()
    sources = list(rng.permutation(files[".py"]))
    picked = {"source": sources[:n_per_kind],
              "compressed": sources[n_per_kind:2 * n_per_kind],        # other files than the source class
              "bytecode": list(rng.permutation(files[".pyc"]))[:n_per_kind],
              "native": list(rng.permutation(files[".so"]))[:n_per_kind]}
    short = {kind: len(p) for kind, p in picked.items() if len(p) < n_per_kind}
    if short:
        raise SystemExit(f"bytes_as_images: this installation has too few files of some kinds {short} "
                         f"for --n {n_per_kind}; give a smaller --n")
    counts = {}
    for kind, paths in picked.items():
        cut = [int(0.6 * len(paths)), int(0.8 * len(paths))]
        for split, part in zip(("train", "valid", "test"), np.split(np.array(paths, dtype=object), cut)):
            folder = out / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for k, path in enumerate(part):
                data = Path(path).read_bytes()
                if kind == "compressed":
                    data = gzip.compress(data, mtime=0)
                byte_picture(data, rng).save(folder / f"{k}.png")
            counts[split] = counts.get(split, 0) + len(part)
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=150, help="files of each kind (split 60/20/20)")
    parser.add_argument("--size", type=int, default=128, help="pictures are scaled to size x size")
    parser.add_argument("--epochs", type=int, default=3, help="fine_tune's epochs after the frozen one "
                        "(chosen on the validation set: 2, 3, 4 gave error rates 0.108, 0.050, 0.058)")
    parser.add_argument("--bs", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default="examples/output/bytes_as_images", help="folder for pictures and PNGs")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "emu"],
                        help="where the batches and the model go (emu: the CUDA kernels on the CPU)")
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel training on the ranks of mpirun -n N ... --distributed (README)")
    args = parser.parse_args(argv)
    if args.distributed:  # rank 0 prints "world size: N", draws the pictures and writes the PNGs
        minidl.distributed.init(device=args.device, only_rank0_prints=True)
    main_rank = minidl.distributed.is_main_process()
    minidl.set_seed(args.seed)
    out = Path(args.out)
    images = out / "images"
    if main_rank:
        if images.exists():
            shutil.rmtree(images)   # pictures of another run (another --n or --seed) must not mix in
        counts = make_pictures(images, args.n, args.seed)
    if args.distributed:
        minidl.distributed.barrier()   # the pictures are written before any rank reads them
        counts = minidl.distributed.all_gather_object(counts if main_rank else None)[0]
    print(f"{args.n} files of each kind {KINDS} of this Python ({sys.prefix}): {counts} pictures (train/valid/test)")

    dls = ImageDataLoaders.from_folder(images, train="train", valid="valid", item_tfms=Resize(args.size),
                                       bs=args.bs, seed=args.seed, device=args.device,
                                       num_workers=decode_workers(args.device))
    if main_rank:
        dls.show_batch(str(out / "batch.png"))
    learn = vision_learner(dls, efficientnet_lite0, metrics=error_rate, path=out)
    if args.distributed:
        learn.to_distributed()
    start = time.time()
    learn.fine_tune(args.epochs)
    train_time = time.time() - start
    valid_error = learn.validate()[1]
    print(f"valid error_rate {valid_error:.4f}")

    test_files = get_image_files(images / "test")
    test_dl = dls.test_dl(test_files, labels=[f.parent.name for f in test_files])
    test_error = learn.validate(dl=test_dl)[1]
    print(f"test error_rate {test_error:.4f} ({len(test_files)} pictures of files never seen)")
    interp = ClassificationInterpretation.from_learner(learn, dl=test_dl)
    print(interp.confusion_matrix())
    if main_rank:
        interp.plot_confusion_matrix(str(out / "confusion_matrix.png"))
    print(f"wall time: {train_time:.1f} s to train on {os.cpu_count()} CPU cores; PNGs in {out}")
    return valid_error, test_error


if __name__ == "__main__":
    main()
