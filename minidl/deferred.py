"""Index checks that wait for the host's next read of a device's values.

"Every class index is in [0, C)" needs the indices' min and max. On a GPU, reading them stops the
host until every kernel queued before has run, and a training step would wait like that several
times per batch (the targets, every chunk's token ids). So on a device ("cuda", and "emu", which
runs cuda's host code) the min and max are computed where the values are and the check is queued
here (``index_check``); ``run_pending()`` reads every queued min and max in one copy and raises the
first failed check's error. Every read of a device's values (its backend's to_numpy: Tensor.numpy,
item, tolist, float) runs it first, so the error comes before any number it would explain: at the latest
when the Learner reads its losses (TerminateOnNaN: every 16 batches), or after MAX_PENDING checks.
Until then the kernels never follow a bad index out of memory: they write NaN instead
(csrc/cuda/embedding.cu, softmax.cu). On "cpu" the check runs at once.
"""
import threading

MAX_PENDING = 256  # checks queued before they are read regardless (one copy of 2 * 256 numbers)

_pending = []  # (backend, (min, max) device arrays, op, n, describe) in the order queued
_lock = threading.Lock()


def index_check(op, ids, n, describe):
    """Raise IndexError(describe(low, high)) unless every value of the integer tensor ``ids`` is in
    [0, n): now on "cpu", at the next read of a device's values elsewhere (messages say so)."""
    if not ids.numel():
        return
    if ids.device == "cpu":
        low, high = int(ids.data.min()), int(ids.data.max())
        if low < 0 or high >= n:
            raise IndexError(describe(low, high))
        return
    with _lock:
        _pending.append((ids.backend, (ids.data.min(), ids.data.max()), op, n, describe))
        full = len(_pending) >= MAX_PENDING
    if full:
        run_pending()


def run_pending():
    """Read the queued checks' numbers (one copy per device) and raise the first failure's IndexError."""
    with _lock:
        pending, _pending[:] = list(_pending), []
    if not pending:
        return
    by_backend = {}
    for check in pending:
        by_backend.setdefault(id(check[0]), []).append(check)
    for checks in by_backend.values():
        backend = checks[0][0]
        numbers = backend.to_numpy(backend.xp.stack([v for check in checks for v in check[1]])).tolist()
        for k, (_, _, op, n, describe) in enumerate(checks):
            low, high = int(numbers[2 * k]), int(numbers[2 * k + 1])
            if low < 0 or high >= n:
                raise IndexError(f"{describe(low, high)}\n(On a device this check waits for the next read of "
                                 f"values, so it is reported here, up to {len(pending)} checks after the {op} call "
                                 "that failed; that call's kernel wrote NaN where an index was out of range.)")
