"""The Learner on several ranks: ``learn.to_distributed()`` (fastai's distrib_ctx), run under mpirun.

    mpirun -n 2 python examples/tabular.py --distributed

What changes, all in the DistributedTrainer callback below (the training loop is the same):
  * the model's replicas start equal and stay equal (DistributedDataParallel, minidl/distributed.py):
    after backward the gradients are the mean over the ranks;
  * each rank reads its part of every batch (DataLoader.shard): same order, same number of
    batches, the parts of batch k together are the single process's batch k; so the steps, the
    learning rates and the schedule are a single process's, N times fewer samples per rank;
  * before they are recorded, the training loss is averaged over the ranks, and each validation
    batch's predictions, targets and loss are gathered, so every metric sees what one process
    would see and every rank prints and decides (early stopping, best model) alike;
  * plain BatchNorm keeps per-rank statistics (the default, as in PyTorch); their running averages
    are averaged over the ranks after each training epoch, so validation and checkpoints see one
    model. ``sync_bn=True`` uses SyncBatchNorm instead (the whole batch's statistics);
  * only rank 0 prints the epoch table and writes checkpoints (Learner.save) and plots.
"""
import numpy as np

from .. import distributed, random
from ..nn import convert_sync_batchnorm
from ..tensor import Tensor, tensor
from .callback import Callback


class DistributedTrainer(Callback):
    """Data-parallel training of the Learner's model over the ranks of minidl.distributed (see the module doc)."""
    order = 40  # its after_batch runs before the Recorder (50) records the loss and metrics

    def __init__(self, bucket_mb=4.0):
        self.bucket_mb, self.ddp = bucket_mb, None

    def before_fit(self):
        """Join the ranks' replicas (rank 0's weights) and shard the loaders, the first time."""
        world = distributed.init()
        if world.size == 1:
            return  # a world of one: nothing to share
        if self.ddp is None:
            self.ddp = distributed.DistributedDataParallel(self.model, self.bucket_mb)
        else:
            self.ddp.broadcast_parameters()  # e.g. after learn.load on rank 0 only
        unsharded = [dl for dl in self.dls.loaders if dl.world_size != world.size]
        if unsharded:  # the same order on every rank: a shuffling loader without a seed gets rank 0's
            seed = distributed.all_gather_object(int(random.generator().integers(2 ** 31)))[0]
            for dl in unsharded:
                distributed.warn_if_uneven(dl.batch_size, world.size)
                dl.shard(world.rank, world.size, seed=seed)

    def after_backward(self):
        """Wait for the gradients' all-reduces: every rank now holds the mean gradient."""
        if self.ddp is not None:
            self.ddp.finish_gradients()

    def after_train(self):
        """Average the batch norm running statistics, so every rank validates and saves one model."""
        if self.ddp is not None:
            self.ddp.average_buffers()

    def after_batch(self):
        """Make the loss (and, when validating, the predictions and targets) the whole batch's."""
        if self.loss is None or self.ddp is None or self.dl.world_size == 1:
            return
        if self.training:  # (a copy, on the loss's device: the Recorder reads it later, not now)
            loss = Tensor._make(self.loss.backend.copy(self.loss.data), self.loss.device)
            self.learn.loss = distributed.all_reduce(loss, "mean")
        else:
            self._gather_validation_batch()

    def _gather_validation_batch(self):
        """Every rank's (predictions, targets, loss) of this batch, joined: the Recorder and metrics then see
        the batch as one process would (in another order of its samples). A rank whose part only repeats a
        sample (a last batch smaller than the number of ranks) sends nothing."""
        dl, world = self.dl, self.ddp.world
        in_batch = dl.rows_in_batch(self.iter)
        mine = None
        if world.rank < in_batch:
            mine = (self.pred.numpy(), [y.numpy() for y in self.yb], self.loss.item())
        parts = [p for p in distributed.all_gather_object(mine) if p is not None]
        n = [len(p[1][0]) for p in parts]
        device = self.pred.device
        self.learn.pred = Tensor(np.concatenate([p[0] for p in parts]), device=device)
        self.learn.yb = tuple(Tensor(np.concatenate([p[1][j] for p in parts]), device=device)
                              for j in range(len(self.yb)))
        self.learn.loss = tensor(sum(p[2] * k for p, k in zip(parts, n)) / sum(n), dtype=self.loss.dtype,
                                 device=device)


def to_distributed(learn, sync_bn=False, bucket_mb=4.0):
    """Make ``learn`` train data-parallel over the ranks mpirun started (a world of one without it);
    ``sync_bn``: batch norms become SyncBatchNorm. Ranks other than 0 print no epoch table. Returns learn."""
    world = distributed.init()
    if sync_bn:
        convert_sync_batchnorm(learn.model)
    if world.rank != 0:
        learn.show_progress = False
    learn.add_cbs(DistributedTrainer(bucket_mb))
    return learn
