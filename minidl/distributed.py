"""Data parallelism: N processes ("ranks") train one model, each on its part of every batch.

    mpirun -n 2 python examples/tabular.py --distributed

The picture (PyTorch's DistributedDataParallel, Horovod):

    rank 0: forward(part 0) -> backward: grads of the last layers ... grads of the first layers -> step
    rank 1: forward(part 1) -> backward: grads of the last layers ... grads of the first layers -> step
                                          |  bucket 0 all-reduce  |  bucket 1 ...  | wait, / N

  1. At the start, rank 0's parameters and buffers are broadcast: every replica starts equal.
  2. Each rank runs forward and backward on its own part of the batch.
  3. Gradients are packed in buckets of a few MB, in reverse registration order (the order
     backward produces them: last layer first). As soon as a bucket's last gradient is final
     (autograd's post-accumulate-grad hook, autograd.py), the bucket's all-reduce starts,
     non-blocking, while backward goes on to earlier layers.
  4. Before the optimizer step every all-reduce is waited for and divided by N: each rank now
     holds the mean gradient of the whole batch, takes the same step, and the replicas stay equal.

Transport, not invented here: MPI (mpi4py) for CPU arrays; NCCL (through CuPy, one rank per GPU)
for GPU arrays, its unique id sent to the ranks over MPI. Both sit behind the same three calls
(start an all-reduce or a broadcast, ask whether it is done), so everything above them is shared.

A process started without mpirun is a world of one: init() needs no MPI then, and every
collective returns at once. Failures end the job instead of hanging it: init() installs an
excepthook that calls MPI_Abort when a rank dies of an exception (the launcher then stops every
rank), and every wait gives up after MINIDL_DIST_TIMEOUT seconds (default 300) with an error.
"""
import os
import sys
import time
import warnings

from .autograd import Function, no_grad
from .tensor import Tensor

# The variables an MPI launcher sets in each process it starts (MPICH/Intel MPI's hydra, Open MPI).
_LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


class World:
    """This process's place among the ranks: ``rank`` (0 .. size - 1), ``size``, and the communicators."""

    def __init__(self, rank=0, size=1, mpi=None):
        self.rank, self.size, self.mpi = rank, size, mpi
        self._cpu = _MPIComm(mpi) if mpi is not None else None
        self._gpu = None  # the NCCL communicator, made at the first collective on a cuda tensor

    def comm_for(self, array):
        """The communicator that moves ``array``: NCCL for a CuPy array, MPI for a numpy one."""
        if type(array).__module__.startswith("cupy"):
            if self._gpu is None:
                self._gpu = _NCCLComm(self.mpi, self.rank, self.size)
            return self._gpu
        return self._cpu

    def __repr__(self):
        return f"World(rank={self.rank}, size={self.size})"


_world = None


def launched_size():
    """How many processes the MPI launcher started (1 without mpirun), read from its environment."""
    for name in _LAUNCHER_SIZE_VARIABLES:
        if os.environ.get(name):
            return int(os.environ[name])
    return 1


def init(device=None, only_rank0_prints=False):
    """Join the ranks mpirun started (idempotent); returns the World.

    Without mpirun (or under ``mpirun -n 1``) this is a world of one and needs no MPI.
    ``device="cuda"``: each rank uses the GPU of its local rank (one rank per GPU).
    ``only_rank0_prints``: rank 0 prints ``world size: N``, the other ranks' stdout is muted
    (scripts: one epoch table, not N).
    """
    global _world
    if _world is None:
        size = launched_size()
        if size == 1:
            _world = World()
        else:
            try:
                from mpi4py import MPI
            except ImportError:
                raise RuntimeError(f"distributed.init: mpirun started {size} processes but mpi4py is not installed; "
                                   f"pip install 'minidl[distributed]' (mpi4py and MPICH)") from None
            _world = World(MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size(), MPI.COMM_WORLD)
            _abort_all_ranks_on_uncaught_error(_world)
    if device == "cuda" and _world.mpi is not None:
        _one_gpu_per_rank(_world.mpi)
    if only_rank0_prints:
        if _world.rank == 0:
            print(f"world size: {_world.size}", flush=True)
        elif sys.stdout is sys.__stdout__:
            sys.stdout = open(os.devnull, "w")
    return _world


def _one_gpu_per_rank(comm):
    """Show this rank only the GPU of its local rank (its rank among the ranks on this machine), before
    CuPy starts CUDA: every thread of the process (the DataLoader's too) then uses that GPU as device 0."""
    from mpi4py import MPI
    local = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = visible.split(",") if visible else [str(i) for i in range(local + 1)]
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus[local % len(gpus)]


