"""SyncBatchNorm: batch norm whose statistics are those of the whole batch, across the ranks.

Under data parallelism (minidl/distributed.py) each rank sees only its part of the batch, and a
plain BatchNorm normalises with that part's mean and variance. That is usually fine (and what
minidl does by default: it costs nothing), but with small parts the statistics get noisy, and
the result is not what one process would compute on the whole batch. SyncBatchNorm sums, per
channel, the values and their squares (and the count) over the ranks, in one all-reduce:

    mean = sum(x) / M,   var = sum(x^2) / M - mean^2       (M values per channel over all ranks)

then normalises as BatchNorm does. The sums go through ``sum_over_ranks``, an op whose backward
all-reduces the gradients of the two sums; autograd does the rest, so the gradient is the
whole batch's too. (E[x^2] - mean^2 loses digits when the mean is large against the spread;
PyTorch's SyncBatchNorm exchanges per-rank means and variances instead, at the price of a
longer formula.) In a world of one, or in evaluation mode, it is BatchNorm.
"""
from .. import distributed
from ..autograd import no_grad
from ..ops.norm import ACTIVATIONS
from ..ops.shape import cat
from ..tensor import full
from .layers import BatchNorm1d, BatchNorm2d


class SyncBatchNorm(BatchNorm2d):
    """Batch norm over (N, C, ...) input with the statistics of the batch of every rank together.

    A subclass of BatchNorm2d, with the same parameters and state-dict keys, so freezing
    (train_bn) and checkpoints treat it as a batch norm."""
    expected_dims = (2, 3, 4)

    def forward(self, x):
        if not self.training or not distributed.is_initialized() or distributed.world_size() == 1:
            return super().forward(x)
        if x.ndim not in self.expected_dims:
            raise ValueError(f"SyncBatchNorm: expected input (N, C), (N, C, L) or (N, C, H, W), got shape {x.shape}")
        C, axes = x.shape[1], (0,) + tuple(range(2, x.ndim))
        count = full((1,), x.numel() // C, dtype=x.dtype, device=x.device)
        total = distributed.sum_over_ranks(cat([x.sum(dim=axes), (x * x).sum(dim=axes), count]))
        M = total[2 * C]  # the values per channel over all ranks (kept on the device: no read per forward)
        mean = total[:C] / M
        var = total[C:2 * C] / M - mean * mean
        view = (1, C) + (1,) * (x.ndim - 2)
        y = (x - mean.reshape(view)) / (var + self.eps).sqrt().reshape(view)
        if self.affine:
            y = y * self.weight.reshape(view) + self.bias.reshape(view)
        if self.track_running_stats:
            self._update_running_stats(mean, var, M)
        return ACTIVATIONS[self.activation](y)

    @no_grad()
    def _update_running_stats(self, mean, var, M):
        self.num_batches_tracked.add_(1)
        momentum = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked.item()
        for running, batch in ((self.running_mean, mean), (self.running_var, var * (M / (M - 1)))):
            running.data[...] = running.data * (1 - momentum) + batch.data * momentum
            running._version_counter.value += 1


def convert_sync_batchnorm(module):
    """Replace every BatchNorm1d/2d inside ``module`` by a SyncBatchNorm holding the same parameters and
    buffers (the same objects: an optimizer built before keeps working); returns the module.
    A bare BatchNorm passed in is returned converted."""
    if isinstance(module, (BatchNorm1d, BatchNorm2d)) and not isinstance(module, SyncBatchNorm):
        sync = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                             module.track_running_stats, module.activation)
        for table in ("_parameters", "_buffers"):
            getattr(sync, table).update(getattr(module, table))
        sync.training = module.training
        return sync
    for name, child in list(module._modules.items()):
        if child is not None:
            module._modules[name] = convert_sync_batchnorm(child)
    return module
