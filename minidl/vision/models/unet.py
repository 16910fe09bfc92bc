"""A U-Net on a pretrained body: a class for every pixel (fastai's DynamicUnet, chapter 1's second model).

A classifier's body turns a photo into a few coarse feature maps (1/32 of its size): it
knows *what* is there but has lost *where*. A U-Net adds a decoder that climbs back up,
one doubling of size at a time, and at each size joins the body's own activation of that
size (a *skip connection*), which still knows where the edges are:

    photo (H, W) -> body ---------------------------------------------> 1/32: features
                     |  keeps its activations at 1/2, 1/4, 1/8, 1/16 (forward hooks)  |
                     v                                                              middle: two 3x3 conv-ReLU
    1/16: up x2 (nearest), join BatchNorm(skip), two 3x3 conv-ReLU   <-------------/
    1/8, 1/4, 1/2: the same, narrower each time
    1/1: up x2, join the photo itself (the last cross connection), two 3x3 conv-ReLU, 1x1 conv -> n_out scores
         (or, with last_cross=False, the 1x1 conv at 1/2 and the scores resized bilinearly: at 180 x 240
         the full-size block costs 0.85 of the 2.1 GMAC per image of a U-Net on Lite0)

The skips are found, not listed: a zero image is run through the body and the layer that
ends each resolution is hooked (``skip_layers``). So any body works: EfficientNet-Lite0,
ResNet18/34. Sizes that do not halve evenly (180 -> 90 -> 45 -> 23) are met by resizing the
upsampled map to its skip's size (nearest).
"""
from ... import nn
from ...nn import functional as F
from ...autograd import no_grad
from ...ops.shape import cat
from ...tensor import zeros

__all__ = ["DynamicUnet", "UnetBlock", "skip_layers"]


def _layers(body):
    """The body's layers in the order they run: its children, with a Sequential child's own children inlined."""
    out = []
    for child in body.children():
        out.extend(child.children() if isinstance(child, nn.Sequential) else [child])
    return out


def skip_layers(body, in_channels=3, size=(64, 64)):
    """(skips, out_shape): the layers after which the body's resolution changes, each with its output's
    (channels, height, width) for a ``size`` input, which are the activations a U-Net joins on its way
    back up; and the shape of the body's own output. Runs a zero image in eval mode (modes restored)."""
    layers = _layers(body)
    shapes = {}
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: shapes.__setitem__(k, o.shape[1:]))
             for k, layer in enumerate(layers)]
    modes = [(m, m.training) for m in body.modules()]
    device = next((p.device for p in body.parameters()), "cpu")
    try:
        body.eval()
        with no_grad():
            body(zeros(1, in_channels, *size, device=device))
    finally:
        for h in hooks:
            h.remove()
        for m, training in modes:
            object.__setattr__(m, "training", training)
    ran = [k for k in range(len(layers)) if k in shapes]
    ends = [k for k, nxt in zip(ran, ran[1:]) if shapes[k][1:] != shapes[nxt][1:] and shapes[k][1] < size[0]]
    return [(layers[k], tuple(shapes[k])) for k in ends], tuple(shapes[ran[-1]])


def conv_relu(n_in, n_out):
    """3x3 convolution (padding 1) and ReLU, Kaiming-initialised for the ReLU (fastai's ConvLayer without norm)."""
    conv = nn.Conv2d(n_in, n_out, 3, padding=1)
    nn.init.kaiming_normal_(conv.weight)
    nn.init.zeros_(conv.bias)
    return nn.Sequential(conv, nn.ReLU())


class UnetBlock(nn.Module):
    """One step up: the coarser map doubled in size (nearest), the body's skip of that size batch-normed
    and joined along the channels, then two 3x3 conv-ReLU."""

    def __init__(self, up_in, skip_in, n_out):
        super().__init__()
        self.bn = nn.BatchNorm2d(skip_in)
        self.convs = nn.Sequential(conv_relu(up_in + skip_in, n_out), conv_relu(n_out, n_out))

    def forward(self, up, skip):
        """up (N, up_in, h, w), skip (N, skip_in, ~2h, ~2w) -> (N, n_out, skip's size)."""
        up = F.interpolate(up, size=skip.shape[-2:], mode="nearest")
        return self.convs(cat([up, self.bn(skip)], 1))


class DynamicUnet(nn.Module):
    """A U-Net decoder over ``body`` (see the module docstring): (N, 3, H, W) -> (N, n_out, H, W) scores.

    ``widths``: the middle's channels, then each up block's from the coarsest skip to the finest
    (the last width is also the full-size block's). ``last_cross``: end with a block at the photo's
    size that joins the photo itself (fastai's); False: score at the finest skip's size and resize
    the scores bilinearly (no convolution at full size). ``self[0]`` is the body and ``self[1]`` the
    decoder, so a Learner can freeze the body as it does a classifier's."""

    def __init__(self, body, n_out, widths=(256, 128, 96, 64, 32), in_channels=3, last_cross=True):
        super().__init__()
        skips, (n_body, _, _) = skip_layers(body, in_channels)
        if len(widths) != len(skips) + 1:
            raise ValueError(f"DynamicUnet: widths needs {len(skips) + 1} numbers (the middle, then one per skip: "
                             f"the body changes resolution {len(skips)} times), got {len(widths)}")
        self.body = body
        self.hooks = nn.hook_outputs([layer for layer, _ in skips])
        decoder = [nn.Sequential(nn.BatchNorm2d(n_body), nn.ReLU(), conv_relu(n_body, widths[0]),
                                 conv_relu(widths[0], widths[0]))]
        for (_, (skip_in, _, _)), up_in, n in zip(reversed(skips), widths, widths[1:]):
            decoder.append(UnetBlock(up_in, skip_in, n))
        self.last_cross = last_cross
        if last_cross:
            decoder.append(nn.Sequential(conv_relu(widths[-1] + in_channels, widths[-1]),
                                         conv_relu(widths[-1], widths[-1]), nn.Conv2d(widths[-1], n_out, 1)))
        else:
            decoder.append(nn.Conv2d(widths[-1], n_out, 1))
        self.decoder = nn.ModuleList(decoder)

    def __getitem__(self, i):
        """``unet[0]`` is the body, ``unet[1]`` the decoder (what freezing and FreezeBodyBnStats act on)."""
        return (self.body, self.decoder)[i]

    def forward(self, x):
        """Photos (N, C, H, W) -> per-pixel class scores (N, n_out, H, W)."""
        middle, *blocks, last = self.decoder
        y = middle(self.body(x))
        for block, hook in zip(blocks, reversed(self.hooks)):
            y = block(y, hook.stored)
        if not self.last_cross:
            return F.interpolate(last(y), size=x.shape[-2:], mode="bilinear")
        return last(cat([F.interpolate(y, size=x.shape[-2:], mode="nearest"), x], 1))