def is_initialized():
    """Whether init() has run in this process."""
    return _world is not None


def is_main_process():
    """True on rank 0, and in a process that never called init(): who prints and writes files."""
    return _world is None or _world.rank == 0


def _require(who):
    if _world is None:
        raise RuntimeError(f"distributed.{who}: call minidl.distributed.init() first (under mpirun it joins the "
                           f"other ranks; without mpirun it makes a world of one)")
    return _world


def rank():
    """This process's rank, 0 .. world_size() - 1."""
    return _require("rank").rank


def world_size():
    """How many ranks train together."""
    return _require("world_size").size


def _abort_all_ranks_on_uncaught_error(world):
    """An exception nobody catches on one rank would leave the others waiting in a collective for ever;
    after printing it, MPI_Abort makes the launcher stop every rank (mpi4py's ``-m mpi4py`` does the same)."""
    previous = sys.excepthook

    def excepthook(kind, value, traceback):
        previous(kind, value, traceback)
        sys.stderr.write(f"minidl.distributed: rank {world.rank} of {world.size} stopped with {kind.__name__}; "
                         f"aborting every rank (MPI_Abort)\n")
        sys.stderr.flush()
        world.mpi.Abort(1)

    sys.excepthook = excepthook


# ---------------------------------------------------------------- the transports

class _MPIComm:
    """numpy arrays over MPI: non-blocking collectives in place, a request to test."""

    def __init__(self, comm):
        from mpi4py import MPI
        self.comm, self.MPI = comm, MPI

    def start_all_reduce(self, array):
        return self.comm.Iallreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)

    def start_broadcast(self, array, src):
        return self.comm.Ibcast(array, root=src)

    def done(self, request):
        return request.Test()  # also lets MPI move the data on: MPI progresses inside its calls


class _NCCLComm:
    """CuPy arrays over NCCL, queued on a stream of their own after the work that wrote them;
    an event marks the end. Made collectively: rank 0's unique id reaches the others over MPI."""

    def __init__(self, mpi, rank, size):
        import cupy
        from cupy.cuda import nccl
        self.cupy, self.nccl = cupy, nccl
        self.dtypes = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64, "int64": nccl.NCCL_INT64}
        unique_id = mpi.bcast(nccl.get_unique_id() if rank == 0 else None, root=0)
        self.comm = nccl.NcclCommunicator(size, unique_id, rank)
        self.stream = cupy.cuda.Stream(non_blocking=True)

    def _queue(self, array):
        self.stream.wait_event(self.cupy.cuda.get_current_stream().record())  # after the kernels that wrote it
        return array.data.ptr, array.size, self.dtypes[str(array.dtype)], self.stream.ptr

    def start_all_reduce(self, array):
        ptr, n, dtype, stream = self._queue(array)
        self.comm.allReduce(ptr, ptr, n, dtype, self.nccl.NCCL_SUM, stream)
        return self.stream.record()

    def start_broadcast(self, array, src):
        ptr, n, dtype, stream = self._queue(array)
        self.comm.broadcast(ptr, ptr, n, dtype, src, stream)
        return self.stream.record()

    def done(self, event):
        return event.done


def timeout():
    """Seconds a rank waits for the others before giving up (MINIDL_DIST_TIMEOUT, default 300)."""
    return float(os.environ.get("MINIDL_DIST_TIMEOUT", 300))


class Work:
    """A collective under way; ``wait()`` returns when it is done, or raises after timeout() seconds."""

    def __init__(self, comm, handle, what):
        self.comm, self.handle, self.what = comm, handle, what

    def wait(self):
        """Return once the collective is done on this rank (TimeoutError after timeout() seconds)."""
        if self.comm is None:
            return
        deadline, pause = time.monotonic() + timeout(), 1e-5
        while not self.comm.done(self.handle):
            if time.monotonic() > deadline:
                raise TimeoutError(f"distributed: {self.what} waited {timeout():.0f} s for the other ranks; one of "
                                   f"them is stuck or died without MPI_Abort (MINIDL_DIST_TIMEOUT sets the limit)")
            time.sleep(pause)
            pause = min(2 * pause, 1e-3)
        self.comm = None


# ---------------------------------------------------------------- collectives on tensors and arrays

