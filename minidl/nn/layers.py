"""The layers: each holds its parameters and calls one function of F in forward."""
from collections import OrderedDict

from .. import ops
from ..tensor import int64, ones, tensor, zeros
from . import functional as F
from . import init
from .module import Module, Parameter


class Linear(Module):
    """y = x @ W^T + b, W of shape (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(zeros(out_features, in_features))
        self.bias = Parameter(zeros(out_features)) if bias else None
        init.default_linear_init(self.weight, self.bias)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Conv2d(Module):
    """2-D convolution, weight (out_channels, in_channels/groups, kh, kw)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels={in_channels} and out_channels={out_channels} "
                             f"must both be divisible by groups={groups}")
        kh, kw = ops.conv.pair(kernel_size)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (kh, kw)
        self.stride, self.padding = ops.conv.pair(stride), ops.conv.pair(padding)
        self.dilation, self.groups = ops.conv.pair(dilation), groups
        self.weight = Parameter(zeros(out_channels, in_channels // groups, kh, kw))
        self.bias = Parameter(zeros(out_channels)) if bias else None
        init.default_linear_init(self.weight, self.bias)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + ("" if self.bias is not None else ", bias=False")


class _BatchNorm(Module):
    """Normalise each channel with the batch's statistics in training, running averages in eval.

    ``activation`` ("relu" or "relu6") applies that activation to the output, as timm's
    BatchNormAct2d does: in eval mode it runs in the same pass as the normalisation
    (see F.batch_norm). The parameters and state-dict keys are those of a plain BatchNorm.
    """
    expected_dims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, activation=None):
        super().__init__()
        if activation not in ops.norm.ACTIVATIONS:
            raise ValueError(f"{type(self).__name__}: activation must be one of {list(ops.norm.ACTIVATIONS)}, "
                             f"got {activation!r}")
        self.activation = activation
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = Parameter(ones(num_features)) if affine else None
        self.bias = Parameter(zeros(num_features)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features))
            self.register_buffer("running_var", ones(num_features))
            self.register_buffer("num_batches_tracked", tensor(0, dtype=int64))

    def forward(self, x):
        if x.ndim not in self.expected_dims:
            raise ValueError(f"{type(self).__name__}: expected input with {' or '.join(map(str, self.expected_dims))} "
                             f"dims (N, C, ...), got shape {x.shape}")
        use_batch_stats = self.training or not self.track_running_stats
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if momentum is None:  # PyTorch: a cumulative average over all batches seen
                momentum = 1.0 / self.num_batches_tracked.item()
        running_mean = self.running_mean if self.track_running_stats else None
        running_var = self.running_var if self.track_running_stats else None
        return F.batch_norm(x, running_mean, running_var, self.weight, self.bias,
                            training=use_batch_stats, momentum=momentum or 0.0, eps=self.eps,
                            activation=self.activation)

    def extra_repr(self):
        s = f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"
        return s + (f", activation={self.activation!r}" if self.activation else "")


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L) input."""
    expected_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W) input."""
    expected_dims = (4,)


class Dropout(Module):
    """Zero values with probability p in training (scaling the rest by 1/(1-p)); identity in eval."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class Embedding(Module):
    """A table of num_embeddings vectors of size embedding_dim, looked up by integer ids."""

    def __init__(self, num_embeddings, embedding_dim):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(zeros(num_embeddings, embedding_dim))
        init.normal_(self.weight)  # PyTorch's default, N(0, 1)

    def forward(self, ids):
        return F.embedding(ids, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


def _activation(name, fn, doc):
    """A parameter-free layer that applies ``fn``."""
    def forward(self, x):
        return fn(x)
    forward.__doc__ = doc  # so help(ReLU.forward) shows the math
    return type(name, (Module,), {"forward": forward, "__doc__": doc})


ReLU = _activation("ReLU", F.relu, "max(x, 0)")
ReLU6 = _activation("ReLU6", F.relu6, "min(max(x, 0), 6)")
GELU = _activation("GELU", F.gelu, "x * Phi(x)")
Sigmoid = _activation("Sigmoid", F.sigmoid, "1 / (1 + e^-x)")
Tanh = _activation("Tanh", F.tanh, "tanh(x)")
Identity = _activation("Identity", lambda x: x, "returns its input")


class LeakyReLU(Module):
    """x if x > 0 else negative_slope * x."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Flatten(Module):
    """Merge dims start_dim..end_dim (by default everything but the batch dim)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)


class MaxPool2d(Module):
    """The max over each kernel_size window of an (N, C, H, W) input, windows stride apart (default: kernel_size)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1):
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}, padding={self.padding}"


class AvgPool2d(Module):
    """The mean over each kernel_size window of an (N, C, H, W) input, windows stride apart (default: kernel_size)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed (OH, OW) = output_size whatever H and W: windows tile the input evenly."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(AdaptiveAvgPool2d):
    """Max pooling to a fixed (OH, OW) = output_size whatever H and W: windows tile the input evenly."""

    def forward(self, x):
        return F.adaptive_max_pool2d(x, self.output_size)


class AdaptiveConcatPool2d(Module):
    """fastai's head pooling: max pool and average pool side by side (2x the channels)."""

    def __init__(self, size=1):
        super().__init__()
        self.size = size
        self.mp, self.ap = AdaptiveMaxPool2d(size), AdaptiveAvgPool2d(size)

    def forward(self, x):
        return ops.shape.cat([self.mp(x), self.ap(x)], dim=1)


class Upsample(Module):
    """Resize an (N, C, H, W) input to ``size`` or by ``scale_factor``, by nearest or bilinear
    interpolation (F.interpolate)."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None):
        super().__init__()
        self.size, self.scale_factor, self.mode, self.align_corners = size, scale_factor, mode, align_corners

    def forward(self, x):
        return F.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners)

    def extra_repr(self):
        scale = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        return f"{scale}, mode={self.mode!r}"


class PixelShuffle(Module):
    """(N, C r^2, H, W) -> (N, C, H r, W r): each group of r*r channels laid out as r x r pixels (F.pixel_shuffle)."""

    def __init__(self, upscale_factor):
        super().__init__()
        self.upscale_factor = upscale_factor

    def forward(self, x):
        return F.pixel_shuffle(x, self.upscale_factor)

    def extra_repr(self):
        return f"upscale_factor={self.upscale_factor}"


class Sequential(Module):
    """Modules applied one after another; indexable like a list (model[0], model[-2:]; a slice keeps the names)."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                setattr(self, name, m)
        else:
            for i, m in enumerate(modules):
                setattr(self, str(i), m)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return list(self._modules.values())[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        """Add ``module`` at the end (named by its position); returns self."""
        setattr(self, str(len(self)), module)
        return self


class ModuleList(Module):
    """A list of modules whose parameters are registered (e.g. one embedding per column)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        """Add ``module`` at the end (named by its position); returns self."""
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())
