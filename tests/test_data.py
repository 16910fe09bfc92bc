"""minidl.data: datasets, collate, the DataLoader (shuffling, prefetch thread), splitters, DataLoaders."""
import re
import threading
import time
import traceback

import numpy as np
import pytest

import minidl
from minidl.data import (ArrayDataset, ColSplitter, DataLoader, DataLoaders, IndexSplitter, MaskSplitter,
                         RandomSplitter, Subset, TimeSplitter, collate)


def raises(exception, *fragments):
    """pytest.raises that checks that every fragment appears (literally) in the message."""
    pattern = "(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments)
    return pytest.raises(exception, match=pattern)


class ListDataset:
    """A dataset of the protocol's simplest kind: a list of samples (no get_batch fast path)."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def index_dataset(n):
    """Sample i is (x_i, i): the second field tells which sample a batch row came from."""
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    return ArrayDataset(x, np.arange(n))


def epoch_indices(dl):
    return np.concatenate([b[1].numpy() for b in dl])


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "minidl-DataLoader-prefetch" and t.is_alive()]


def wait_for_no_prefetch_threads(timeout=5.0):
    deadline = time.monotonic() + timeout
    while prefetch_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return prefetch_threads()


# ---------------------------------------------------------------- batches

@pytest.mark.parametrize("prefetch", [0, 2])
def test_batches_shapes_dtypes_and_the_last_partial_batch(prefetch):
    x = np.random.default_rng(0).standard_normal((10, 3, 4)).astype(np.float32)
    y = np.arange(10)
    dl = DataLoader(ArrayDataset(x, y), batch_size=4, prefetch=prefetch)
    batches = list(dl)
    assert len(dl) == len(batches) == 3
    assert [b[0].shape for b in batches] == [(4, 3, 4), (4, 3, 4), (2, 3, 4)]
    assert all(isinstance(t, minidl.Tensor) and t.device == "cpu" for b in batches for t in b)
    assert all(b[0].dtype == minidl.float32 and b[1].dtype == minidl.int64 for b in batches)
    np.testing.assert_array_equal(np.concatenate([b[0].numpy() for b in batches]), x)
    np.testing.assert_array_equal(epoch_indices(dl), y)

    dropped = DataLoader(ArrayDataset(x, y), batch_size=4, drop_last=True, prefetch=prefetch)
    assert len(dropped) == 2
    assert [b[1].tolist() for b in dropped] == [[0, 1, 2, 3], [4, 5, 6, 7]]


@pytest.mark.parametrize("n, bs, drop_last, expected", [
    (10, 5, False, 2), (10, 5, True, 2), (11, 5, False, 3), (11, 5, True, 2), (3, 5, False, 1), (3, 5, True, 0),
    (0, 5, False, 0)])
def test_len_is_the_number_of_batches(n, bs, drop_last, expected):
    dl = DataLoader(index_dataset(n), batch_size=bs, drop_last=drop_last)
    assert len(dl) == expected == len(list(dl))


def test_collate_dtype_rule():
    samples = [(1.5, 2, True, np.float64(0.5), np.ones(2, np.uint8), minidl.tensor([1.0, 2.0], dtype=minidl.float64)),
               (2.5, 3, False, np.float64(1.5), np.zeros(2, np.uint8), minidl.tensor([3.0, 4.0], dtype=minidl.float64))]
    batch = collate(samples, "cpu")
    assert [t.dtype for t in batch] == [minidl.float32, minidl.int64, minidl.bool_, minidl.float64, minidl.int64,
                                        minidl.float64]
    assert [t.shape for t in batch] == [(2,), (2,), (2,), (2,), (2, 2), (2, 2)]
    np.testing.assert_array_equal(batch[5].numpy(), [[1, 2], [3, 4]])
    assert collate([(1,), (2.5,)])[0].dtype == minidl.float32  # a mixed int/float field is a float field
    previous = minidl.get_default_dtype()
    try:
        minidl.set_default_dtype(minidl.float64)
        assert collate([(1.5,), (2.5,)])[0].dtype == minidl.float64
    finally:
        minidl.set_default_dtype(previous)


def test_array_dataset_fast_path_gives_the_same_batches_as_per_sample_collate():
    rng = np.random.default_rng(1)
    arrays = (rng.standard_normal((23, 3)), rng.integers(0, 5, 23).astype(np.int32), rng.random(23) > 0.5)
    ds = ArrayDataset(*arrays)
    as_list = ListDataset([ds[i] for i in range(len(ds))])
    for other in (DataLoader(as_list, 5, shuffle=True, seed=3),
                  DataLoader(ds, 5, shuffle=True, seed=3, collate_fn=collate)):  # collate_fn: the per-sample path
        fast = DataLoader(ds, 5, shuffle=True, seed=3)
        for a, b in zip(fast, other, strict=True):
            assert [t.dtype for t in a] == [t.dtype for t in b] == [minidl.float64, minidl.int64, minidl.bool_]
            for ta, tb in zip(a, b, strict=True):
                np.testing.assert_array_equal(ta.numpy(), tb.numpy())

    class WholeBatchesOnly(ArrayDataset):
        def __getitem__(self, i):
            raise AssertionError("the DataLoader should fetch an ArrayDataset's batches with get_batch")

    assert len(list(DataLoader(WholeBatchesOnly(*arrays), 5))) == 5


def test_array_dataset_inputs_and_errors():
    ds = ArrayDataset([[1.0, 2.0], [3.0, 4.0]], minidl.tensor([0, 1]))
    assert len(ds) == 2 and ds.arrays[0].dtype == np.float32  # a list follows minidl.tensor's rule
    assert DataLoader(ds, 2).one_batch()[0].dtype == minidl.float32
    x, y = ds[1]
    assert x.tolist() == [3.0, 4.0] and y == 1
    with raises(ValueError, "ArrayDataset", "different lengths", "[3, 2]"):
        ArrayDataset(np.zeros((3, 2)), np.zeros(2))
    with raises(ValueError, "ArrayDataset", "at least one"):
        ArrayDataset()


def test_subset():
    sub = Subset(index_dataset(10), [7, 2])
    assert len(sub) == 2 and sub[0][1] == 7 and sub[1][1] == 2
    assert DataLoader(sub, 4).one_batch()[1].tolist() == [7, 2]
    with raises(IndexError, "Subset", "[0, 10)"):
        Subset(index_dataset(10), [3, 10])


# ---------------------------------------------------------------- shuffling

def test_shuffle_visits_every_sample_once_per_epoch_in_a_new_order():
    dl = DataLoader(index_dataset(50), batch_size=8, shuffle=True, seed=0)
    first, second = epoch_indices(dl), epoch_indices(dl)
    assert sorted(first) == sorted(second) == list(range(50))
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, np.arange(50))
    assert dl.epoch == 2


def test_shuffle_with_drop_last_leaves_out_different_samples_per_epoch():
    dl = DataLoader(index_dataset(10), batch_size=4, shuffle=True, drop_last=True, seed=0)
    epochs = [epoch_indices(dl) for _ in range(5)]
    assert all(len(e) == 8 and len(set(e)) == 8 for e in epochs)
    assert len({tuple(sorted(e)) for e in epochs}) > 1


def test_shuffle_is_reproducible_with_a_seed():
    a = DataLoader(index_dataset(30), batch_size=7, shuffle=True, seed=5)
    b = DataLoader(index_dataset(30), batch_size=7, shuffle=True, seed=5, prefetch=0)
    c = DataLoader(index_dataset(30), batch_size=7, shuffle=True, seed=6)
    runs_a, runs_b, runs_c = ([epoch_indices(dl) for _ in range(3)] for dl in (a, b, c))
    for ea, eb in zip(runs_a, runs_b):
        np.testing.assert_array_equal(ea, eb)
    assert not np.array_equal(runs_a[0], runs_c[0])
    # epoch e's order is default_rng([seed, e])'s permutation (so seed 5, epoch 1 differs from
    # seed 6, epoch 0); setting .epoch replays it
    np.testing.assert_array_equal(runs_a[2], np.random.default_rng([5, 2]).permutation(30))
    assert not np.array_equal(runs_a[1], runs_c[0])
    a.epoch = 1
    np.testing.assert_array_equal(epoch_indices(a), runs_a[1])


def test_shuffle_without_a_seed_follows_minidl_manual_seed():
    def two_epochs():
        dl = DataLoader(index_dataset(30), batch_size=7, shuffle=True)
        return [epoch_indices(dl) for _ in range(2)]

    minidl.manual_seed(11)
    first = two_epochs()
    minidl.manual_seed(11)
    again = two_epochs()
    minidl.manual_seed(12)
    other = two_epochs()
    for e1, e2 in zip(first, again):
        np.testing.assert_array_equal(e1, e2)
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first[0], other[0])


def test_no_shuffle_keeps_the_dataset_order_every_epoch():
    dl = DataLoader(index_dataset(9), batch_size=4)
    np.testing.assert_array_equal(epoch_indices(dl), np.arange(9))
    np.testing.assert_array_equal(epoch_indices(dl), np.arange(9))


def test_the_order_is_drawn_in_the_calling_thread_when_the_epoch_starts():
    minidl.manual_seed(0)
    expected = np.random.default_rng(0).permutation(20)  # what manual_seed(0)'s generator draws first
    dl = DataLoader(index_dataset(20), batch_size=3, shuffle=True, prefetch=2)
    state = minidl.random.generator().bit_generator.state
    batches = iter(dl)
    assert minidl.random.generator().bit_generator.state != state  # drawn by iter(), before any batch
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), expected)


# ---------------------------------------------------------------- prefetch

def test_prefetch_and_no_prefetch_give_the_same_batches():
    ds = index_dataset(37)
    with_thread = DataLoader(ds, batch_size=5, shuffle=True, seed=2, prefetch=2)
    in_main = DataLoader(ds, batch_size=5, shuffle=True, seed=2, prefetch=0)
    for _ in range(2):
        for a, b in zip(with_thread, in_main, strict=True):
            for ta, tb in zip(a, b, strict=True):
                np.testing.assert_array_equal(ta.numpy(), tb.numpy())
                assert ta.dtype == tb.dtype


class Failing(ListDataset):
    def __getitem__(self, i):
        if i == 7:
            raise ValueError(f"sample {i} is unreadable")
        return super().__getitem__(i)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_an_error_in_the_dataset_reaches_the_training_loop_with_its_traceback(prefetch):
    dl = DataLoader(Failing([(float(i), i) for i in range(20)]), batch_size=3, prefetch=prefetch)
    seen = []
    with raises(ValueError, "sample 7 is unreadable") as info:
        for batch in dl:
            seen.append(batch[1].tolist())
    assert seen == [[0, 1, 2], [3, 4, 5]]  # the batches before the bad one arrive first
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "__getitem__" in frames  # the original traceback: where the dataset raised
    if prefetch:
        assert any("prefetch thread" in note and "batch 2" in note for note in info.value.__notes__)
    assert not wait_for_no_prefetch_threads()


def test_leaving_the_loop_early_stops_the_prefetch_thread():
    dl = DataLoader(index_dataset(1000), batch_size=1, prefetch=2)
    for _ in dl:
        time.sleep(0.2)  # the thread fills the queue and waits to put the next batch
        break
    assert not wait_for_no_prefetch_threads()

    with pytest.raises(RuntimeError):  # an exception in the loop body
        for _ in dl:
            raise RuntimeError("the training step failed")
    assert not wait_for_no_prefetch_threads()

    batches = iter(dl)  # an iterator that is dropped half-way
    next(batches)
    del batches
    assert not wait_for_no_prefetch_threads()


class Slow(ListDataset):
    def __getitem__(self, i):
        time.sleep(0.02)
        return super().__getitem__(i)


def test_prefetch_overlaps_loading_with_training():
    # 10 batches that each take 0.04 s to load and 0.04 s to "train": 0.8 s one after the
    # other, about 0.44 s when the thread loads batch k+1 while batch k trains.
    dl = DataLoader(Slow([(float(i), i) for i in range(20)]), batch_size=2, prefetch=2)
    start = time.perf_counter()
    for _ in dl:
        time.sleep(0.04)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.65, f"loading and training took {elapsed:.2f} s, as if one after the other (0.8 s)"


# ---------------------------------------------------------------- collate errors

def test_collate_errors_name_the_item_and_the_shapes():
    with raises(ValueError, "collate", "item 0", "(3, 32, 32)", "sample 2", "(3, 28, 28)"):
        collate([(np.zeros((3, 32, 32)), 0), (np.zeros((3, 32, 32)), 1), (np.zeros((3, 28, 28)), 2)])
    with raises(ValueError, "collate", "sample 1 has 1 items", "sample 0 has 2"):
        collate([(1.0, 2), (1.0,)])
    with raises(TypeError, "collate", "sample 0", "ndarray", "tuple"):
        collate([np.zeros(3), np.zeros(3)])
    with raises(TypeError, "collate", "item 1", "'cat'", "int"):
        collate([(1.0, "cat"), (2.0, "dog")])
    with raises(ValueError, "collate", "no samples"):
        collate([])
    with raises(ValueError, "item 0", "(2,)", "(3,)"):  # and through a DataLoader
        list(DataLoader(ListDataset([(np.zeros(2), 0), (np.zeros(3), 1)]), batch_size=2))


def test_dataloader_argument_errors():
    with raises(ValueError, "batch_size", "positive"):
        DataLoader(index_dataset(4), batch_size=0)
    with raises(ValueError, "prefetch"):
        DataLoader(index_dataset(4), prefetch=-1)
    with raises(ValueError, "unknown device", "'tpu'"):
        DataLoader(index_dataset(4), device="tpu")
    with raises(TypeError, "DataLoader", "__len__", "ArrayDataset"):
        DataLoader(iter(range(4)))


# ---------------------------------------------------------------- one_batch, new, collate_fn

def test_one_batch_draws_nothing_and_starts_no_epoch():
    minidl.manual_seed(0)
    dl = DataLoader(index_dataset(10), batch_size=4, shuffle=True)
    state = minidl.random.generator().bit_generator.state
    x, y = dl.one_batch()
    assert x.shape == (4, 2) and y.tolist() == [0, 1, 2, 3]
    assert dl.epoch == 0 and minidl.random.generator().bit_generator.state == state
    assert DataLoader(index_dataset(3), batch_size=4).one_batch()[1].tolist() == [0, 1, 2]


def test_new_copies_the_settings_with_changes():
    dl = DataLoader(index_dataset(10), batch_size=4, shuffle=True, seed=1, drop_last=True, prefetch=0)
    plain = dl.new(shuffle=False, drop_last=False)
    assert plain.dataset is dl.dataset and (plain.batch_size, plain.seed, plain.prefetch) == (4, 1, 0)
    assert not plain.shuffle and len(plain) == 3 and dl.shuffle and len(dl) == 2
    with raises(TypeError, "new", "bs", "batch_size"):
        dl.new(bs=3)


def test_a_custom_collate_fn_gets_the_samples_and_the_device():
    calls = []

    def pad_collate(samples, device):
        calls.append(device)
        longest = max(len(x) for x, in samples)
        return (minidl.tensor(np.stack([np.pad(x, (0, longest - len(x))) for x, in samples]), device=device),)

    ds = ListDataset([(np.ones(n),) for n in (1, 3, 2)])
    (x,) = DataLoader(ds, batch_size=3, collate_fn=pad_collate).one_batch()
    assert calls == ["cpu"] and x.tolist() == [[1, 0, 0], [1, 1, 1], [1, 1, 0]]


# ---------------------------------------------------------------- splitters

def check_split(train, valid, n):
    assert train.dtype.kind == valid.dtype.kind == "i"
    assert len(np.intersect1d(train, valid)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, valid])), np.arange(n))


def test_random_splitter():
    train, valid = RandomSplitter(0.2, seed=42)(103)
    check_split(train, valid, 103)
    assert len(valid) == int(0.2 * 103) == 20
    again = RandomSplitter(0.2, seed=42)(list(range(103)))  # the items themselves work too
    np.testing.assert_array_equal(valid, again[1])
    assert not np.array_equal(valid, RandomSplitter(0.2, seed=43)(103)[1])
    assert not np.array_equal(np.sort(valid), np.arange(20))  # random, not the first rows

    minidl.manual_seed(3)
    first = RandomSplitter(0.3)(50)
    minidl.manual_seed(3)
    np.testing.assert_array_equal(first[1], RandomSplitter(0.3)(50)[1])
    with raises(ValueError, "RandomSplitter", "valid_pct", "between 0 and 1"):
        RandomSplitter(20)
    with raises(TypeError, "RandomSplitter", "len()"):
        RandomSplitter()(3.5)


def test_index_splitter():
    train, valid = IndexSplitter([8, 1, 4])(10)
    check_split(train, valid, 10)
    assert valid.tolist() == [8, 1, 4] and train.tolist() == [0, 2, 3, 5, 6, 7, 9]
    with raises(IndexError, "IndexSplitter", "[0, 10)"):
        IndexSplitter([3, 10])(10)
    with raises(ValueError, "IndexSplitter", "repeats"):
        IndexSplitter([3, 3])(10)


def test_mask_and_column_splitters():
    is_valid = np.array([False, True, False, True, True])
    for train, valid in (MaskSplitter(is_valid)(5), ColSplitter()({"x": np.zeros(5), "is_valid": is_valid}),
                         MaskSplitter(is_valid.astype(int))(5)):
        check_split(train, valid, 5)
        assert valid.tolist() == [1, 3, 4]
    with raises(KeyError, "ColSplitter", "'is_valid'", "'x'"):
        ColSplitter()({"x": np.zeros(5)})
    with raises(ValueError, "MaskSplitter", "4 values for 5 items"):
        MaskSplitter(is_valid[:4])(5)
    with raises(TypeError, "MaskSplitter", "bool", "float64"):
        MaskSplitter(np.full(5, 0.5))(5)


def test_column_splitter_on_a_pandas_dataframe():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"x": range(4), "is_valid": [True, False, False, True]})
    train, valid = ColSplitter("is_valid")(df)
    assert train.tolist() == [1, 2] and valid.tolist() == [0, 3]
    assert MaskSplitter(df["is_valid"])(df)[1].tolist() == [0, 3]


def test_time_splitter_puts_the_latest_rows_in_valid():
    rng = np.random.default_rng(0)
    days = rng.permutation(100)  # rows in no particular time order
    train, valid = TimeSplitter(days, valid_pct=0.2)(100)
    check_split(train, valid, 100)
    assert len(valid) == 20 and days[valid].min() == 80 and days[train].max() == 79

    train, valid = TimeSplitter(days, cutoff=90)(100)
    assert sorted(days[valid]) == list(range(90, 100)) and days[train].max() == 89

    ties = np.array([1, 2, 2, 2, 3])  # rows at the same time never straddle the split
    assert TimeSplitter(ties, valid_pct=0.4)(5)[1].tolist() == [1, 2, 3, 4]


def test_time_splitter_on_dates():
    dates = np.array(["2015-01-03", "2014-12-30", "2015-01-01", "2014-12-31"], dtype="datetime64[D]")
    train, valid = TimeSplitter(dates, cutoff="2015-01-01")(4)
    assert train.tolist() == [1, 3] and valid.tolist() == [0, 2]
    assert TimeSplitter(dates, valid_pct=0.25)(4)[1].tolist() == [0]


def test_time_splitter_errors():
    with raises(ValueError, "TimeSplitter", "exactly one"):
        TimeSplitter(np.arange(5))
    with raises(ValueError, "TimeSplitter", "exactly one"):
        TimeSplitter(np.arange(5), cutoff=3, valid_pct=0.2)
    with raises(ValueError, "TimeSplitter", "1 values are missing"):
        TimeSplitter(np.array([1.0, np.nan, 3.0]), cutoff=2.0)
    with raises(TypeError, "TimeSplitter", "datetime64"):
        TimeSplitter(np.array(["2015-01-01", "2015-01-02"]), cutoff="2015-01-02")
    with raises(ValueError, "TimeSplitter", "5 values for 4 items"):
        TimeSplitter(np.arange(5), cutoff=3)(4)


# ---------------------------------------------------------------- DataLoaders

def test_dataloaders_from_dsets():
    dls = DataLoaders.from_dsets(index_dataset(50), index_dataset(13), bs=8, seed=0, prefetch=0)
    assert dls[0] is dls.train and dls[1] is dls.valid and dls.device == "cpu"
    assert dls.train.shuffle and dls.train.drop_last and len(dls.train) == 6 and dls.train.seed == 0
    assert not dls.valid.shuffle and not dls.valid.drop_last and len(dls.valid) == 2
    assert dls.train.prefetch == dls.valid.prefetch == 0
    train_seen = epoch_indices(dls.train)
    assert len(train_seen) == 48 and len(set(train_seen)) == 48
    np.testing.assert_array_equal(epoch_indices(dls.valid), np.arange(13))

    kept = DataLoaders.from_dsets(index_dataset(50), None, bs=8, drop_last=False)
    assert kept.valid is None and len(kept.train) == 7 and kept.loaders == [kept.train]
    assert not DataLoaders.from_dsets(index_dataset(50), None, bs=8, shuffle_train=False).train.drop_last
    with raises(ValueError, "from_dsets", "5 samples", "bs=8", "drop_last=False"):
        DataLoaders.from_dsets(index_dataset(5), None, bs=8)


def test_dataloaders_device():
    train, valid = DataLoader(index_dataset(4)), DataLoader(index_dataset(4))
    dls = DataLoaders(train, valid, device="cpu")
    assert dls.to("cpu") is dls and dls.device == train.device == valid.device == "cpu"
    with raises(ValueError, "unknown device"):
        dls.to("tpu")


class NoisyDataset:
    """Adds minidl random noise in __getitem__, like a random augmentation."""

    def __len__(self):
        return 40

    def __getitem__(self, i):
        return (np.float32(i) + minidl.randn(1).numpy()[0],)


def test_random_augmentations_are_reproducible_with_prefetch_and_training_draws():
    def run(prefetch):
        minidl.manual_seed(11)
        dl = DataLoader(NoisyDataset(), batch_size=8, shuffle=True, prefetch=prefetch)
        seen, main_draws = [], []
        for _ in range(2):
            for (x,) in dl:
                seen.append(x.numpy().copy())
                main_draws.append(minidl.rand(1).item())  # the training thread draws too (dropout)
        return np.concatenate(seen), main_draws
    first, second, no_prefetch = run(2), run(2), run(0)
    np.testing.assert_array_equal(first[0], second[0])
    assert first[1] == second[1]
    np.testing.assert_array_equal(first[0], no_prefetch[0])
    assert first[1] == no_prefetch[1]