def _array_of(t, who, op=None):
    """The tensor's array, checked; a copy in C order if it is a non-contiguous view (a collective
    works in place on one contiguous block of numbers; _done copies the result back)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"distributed.{who}: expects a minidl Tensor, got {type(t).__name__}; "
                        f"wrap it with minidl.tensor(...)")
    if str(t.dtype) not in ("float32", "float64", "int64"):
        raise TypeError(f"distributed.{who}: a {t.dtype} tensor cannot be reduced or sent; "
                        f"convert it with .float() or .long()")
    if op == "mean" and str(t.dtype) == "int64":
        raise TypeError(f"distributed.{who}: op='mean' of an int64 tensor; use op='sum' or convert it with .double()")
    return t.data if t.data.flags.c_contiguous else t.data.copy()  # ndarray.copy(): C order, numpy and CuPy


def _done(t, array):
    """The collective changed the tensor: copy a contiguous stand-in back, count a new version."""
    if array is not t.data:
        t.data[...] = array
    t._version_counter.value += 1


def start_all_reduce(array):
    """Start summing ``array`` (numpy or CuPy, contiguous) over the ranks, in place; returns a Work to wait on."""
    world = _require("all_reduce")
    if world.size == 1:
        return Work(None, None, "")
    comm = world.comm_for(array)
    return Work(comm, comm.start_all_reduce(array), f"all_reduce of {array.size} values")


def all_reduce(t, op="sum"):
    """Replace ``t`` (a Tensor) on every rank by its sum (op="sum") or mean (op="mean") over the ranks; returns t."""
    if op not in ("sum", "mean"):
        raise ValueError(f"distributed.all_reduce: op must be 'sum' or 'mean', got {op!r}")
    array = _array_of(t, "all_reduce", op)
    world = _require("all_reduce")
    if world.size > 1:
        start_all_reduce(array).wait()
        if op == "mean":
            array *= 1 / world.size
        _done(t, array)
    return t


def broadcast(t, src=0):
    """Replace ``t`` (a Tensor) on every rank by rank ``src``'s values; returns t."""
    array = _array_of(t, "broadcast")
    world = _require("broadcast")
    if not 0 <= src < world.size:
        raise ValueError(f"distributed.broadcast: src={src} is not a rank of this world of {world.size}")
    if world.size > 1:
        comm = world.comm_for(array)
        Work(comm, comm.start_broadcast(array, src), f"broadcast of {array.size} values").wait()
        _done(t, array)
    return t


def barrier():
    """Return when every rank has reached its barrier()."""
    world = _require("barrier")
    if world.size > 1:
        Work(world._cpu, world.mpi.Ibarrier(), "barrier").wait()


def all_gather_object(obj):
    """[rank 0's obj, rank 1's obj, ...] on every rank (any picklable object; small things: it goes by MPI)."""
    world = _require("all_gather_object")
    return [obj] if world.size == 1 else world.mpi.allgather(obj)


class SumOverRanks(Function):
    """y = sum over the ranks of x, as an op: the gradient of a sum over the ranks is the sum over the
    ranks of the gradients (every rank's loss depends on every rank's x). SyncBatchNorm uses it."""

    @staticmethod
    def forward(ctx, x):
        y = ctx.backend.copy(x)
        start_all_reduce(y).wait()
        return y

    @staticmethod
    def backward(ctx, grad):
        g = ctx.backend.copy(grad)
        start_all_reduce(g).wait()
        return g


def sum_over_ranks(x):
    """The differentiable sum of the Tensor ``x`` over the ranks (see SumOverRanks)."""
    _require("sum_over_ranks")
    return SumOverRanks.apply(x)


# ---------------------------------------------------------------- DistributedDataParallel

class _Bucket:
    """Some parameters' gradients, flattened into one buffer that is all-reduced at once."""

    def __init__(self, params):
        self.params, self.offsets, n = params, [], 0
        for p in params:
            self.offsets.append(n)
            n += p.numel()
        self.numel, self.buffer, self.ready, self.work = n, None, 0, None

    def start(self):
        """Copy the gradients in (zeros for a parameter that got none) and start the all-reduce."""
        p0 = self.params[0]
        if self.buffer is None:
            self.buffer = p0.backend.zeros((self.numel,), p0.dtype)
        for p, offset in zip(self.params, self.offsets):
            part = self.buffer[offset:offset + p.numel()]
            if p.grad is None:
                part[...] = 0
            else:
                part[...] = p.grad.data.reshape(-1)
        self.work = start_all_reduce(self.buffer)

    def finish(self, n_ranks):
        """Wait, divide by the number of ranks, and make each gradient a view of its part of the buffer."""
        self.work.wait()
        self.buffer *= 1 / n_ranks
        for p, offset in zip(self.params, self.offsets):
            p.grad = Tensor._make(self.buffer[offset:offset + p.numel()].reshape(p.shape), p.device)
        self.ready, self.work = 0, None


