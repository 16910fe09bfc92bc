"""Everything the book's vision cells use, for ``from minidl.vision.all import *`` (fastai's vision.all).

    from minidl.vision.all import *
    path = untar_data(URLs.PETS)/'images'
    def is_cat(x): return x[0].isupper()
    dls = ImageDataLoaders.from_name_func(path, get_image_files(path), valid_pct=0.2, seed=42,
                                          label_func=is_cat, item_tfms=Resize(224))
    learn = vision_learner(dls, resnet34, metrics=error_rate)
    learn.fine_tune(1)

The list below is the whole of it: read it to see where each name comes from.
"""
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..data import DataLoaders, RandomSplitter, URLs, untar_data
from ..learn import DiceMulti, JaccardCoeffMulti, Learner, PixelAccuracy, accuracy, error_rate, foreground_acc
from ..nn import CrossEntropyLossFlat
from .data import ImageDataLoaders
from .image import PILImage, get_image_files, load_image, verify_images
from .interpret import ClassificationInterpretation
from .learner import unet_learner, vision_learner
from .models import efficientnet_lite0, resnet18, resnet34
from .segmentation import SegmentationDataLoaders, SegmentationInterpretation
from .transforms import Normalize, RandomResizedCrop, Resize, aug_transforms, imagenet_stats

__all__ = [
    "np", "Path", "SimpleNamespace",                                   # what the cells use from Python
    "untar_data", "URLs", "DataLoaders", "RandomSplitter",             # data
    "ImageDataLoaders", "PILImage", "get_image_files", "load_image", "verify_images",
    "Resize", "RandomResizedCrop", "aug_transforms", "Normalize", "imagenet_stats",
    "vision_learner", "resnet18", "resnet34", "efficientnet_lite0",    # models and the learner
    "Learner", "CrossEntropyLossFlat", "accuracy", "error_rate", "ClassificationInterpretation",
    "SegmentationDataLoaders", "SegmentationInterpretation", "unet_learner",   # segmentation (the chapter's 2nd model)
    "PixelAccuracy", "foreground_acc", "JaccardCoeffMulti", "DiceMulti",
]
