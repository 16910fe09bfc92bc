"""Neural-network building blocks: Module and Parameter, layers, losses, init.

``functional`` (imported as F) holds the stateless ops the layers call.
"""
from . import functional, init  # noqa: F401
from .layers import (AdaptiveAvgPool2d, AdaptiveConcatPool2d, AdaptiveMaxPool2d, AvgPool2d,  # noqa: F401
                     BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Embedding, Flatten, GELU, Identity,
                     LeakyReLU, Linear, MaxPool2d, ModuleList, PixelShuffle, ReLU, ReLU6, Sequential, Sigmoid,
                     Tanh, Upsample)
from .losses import (BCEWithLogitsLoss, BCEWithLogitsLossFlat, CrossEntropyLoss,  # noqa: F401
                     CrossEntropyLossFlat, L1Loss, L1LossFlat, MSELoss, MSELossFlat)
from .module import Hook, Module, Parameter, RemovableHandle, hook_outputs  # noqa: F401
from .rnn import LSTM  # noqa: F401
from .sync_batchnorm import SyncBatchNorm, convert_sync_batchnorm  # noqa: F401
from .utils import clip_grad_norm_  # noqa: F401