class DistributedDataParallel:
    """Keeps the replicas of ``model`` on every rank equal while each trains on its part of the batch.

        ddp = DistributedDataParallel(model)      # broadcasts rank 0's parameters and buffers
        loss = loss_func(model(x_part), y_part)
        loss.backward()                           # buckets are all-reduced as backward goes
        ddp.finish_gradients()                    # wait, divide by N: every rank has the mean gradient
        opt.step()

    The model is not wrapped (its state dict keeps its keys); the Learner's DistributedTrainer
    calls finish_gradients after backward. ``bucket_mb``: the size of a bucket in MB (PyTorch's
    default is 25 MB; smaller buckets start sooner, larger ones pay the per-message latency less).
    ``stats``: bytes all-reduced, and seconds spent waiting in finish_gradients (what backward did
    not hide), summed over the steps.
    """

    def __init__(self, model, bucket_mb=4.0):
        self.world = _require("DistributedDataParallel")
        self.model, self.bucket_bytes = model, int(bucket_mb * 2 ** 20)
        self.params = list(dict.fromkeys(model.parameters()))  # a shared parameter once
        self.buckets, self.bucket_of, self.next_bucket = [], {}, 0
        self.stats = {"steps": 0, "bytes": 0, "wait_s": 0.0}
        self.broadcast_parameters()
        self.hooks = [p.register_post_accumulate_grad_hook(self._grad_is_final) for p in self.params]

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    @no_grad()
    def broadcast_parameters(self):
        """Make every rank's parameters and buffers rank 0's."""
        for t in list(self.params) + list(self.model.buffers()):
            broadcast(t, 0)

    @no_grad()
    def average_buffers(self):
        """Replace the float buffers (batch norm's running statistics) by their mean over the ranks:
        plain BatchNorm keeps per-rank statistics; averaging them before validating or saving gives every
        rank the same model (SyncBatchNorm's are equal already)."""
        for b in self.model.buffers():
            if str(b.dtype).startswith("float"):
                all_reduce(b, "mean")

    def _layout(self):
        """Buckets of the parameters that require grad, last registered first, split at bucket_bytes and
        wherever the dtype or device changes. Rebuilt when freezing changes which parameters train."""
        trained = [p for p in reversed(self.params) if p.requires_grad]
        if [p for b in self.buckets for p in b.params] == trained:
            return
        self.buckets, group, size = [], [], 0
        for p in trained:
            if group and (size >= self.bucket_bytes or (p.dtype, p.device) != (group[0].dtype, group[0].device)):
                self.buckets.append(_Bucket(group))
                group, size = [], 0
            group.append(p)
            size += p.numel() * p.dtype.itemsize
        if group:
            self.buckets.append(_Bucket(group))
        self.bucket_of = {id(p): b for b in self.buckets for p in b.params}

    def _grad_is_final(self, p):
        """Autograd's hook: p.grad will not change in this backward. A full bucket starts its all-reduce,
        in bucket order (every rank must start the same collectives in the same order)."""
        if self.next_bucket == 0 and not any(b.ready for b in self.buckets):
            self._layout()  # the first gradient of this backward
        bucket = self.bucket_of.get(id(p))
        if bucket is None:
            return
        bucket.ready += 1
        while self.next_bucket < len(self.buckets) and \
                self.buckets[self.next_bucket].ready == len(self.buckets[self.next_bucket].params):
            self.buckets[self.next_bucket].start()
            self.next_bucket += 1
        for b in self.buckets[:self.next_bucket]:  # let MPI move the data of the buckets under way
            if b.work is not None and b.work.comm is not None:
                b.work.comm.done(b.work.handle)

    def finish_gradients(self):
        """Start the buckets backward did not complete (a parameter that got no gradient counts as zeros),
        wait for every all-reduce and divide by the number of ranks. Call it after backward, before the step."""
        if self.next_bucket == 0 and not any(b.ready for b in self.buckets):
            return  # no backward since the last call
        start = time.perf_counter()
        for b in self.buckets[self.next_bucket:]:
            b.start()
        for b in self.buckets:
            b.finish(self.world.size)
            self.stats["bytes"] += b.numel * b.params[0].dtype.itemsize
        self.next_bucket = 0
        self.stats["steps"] += 1
        self.stats["wait_s"] += time.perf_counter() - start


def warn_if_uneven(batch_size, n_ranks):
    """Say once that a batch does not split evenly: parts differ by one sample, and averaging the ranks'
    gradients equally then weighs the samples of the smaller parts slightly more than one process would."""
    if batch_size % n_ranks:
        warnings.warn(f"distributed: batch size {batch_size} does not split evenly over {n_ranks} ranks; the parts "
                      f"differ by one sample (a batch size divisible by {n_ranks} makes the step exactly a single "
                      f"process's)", stacklevel=3)
