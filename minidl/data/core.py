"""Datasets, batching and the DataLoader: how samples become batches of Tensors.

A *dataset* is any object with ``__len__`` and ``__getitem__(i)`` returning one sample:
a tuple of items ``(x, y)`` (or ``(x,)``, or more), each a number, a numpy array or a
Tensor. A ``DataLoader`` does three things per epoch:

  1. draws the order of the samples (a new permutation per epoch when shuffling);
  2. cuts it into batches of ``batch_size`` indices;
  3. turns each batch into a tuple of Tensors with ``collate``: field j of the batch
     is item j of every sample, stacked along a new first axis.

Steps 2-3 for the next few batches run in a background thread (``prefetch``), so
reading data overlaps with training on the current batch; with ``num_workers`` the
samples of a batch are read by a pool of threads at once (decoding images: Pillow
releases Python's lock while it decodes). ``DataLoaders`` holds the training and
validation loaders that a Learner fits with.
"""
import concurrent.futures
import numbers
import os
import queue
import threading
import warnings

import numpy as np

from .. import random as _random
from ..backend import get_backend
from ..tensor import Tensor, _infer_dtype, tensor


# ---------------------------------------------------------------- datasets

class ArrayDataset:
    """Samples from equally long arrays: sample i is ``(arrays[0][i], arrays[1][i], ...)``.

    ``ArrayDataset(x, y)`` is the usual case for tabular or synthetic data. Arrays are
    kept as numpy arrays: Tensors through ``.numpy()``, numpy arrays (and pandas
    Series) as they are, Python lists through ``minidl.tensor`` (so a list of floats
    gives float32 batches, like a tensor made from it).
    """

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("ArrayDataset: give at least one array, e.g. ArrayDataset(x, y)")
        self.arrays = tuple(_as_array(a) for a in arrays)
        for k, a in enumerate(self.arrays):
            if a.ndim == 0:
                raise ValueError(f"ArrayDataset: array {k} is a single value (0-d); "
                                 f"every array needs one row per sample")
        lengths = [len(a) for a in self.arrays]
        if len(set(lengths)) > 1:
            raise ValueError(f"ArrayDataset: the arrays have different lengths {lengths}; every array needs "
                             f"one row per sample (array k's row i belongs to sample i)")

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, i):
        return tuple(a[i] for a in self.arrays)

    def get_batch(self, indices):
        """The batch's fields at once (one fancy index per array), as collate would stack them.

        The DataLoader uses this instead of one ``__getitem__`` per sample when it is
        present and no ``collate_fn`` is given: the same batch, without a Python loop.
        """
        return tuple(a[indices] for a in self.arrays)

    def __repr__(self):
        fields = ", ".join(f"{a.dtype}{tuple(a.shape[1:])}" for a in self.arrays)
        return f"ArrayDataset({len(self)} samples of ({fields}))"


def _as_array(a):
    if isinstance(a, Tensor):
        return a.numpy()
    if isinstance(a, (list, tuple)):
        return tensor(a).numpy()
    return np.asarray(a)


