# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 — Cats or dogs? Fine-tuning a pretrained CNN
#
# The book's first model. A network trained on ImageNet's 1.28 million photos already
# sees edges, textures and fur; we keep that *body*, put a new *head* on it for our two
# classes, train the head with the body frozen, then everything a little
# (`fine_tune`). Read alongside: `minidl/vision/image.py` → `transforms.py` → `data.py`
# → `models/efficientnet.py` → `learner.py` → `interpret.py`.
#
# Data: `cats_dogs/` (cat.N.jpg, dog.N.jpg) or Oxford-IIIT Pet under `$MINIDL_DATA` or the
# cache; with none, `examples/pets.py`'s synthetic stand-in. `MINIDL_NOTEBOOK_QUICK=1` (set when the
# tests run this notebook) uses 64 photos at 64 px; the full run uses them all at 128 px.

# %%
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

import minidl
from minidl.learn import error_rate
from minidl.vision import (ClassificationInterpretation, ImageDataLoaders, Resize, efficientnet_lite0,
                           get_image_files, plot_feature_maps, plot_first_layer_filters, vision_learner)

sys.path.insert(0, str(Path(minidl.__file__).resolve().parents[1] / "examples"))
from pets import find_photos, is_cat, is_pet_photo, synthetic_pets  # noqa: E402  (the example's helpers)

QUICK = os.environ.get("MINIDL_NOTEBOOK_QUICK") == "1"
folder = find_photos() or synthetic_pets(Path(tempfile.mkdtemp(prefix="minidl-pets-")))
files = sorted(f for f in get_image_files(folder) if is_pet_photo(f))
if QUICK:
    files = list(np.random.default_rng(0).permutation(files)[:64])
print(f"{len(files)} photos in {folder}; label_func: is_cat('{files[0].name}') = {is_cat(files[0].name)}")

# %% [markdown]
# ## Data: label from the file name, resize, batch
# `Resize` crops each photo to a square (a random crop for training, the centre for
# validation) and scales it; the batches are normalised with ImageNet's mean and
# standard deviation, the statistics the pretrained body was trained with.

# %%
minidl.set_seed(42)
size = 64 if QUICK else 128
dls = ImageDataLoaders.from_name_func(folder, files, is_cat, valid_pct=0.2, seed=42,
                                      item_tfms=Resize(size), bs=16 if QUICK else 32, num_workers=2)
dls.show_batch("batch.png")

# %% [markdown]
# ![a batch](batch.png)
#
# ## The learner: a pretrained body, a new head
# EfficientNet-Lite0's body (MBConv blocks: a 1×1 expansion, a depthwise k×k convolution,
# a 1×1 projection), then fastai's head: concat pooling, BatchNorm, Dropout, Linear(512),
# ReLU, BatchNorm, Dropout, Linear(2). `freeze()` trains the head (and BatchNorm layers) only.

# %%
learn = vision_learner(dls, efficientnet_lite0, metrics=error_rate)
n_body = sum(p.numel() for p in learn.model[0].parameters())
n_head = sum(p.numel() for p in learn.model[1].parameters())
print(f"body: {n_body:,} parameters (pretrained), head: {n_head:,} (new)")

# %%
learn.fine_tune(0 if QUICK else 1)   # one epoch frozen, then (unless quick) one with everything trainable

# %% [markdown]
# ## What went wrong, and what the network sees
# The confusion matrix counts right and wrong answers; the top losses are the photos the
# model was most confidently wrong (or least confidently right) about.

# %%
interp = ClassificationInterpretation.from_learner(learn)
print(interp.confusion_matrix())
interp.plot_confusion_matrix("confusion_matrix.png")
interp.plot_top_losses(9, "top_losses.png")
print(f"error rate: {np.mean(interp.decoded != interp.targets):.4f}  (fastai's chapter 1: under 0.01)")

# %% [markdown]
# ![top losses](top_losses.png)
#
# Zeiler and Fergus looked inside a trained CNN: the first layer's filters are edge and
# colour detectors, and deeper feature maps respond to larger patterns.

# %%
plot_first_layer_filters(learn.model, "first_layer_filters.png")
x, _ = dls.valid.one_batch()
plot_feature_maps(learn.model[0], x[:1], dls.valid.decode(x[:1])[0], "feature_maps.png")

# %% [markdown]
# ![filters](first_layer_filters.png)
# ![feature maps](feature_maps.png)
