"""Vision (fastai's chapter 1: cats or dogs?): images, transforms, pretrained CNNs, learner, interpretation.

Read image.py (files -> RGB), transforms.py (same-size images, augmentation), data.py
(ImageDataLoaders), then learner.py (vision_learner) and interpret.py.
"""
from .image import PILImage, get_image_files, load_image, to_rgb, verify_images  # noqa: F401
from .transforms import (AffineAugment, Lighting, Normalize, RandomResizedCrop, Resize,  # noqa: F401
                         aug_transforms, imagenet_stats)
from .data import ImageBatcher, ImageDataLoader, ImageDataLoaders, ImageDataset, show_images  # noqa: F401
from .models import create_body, efficientnet_lite0, model_meta, num_features_model, resnet18, resnet34  # noqa: F401
from .learner import (BnFreeze, FreezeBodyBnStats, SegmentationLearner, VisionLearner, create_head,  # noqa: F401
                      create_vision_model, unet_learner, vision_learner)
from .segmentation import SegmentationDataLoaders  # noqa: F401
from .interpret import (ClassificationInterpretation, feature_maps, plot_feature_maps,  # noqa: F401
                        plot_first_layer_filters)