class Subset:
    """The samples of ``dataset`` at ``indices`` (e.g. the train or valid indices of a splitter)."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(dataset)
        if len(self.indices) and (self.indices.min() < -n or self.indices.max() >= n):
            raise IndexError(f"Subset: indices must lie in [0, {n}) for a dataset of {n} samples; "
                             f"got {self.indices.min()} .. {self.indices.max()}")

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[int(self.indices[i])]

    def __repr__(self):
        return f"Subset({len(self)} of {self.dataset!r})"


# ---------------------------------------------------------------- collate

def collate(samples, device="cpu"):
    """A list of samples (tuples) -> a tuple of Tensors on ``device``, one per field.

    Field j is ``stack([s[j] for s in samples])``: a new first axis of length
    ``len(samples)``. Stacking happens in numpy on the host, then each field goes to
    the device in one copy. Dtypes follow ``minidl.tensor``'s rule:
        Python floats            -> the default float dtype (float32)
        Python ints              -> int64;   bools -> bool
        float32 / float64 numpy  -> kept (numpy arrays and numpy scalars alike)
        other numpy ints (uint8) -> int64
        Tensors                  -> their dtype
    """
    if len(samples) == 0:
        raise ValueError("collate: the batch has no samples")
    n_fields = None
    for k, sample in enumerate(samples):
        if not isinstance(sample, (tuple, list)):
            raise TypeError(f"collate: sample {k} is a {type(sample).__name__}, not a tuple; a dataset's "
                            f"__getitem__ returns a tuple of items, e.g. (x, y), or (x,) for unlabelled data")
        if n_fields is None:
            n_fields = len(sample)
        elif len(sample) != n_fields:
            raise ValueError(f"collate: sample {k} has {len(sample)} items but sample 0 has {n_fields}; "
                             f"every sample of a dataset needs the same number of items")
    return tuple(_stack_field([s[j] for s in samples], j, device) for j in range(n_fields))


def _stack_field(items, field, device):
    items = [i.numpy() if isinstance(i, Tensor) else i for i in items]
    try:
        host = np.stack(items)
    except ValueError:
        shapes = [np.shape(i) for i in items]
        k = next((k for k, s in enumerate(shapes) if s != shapes[0]), None)
        if k is None:  # same shapes, another problem (e.g. ragged nested lists): numpy's message says it
            raise
        raise ValueError(f"collate: item {field} of the samples has different shapes: sample 0 has {shapes[0]}, "
                         f"sample {k} has {shapes[k]}; make the dataset return one shape (resize, crop or pad), "
                         f"or pass a collate_fn that pads") from None
    return _to_tensor(host, items[0], field, device)


def _to_tensor(host, first, field, device):
    """One field's stacked host array as a Tensor on ``device`` (dtype from the rule in ``collate``)."""
    try:
        dtype = _infer_dtype(first, host)
    except TypeError:
        raise TypeError(f"collate: item {field} of the samples holds {host.dtype} values (e.g. {host.flat[0]!r}), "
                        f"which a tensor cannot hold; turn them into numbers in the dataset "
                        f"(e.g. class names into int indices)") from None
    return Tensor._make(host.astype(dtype, copy=False), device)


# ---------------------------------------------------------------- the DataLoader

def set_shard(loader, rank, world_size, seed=None):
    """What every loader's shard() starts with: check the rank, give a shuffling loader without a seed the
    ranks' shared ``seed`` (the same order on every rank), and record the shard."""
    if not 0 <= rank < world_size:
        raise ValueError(f"shard: rank must lie in [0, {world_size}), got {rank}")
    if loader.shuffle and loader.seed is None:
        if seed is None:
            raise ValueError("shard: a shuffling loader needs the same seed on every rank; pass seed=...")
        loader.seed = int(seed)
    loader.rank, loader.world_size = rank, world_size


