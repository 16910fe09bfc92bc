"""Pretrained CNNs for transfer learning: ResNet-18/34 and EfficientNet-Lite0, and fastai's body/head split.

    model = efficientnet_lite0(pretrained=True)     # ImageNet classifier, 1000 classes
    body = create_body(resnet34, pretrained=True)   # everything but the pooling and the classifier
    num_features_model(body)                        # 512: the channels a new head receives

Transfer learning keeps what a network learned about images in general (edges, textures,
eyes, fur: the *body*) and replaces what was specific to ImageNet's 1000 classes (the
*head*: global pooling and a linear classifier) by a fresh head for the new task.
``model_meta[arch]`` says, per architecture, what ``vision_learner`` needs for that:
the statistics the pretrained weights expect their inputs normalised with, the number
of features the body outputs, and ``split``, which cuts ``Sequential(body, head)`` into
parameter groups (frozen together, given their own learning rates).
"""
from ... import nn
from ...autograd import no_grad
from ...tensor import zeros
from .efficientnet import EfficientNetLite, MBConvBlock, efficientnet_lite0  # noqa: F401
from .resnet import BasicBlock, ResNet, resnet18, resnet34  # noqa: F401
from .weights import WeightsNotFoundError, load_weights, weights_dir  # noqa: F401

__all__ = ["resnet18", "resnet34", "efficientnet_lite0", "create_body", "model_meta", "num_features_model",
           "ResNet", "BasicBlock", "EfficientNetLite", "MBConvBlock", "WeightsNotFoundError", "weights_dir",
           "IMAGENET_STATS", "resnet_split", "default_split"]

# Per-channel (R, G, B) mean and standard deviation of ImageNet's training images, values in [0, 1].
# Both families were trained on inputs normalised with these.
IMAGENET_STATS = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def _params(module):
    return list(module.parameters())


def resnet_split(model):
    """fastai's three groups for ResNets in ``Sequential(body, head)``: the stem and layer1-2, layer3-4, the head."""
    body, head = model[0], model[1:]   # body: conv1, bn1 (+ ReLU), maxpool, layer1, layer2 | layer3, layer4
    return [_params(body[:5]), _params(body[5:]), _params(head)]


def default_split(model):
    """Two groups of ``Sequential(body, head)``: the body and the head."""
    return [_params(model[0]), _params(model[1:])]


model_meta = {
    resnet18: {"stats": IMAGENET_STATS, "num_features": 512, "split": resnet_split},
    resnet34: {"stats": IMAGENET_STATS, "num_features": 512, "split": resnet_split},
    # unet_cut: the 320 -> 1280 head convolution mixes features for a classifier; a U-Net's
    # decoder would pay 4x more in its first convolution for them (body[:-2] ends at 320 channels).
    efficientnet_lite0: {"stats": IMAGENET_STATS, "num_features": 1280, "split": default_split, "unet_cut": -2},
}


def create_body(arch, pretrained=True, cut=None):
    """``arch``'s network up to (excluding) its global pooling and classifier, as an nn.Sequential.

    ``arch`` is one of the model functions (``resnet34``); with ``pretrained`` its ImageNet
    weights are loaded first. The body maps (N, 3, H, W) to (N, num_features, H/32, W/32).
    ``cut`` (fastai's): keep only the body's first ``cut`` children (a negative number drops
    that many from the end), e.g. ``cut=-2`` drops EfficientNet's 1x1 head convolution and
    its batch norm, which a U-Net does not need (``model_meta[arch]["unet_cut"]``).
    """
    if arch not in model_meta:
        names = ", ".join(f.__name__ for f in model_meta)
        raise ValueError(f"create_body: unknown architecture {getattr(arch, '__name__', arch)!r}; known: {names}")
    body = arch(pretrained=pretrained).body()
    return body if cut is None else body[:cut]


def num_features_model(body):
    """The number of channels ``body`` outputs: found by running a small zero image through it.

    It runs in eval mode under no_grad (and every module's mode is put back afterwards), so
    batch norm's running statistics are left alone.
    """
    first_conv = next((m for m in body.modules() if isinstance(m, nn.Conv2d)), None)
    in_channels = first_conv.in_channels if first_conv is not None else 3
    device = next((p.device for p in body.parameters()), "cpu")
    modes = [(m, m.training) for m in body.modules()]
    try:
        body.eval()
        with no_grad():
            out = body(zeros(1, in_channels, 64, 64, device=device))
    finally:
        for m, training in modes:
            object.__setattr__(m, "training", training)
    return out.shape[1]
