"""minidl.nn.functional (import as F): the ops that layers are made of, by PyTorch's names."""
from ..ops.conv import adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, conv2d, max_pool2d  # noqa: F401
from ..ops.elementwise import gelu, leaky_relu, relu, relu6, sigmoid, tanh  # noqa: F401
from ..ops.loss import (binary_cross_entropy_with_logits, cross_entropy, l1_loss, mse_loss,  # noqa: F401
                        nll_loss)
from ..ops.matmul import linear  # noqa: F401
from ..ops.norm import batch_norm, dropout  # noqa: F401
from ..ops.reduce import log_softmax, logsumexp, softmax  # noqa: F401
from ..ops.resize import interpolate, pixel_shuffle, pixel_unshuffle  # noqa: F401
from ..ops.shape import embedding, pad  # noqa: F401