class DataLoader:
    """Batches of a dataset, one epoch per ``for batch in loader``; each batch a tuple of Tensors.

    ``shuffle``: each epoch visits the samples in a new random order. With ``seed`` the
    order of epoch e comes from ``numpy.random.default_rng(seed + e)`` (reproducible, and
    different every epoch); without it, from minidl's generator (``minidl.manual_seed``).
    The order is drawn in the calling thread when the epoch starts; ``epoch`` counts
    the epochs started so far (set it to replay an epoch's order).
    ``drop_last``: leave out the last batch when it is smaller than ``batch_size``.
    ``collate_fn(samples, device)``: turns a list of samples into a batch (``collate``).
    ``prefetch``: how many batches a background thread builds ahead of the training
    loop; 0 builds each batch in the calling thread when it is asked for (simplest to
    debug). An error while building a batch is raised in the training loop, with its
    original traceback.
    ``num_workers``: how many threads read the samples of a batch (``dataset[i]``) side by
    side; 0 reads them one after another in the thread that builds the batch. Threads,
    not processes: they pay off when ``__getitem__`` spends its time outside Python's
    lock (decoding an image, reading a file), which is what image datasets do.
    Each sample draws its random numbers (augmentations) from a generator of its own,
    seeded in order from the batch's generator, so the batches are the same whatever
    the number of workers and whichever worker reads which sample.
    """

    def __init__(self, dataset, batch_size=64, shuffle=False, drop_last=False, seed=None, device="cpu",
                 collate_fn=None, prefetch=2, num_workers=0):
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"DataLoader: a dataset needs __len__ and __getitem__, {type(dataset).__name__} lacks "
                            f"them; for arrays use ArrayDataset(x, y)")
        if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(prefetch, numbers.Integral) or prefetch < 0:
            raise ValueError(f"DataLoader: prefetch must be an int >= 0 (0 = no background thread), got {prefetch!r}")
        if not isinstance(num_workers, numbers.Integral) or num_workers < 0:
            raise ValueError(f"DataLoader: num_workers must be an int >= 0 (0 = read samples in the thread that "
                             f"builds the batch), got {num_workers!r}")
        if seed is not None and not isinstance(seed, numbers.Integral):
            raise TypeError(f"DataLoader: seed must be an int or None, got {seed!r}")
        get_backend(device)  # an unknown device fails here, not later in the prefetch thread
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, int(batch_size), shuffle, drop_last
        self.seed, self.device, self.collate_fn, self.prefetch = seed, device, collate_fn, int(prefetch)
        self.num_workers, self._workers = int(num_workers), None  # the thread pool starts with the first batch
        self.epoch = 0
        self.rank, self.world_size = 0, 1  # shard(): this process's part of every batch

    def __len__(self):
        """The number of batches per epoch."""
        n, bs = len(self.dataset), self.batch_size
        return n // bs if self.drop_last else -(-n // bs)

    def rows_in_batch(self, i):
        """How many samples batch ``i`` holds before sharding (the last may hold fewer)."""
        return min(self.batch_size, len(self.dataset) - i * self.batch_size)

    def __iter__(self):
        # Every random draw of the epoch is planned here, in the calling thread: the order,
        # and the seed of the generator the batches are built with (augmentations draw from
        # it, in whichever thread builds them), so runs are reproducible with or without prefetch.
        batches = self._batch_indices()
        data_rng = self._data_generator()
        self.epoch += 1
        jobs = [(indices, data_rng) for indices in batches]
        if self.prefetch == 0:
            return (self._make_batch(*job) for job in jobs)
        return self._prefetched(jobs)

    def one_batch(self):
        """The first ``batch_size`` samples in dataset order, as a batch.

        It draws no random numbers and does not count as an epoch, so looking at a batch
        does not change what training sees.
        """
        n = len(self.dataset)
        if n == 0:
            raise ValueError("one_batch: the dataset is empty")
        return self._make_batch(np.arange(min(self.batch_size, n)))  # fixed data generator: draws nothing

    def new(self, **changes):
        """A new loader over the same dataset with some settings changed, e.g. ``dl.new(shuffle=False)``."""
        settings = dict(dataset=self.dataset, batch_size=self.batch_size, shuffle=self.shuffle,
                        drop_last=self.drop_last, seed=self.seed, device=self.device,
                        collate_fn=self.collate_fn, prefetch=self.prefetch, num_workers=self.num_workers)
        unknown = sorted(set(changes) - set(settings))
        if unknown:
            raise TypeError(f"new: unknown setting(s) {unknown}; a DataLoader has {sorted(settings)}")
        return type(self)(**{**settings, **changes})

    def shard(self, rank, world_size, seed=None):
        """Data parallelism: from now on, yield rank ``rank``'s part of every batch (in place; returns the loader).

        Every rank draws the same order (same ``seed``: a shuffling loader without one takes ``seed``,
        which must be the same on every rank) and cuts the same batches; rank r keeps the samples at
        positions r, r + world_size, ... of each. So every rank has as many batches as the loader had,
        and the parts of batch k together are batch k. A batch with fewer samples than ranks (a last
        partial one) is padded by repeating its first sample, and a warning says so here.
        ``new()`` gives an unsharded loader (predictions over the whole set).
        """
        set_shard(self, rank, world_size, seed)
        last = len(self.dataset) % self.batch_size
        if world_size > 1 and not self.drop_last and 0 < last < world_size:
            warnings.warn(f"shard: the last batch has {last} sample(s) for {world_size} ranks; the ranks without one "
                          f"repeat its first sample", stacklevel=2)
        return self

    def to(self, device):
        """Make later batches land on ``device`` (in place; returns the loader)."""
        get_backend(device)
        self.device = device
        return self

    def __repr__(self):
        return (f"DataLoader({len(self.dataset)} samples, batch_size={self.batch_size}, {len(self)} batches, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, device={self.device!r})")

    # ---------------------------------------------------------------- the work
    def batch_of(self, indices):
        """The batch of the samples at ``indices`` (in that order), built as this loader builds its own
        (its collate_fn, its device; no augmentation draw is shared with training)."""
        return self._make_batch(np.asarray(indices, dtype=np.int64))

    def _batch_indices(self):
        """This epoch's order, cut into arrays of ``batch_size`` indices."""
        n, bs = len(self.dataset), self.batch_size
        if not self.shuffle:
            order = np.arange(n)
        else:
            rng = np.random.default_rng([self.seed, self.epoch]) if self.seed is not None else _random.generator()
            order = rng.permutation(n)
        batches = [order[start:start + bs] for start in range(0, len(self) * bs, bs)]
        if self.world_size > 1:  # shard(): this rank's part of each batch, never empty
            batches = [b[self.rank::self.world_size] if len(b) > self.rank else b[:1] for b in batches]
        return batches

    def _data_generator(self):
        """This epoch's generator for the dataset's own random draws (augmentations).

        Only a shuffling (training) loader without a seed draws it from minidl's generator;
        the others use a fixed one, so iterating a validation set changes no later draw."""
        if self.seed is not None:  # (each rank of a sharded loader augments its part with draws of its own)
            return np.random.default_rng([self.seed, self.epoch, 1] + ([self.rank] if self.world_size > 1 else []))
        if self.shuffle:
            return np.random.default_rng(_random.generator().integers(2 ** 63))
        return np.random.default_rng(0)

    def _make_batch(self, indices, data_rng=None):
        with _random.using(data_rng or np.random.default_rng(0)):
            return self._collate(indices)

    def _collate(self, indices):
        if self.collate_fn is None and hasattr(self.dataset, "get_batch"):
            fields = [f.numpy() if isinstance(f, Tensor) else f for f in self.dataset.get_batch(indices)]
            return tuple(_to_tensor(np.asarray(f), f, j, self.device) for j, f in enumerate(fields))
        return (self.collate_fn or collate)(self._samples(indices), self.device)

    def _samples(self, indices):
        """``[dataset[i] for i in indices]``, each read inside ``using`` a generator of its own.

        The seeds are drawn here, in order, from the batch's generator; so the samples
        (and their random augmentations) do not depend on ``num_workers`` or on which
        thread reads which sample.
        """
        seeds = _random.generator().integers(2 ** 63, size=len(indices)).tolist()
        jobs = list(zip(indices.tolist(), seeds))
        if self.num_workers == 0:
            return [self._sample(job) for job in jobs]
        if self._workers is None:
            self._workers = concurrent.futures.ThreadPoolExecutor(self.num_workers,
                                                                  thread_name_prefix="minidl-DataLoader-worker")
        return list(self._workers.map(self._sample, jobs))  # an error in a worker is raised here

    def _sample(self, job):
        index, seed = job
        with _random.using(np.random.default_rng(seed)):
            return self.dataset[index]

    def _prefetched(self, batches):
        """Yield the batches while a daemon thread builds up to ``prefetch`` of them ahead.

        The thread puts (batch, None) or (None, error) on a bounded queue. When the loop
        ends or is left early (break, an exception, the iterator dropped), ``stop`` is set
        and the thread exits at its next put instead of waiting forever for a consumer.
        """
        ready = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        worker = threading.Thread(target=self._build_ahead, args=(batches, ready, stop), daemon=True,
                                  name="minidl-DataLoader-prefetch")
        worker.start()
        try:
            for _ in batches:
                batch, error = _next_ready(ready, worker)
                if error is not None:
                    raise error  # raising it here keeps the worker's frames in its traceback
                yield batch
        finally:
            stop.set()

    def _build_ahead(self, batches, ready, stop):
        for k, (indices, data_rng) in enumerate(batches):
            if stop.is_set():
                return
            try:
                item = (self._make_batch(indices, data_rng), None)
            except BaseException as error:
                shown = indices[:8].tolist()
                error.add_note(f"(in the DataLoader's prefetch thread, building batch {k} from samples "
                               f"{shown}{' ...' if len(indices) > 8 else ''}; prefetch=0 builds batches in the "
                               f"main thread, e.g. for a debugger)")
                item = (None, error)
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.05)
                    break
                except queue.Full:
                    pass
            if item[1] is not None:
                return


