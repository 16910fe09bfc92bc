"""ResNet-18/34 (He et al. 2015, "Deep Residual Learning"), laid out and named as torchvision's.

The idea: a deep stack of convolutions is hard to train because each layer must learn a
whole new function; a residual block learns only a *change*, ``y = relu(x + F(x))``, so
an untrained block is close to the identity and the signal (and gradient) passes
straight through the ``+ x``. The network:

    conv1 7x7/2 (64) -> bn1 -> relu -> maxpool 3x3/2         224 -> 56 pixels
    layer1: 2 or 3 BasicBlocks, 64 channels                    56
    layer2: 2 or 4 BasicBlocks, 128 channels, the first /2     28
    layer3: 2 or 6 BasicBlocks, 256 channels, the first /2     14
    layer4: 2 or 3 BasicBlocks, 512 channels, the first /2      7
    avgpool (global average) -> flatten -> fc (512 -> 1000)

A BasicBlock is conv3x3 -> bn -> relu -> conv3x3 -> bn, plus its input; where the block
halves the size or changes the channels, the input goes through ``downsample`` (a 1x1
conv with the same stride, then bn) so the two can be added.

Parameter names are torchvision's (``layer2.0.downsample.0.weight``), so its ImageNet
weights load with ``load_state_dict`` as they are.
"""
from collections import OrderedDict

from ... import nn
from ...nn import init
from .weights import load_weights

__all__ = ["ResNet", "BasicBlock", "resnet18", "resnet34", "URLS"]

# torchvision's ImageNet weights (IMAGENET1K_V1: top-1 69.8% and 73.3%).
URLS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
}


def conv3x3(in_channels, out_channels, stride=1):
    """3x3 convolution with padding 1: the size is kept (or halved with stride 2)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); shortcut is x, or downsample(x)."""
    expansion = 1  # output channels / ``channels`` (4 in the Bottleneck blocks of ResNet-50+)

    def __init__(self, in_channels, channels, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels, activation="relu")  # relu(bn1(.)), in one pass in eval mode
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample

    def forward(self, x):
        """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)):
        (N, in_channels, H, W) -> (N, channels, H / stride, W / stride)."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.bn1(self.conv1(x))  # with its ReLU
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """torchvision's ResNet for BasicBlocks: ``layers`` = blocks per stage, (2, 2, 2, 2) for ResNet-18."""

    def __init__(self, layers, num_classes=1000, block=BasicBlock):
        super().__init__()
        self.in_channels = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, activation="relu")  # relu(bn1(.))
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        # torchvision's initialisation: He-normal convolutions (for the ReLUs that follow,
        # counting fan-out), batch norm as the identity; Linear keeps PyTorch's default.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                init.ones_(m.weight)
                init.zeros_(m.bias)

    def _make_layer(self, block, channels, blocks, stride):
        """A stage: the first block may halve the size and change the channels, the others keep both."""
        downsample = None
        if stride != 1 or self.in_channels != channels * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.in_channels, channels * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels * block.expansion))
        layers = [block(self.in_channels, channels, stride, downsample)]
        self.in_channels = channels * block.expansion
        layers += [block(self.in_channels, channels) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def body(self):
        """The network up to (excluding) the global pooling, sharing this model's layers:
        (N, 3, H, W) -> (N, 512, H/32, W/32). Its parameter names are the model's."""
        names = ["conv1", "bn1", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        return nn.Sequential(OrderedDict((n, getattr(self, n)) for n in names))

    def forward(self, x):
        """Images (N, 3, H, W) -> class scores (N, num_classes): stem (7x7 conv /2, max pool /2),
        4 stages, mean pool, fc."""
        x = self.maxpool(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def _resnet(arch, layers, pretrained, num_classes):
    state = load_weights(URLS[arch], arch) if pretrained else None  # first: offline fails before any work
    model = ResNet(layers, num_classes=num_classes if not pretrained else 1000)
    if pretrained:
        model.load_state_dict(state)
        if num_classes != 1000:  # a new classifier for another task, on the pretrained features
            model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def resnet18(pretrained=False, num_classes=1000):
    """ResNet-18 (11.7 M parameters); ``pretrained=True`` loads torchvision's ImageNet weights
    (downloaded once into ``~/.minidl/models``, 45 MB)."""
    return _resnet("resnet18", (2, 2, 2, 2), pretrained, num_classes)


def resnet34(pretrained=False, num_classes=1000):
    """ResNet-34 (21.8 M parameters); ``pretrained=True`` loads torchvision's ImageNet weights (83 MB)."""
    return _resnet("resnet34", (3, 4, 6, 3), pretrained, num_classes)