def _next_ready(ready, worker):
    """The next (batch, error) from the prefetch thread; an error, not a hang, if the thread died."""
    while True:
        try:
            return ready.get(timeout=0.1)
        except queue.Empty:
            if not worker.is_alive() and ready.empty():
                raise RuntimeError("DataLoader: the prefetch thread stopped before building every batch; "
                                   "use prefetch=0 to build them in this thread and see why") from None


# ---------------------------------------------------------------- train + valid

class DataLoaders:
    """The training loader and the validation loader (or None) a Learner fits with.

    ``dls.train``, ``dls.valid`` (also ``dls[0]``, ``dls[1]``); ``dls.device``;
    ``dls.to(device)`` moves both.
    """

    def __init__(self, train, valid=None, device=None):
        self.train, self.valid = train, valid
        if device is not None:
            self.to(device)
        elif valid is not None and valid.device != train.device:
            raise ValueError(f"DataLoaders: train is on {train.device!r} and valid on {valid.device!r}; "
                             f"pass device=... to put both on one device")

    @classmethod
    def from_dsets(cls, train_ds, valid_ds=None, bs=64, shuffle_train=True, device="cpu", seed=None, **kwargs):
        """Loaders for a training and a validation dataset.

        Like fastai: the training loader shuffles and drops its last partial batch
        (a batch of one or two samples gives noisy steps and breaks batch norm); pass
        ``drop_last=False`` to keep it. The validation loader keeps the dataset's order and
        every sample. ``kwargs`` (``prefetch``, ``collate_fn``, ...) go to both loaders.
        """
        drop_last = kwargs.pop("drop_last", shuffle_train)
        train = DataLoader(train_ds, bs, shuffle=shuffle_train, drop_last=drop_last, seed=seed, device=device,
                           **kwargs)
        if len(train) == 0 and len(train_ds) > 0:
            raise ValueError(f"from_dsets: the training set has {len(train_ds)} samples, fewer than bs={bs}, and "
                             f"the last partial batch is dropped, so an epoch would have no batch; use a smaller "
                             f"bs or drop_last=False")
        valid = None if valid_ds is None else DataLoader(valid_ds, bs, device=device, **kwargs)
        return cls(train, valid)

    @property
    def device(self):
        return self.train.device

    @property
    def loaders(self):
        return [dl for dl in (self.train, self.valid) if dl is not None]

    def __getitem__(self, i):
        return (self.train, self.valid)[i]

    def to(self, device):
        """Put both loaders' batches on ``device`` (in place; returns self)."""
        for dl in self.loaders:
            dl.to(device)
        return self

    def __repr__(self):
        return f"DataLoaders(train={self.train!r}, valid={self.valid!r})"


def decode_workers(device, cpu_count=None):
    """How many threads should decode samples (``num_workers``) for batches bound for ``device``.

    On the CPU (and on "emu", whose kernels also run on the CPU) the decoders share the cores
    with the kernels, so two is enough to keep a batch ready. A GPU computes elsewhere and
    would wait for images: give decoding every core but one (at most 16).
    """
    cores = cpu_count or os.cpu_count() or 1
    if str(device).startswith("cuda"):
        return max(2, min(16, cores - 1))
    return 2
