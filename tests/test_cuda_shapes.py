"""The CUDA kernels' launches shaped for a real GPU, checked on odd and large shapes against numpy_ref.

Runs on "emu" (the kernels on the CPU) and on "cuda" where a GPU is visible. What each test shows:
  split-K            a weight gradient's long K is cut into slices that run as one batched GEMM
                     (plus a shorter last slice), added by partials.cu's sum_parts
  reductions in parts  batch-norm statistics, channel_affine's backward and a full-tensor sum run on
                     many blocks per channel / row, parts that cross sample boundaries included
  equal shapes, scalars  binary ops without broadcast metadata; a Python number passed by value
  folded grids       a GEMM grid past CUDA's 65,535 limit on grid.y / grid.z is folded
  metadata           broadcast strides and conv geometries reach the device once, not per launch
The emulator runs every block's threads: MIN_PART is lowered here so that small shapes are cut
into many parts, instead of making the shapes large.
"""
import numpy as np
import pytest

from minidl.backend import cuda, get_backend, numpy_ref
from minidl.backend.cuda import gpu_count

pytestmark = pytest.mark.timeout(300, method="thread")

DEVICES = ["emu", pytest.param("cuda", marks=pytest.mark.skipif(
    gpu_count() == 0, reason="no CUDA device visible ('emu' runs these here)"))]


@pytest.fixture(params=DEVICES)
def be(request):
    return get_backend(request.param)


def on(be, a):
    return be.asarray(np.array(a, order="C"))


def back(be, a):
    return be.to_numpy(a)


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def close(actual, expected, rtol=1e-4, atol=1e-4):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64), rtol=rtol, atol=atol)


class LaunchLog:
    """Records (kernel, grid) of every launch of a CudaKernels, still running each one."""

    def __init__(self, kernels, monkeypatch):
        self.launches = []
        launch = kernels.launch

        def logged(module, kernel, grid, block, args, shared_mem=0):
            self.launches.append((kernel, tuple(grid)))
            return launch(module, kernel, grid, block, args, shared_mem)
        monkeypatch.setattr(kernels, "launch", logged)

    def grids(self, kernel):
        return [grid for name, grid in self.launches if name == kernel]


# ---------------------------------------------------------------- split-K

def test_split_k_plan_fills_the_gpu():
    """EfficientNet-Lite0's stem at batch 32: one 32x27 output tile over K = 32*112*112 = 401,408."""
    assert cuda.MatmulHost.k_splits(32, 27, 32 * 112 * 112, 1) == cuda.FULL_GRID
    assert cuda.MatmulHost.k_splits(32, 27, 1000, 1) == 1            # too short to cut
    assert cuda.MatmulHost.k_splits(1280, 1280, 10 ** 6, 1) == 1     # 400 tiles fill the GPU already
    assert cuda.MatmulHost.k_splits(64, 64, 3 * cuda.MIN_SPLIT_K + 1, 1) == 3


@pytest.mark.parametrize("stride, padding, groups", [(1, 1, 1), (2, 0, 2)])
def test_conv2d_backward_weight_split_k(be, monkeypatch, stride, padding, groups):
    """K = N*OH*OW of 1,197 (stride 1) is cut into a 599 slice and a shorter 598 one; 2 groups loop."""
    log = LaunchLog(be.kernels, monkeypatch)
    x, w = randn(3, 4, 19, 21, seed=1), randn(5 * groups, 4 // groups, 3, 3, seed=2)
    out = numpy_ref.conv2d(x, w, (stride, stride), (padding, padding), (1, 1), groups)
    if stride == 2:
        monkeypatch.setattr(cuda, "MIN_SPLIT_K", 64)  # K = 3*9*10 = 270: cut it anyway
    grad = randn(*out.shape, seed=3)
    dw = be.conv2d_backward_weight(on(be, grad), on(be, x), w.shape, (stride, stride), (padding, padding), (1, 1),
                                   groups)
    close(back(be, dw), numpy_ref.conv2d_backward_weight(grad, x, w.shape, (stride, stride), (padding, padding),
                                                         (1, 1), groups), rtol=1e-3, atol=1e-3)
    assert len(log.grids("sum_parts")) == groups  # the split ran, once per group


def test_matmul_weight_gradient_split_k(be, monkeypatch):
    """x^T @ g (a Linear layer's dW) with K = 1,301 rows: x.T is read in place (transA), K is split."""
    log = LaunchLog(be.kernels, monkeypatch)
    x, g = randn(1301, 5, seed=4), randn(1301, 7, seed=5)
    dw = be.matmul(on(be, x).T, on(be, g))
    close(back(be, dw), x.T.astype(np.float64) @ g, rtol=1e-3, atol=1e-3)
    assert [grid[0] for grid in log.grids("matmul_tiled")] == [1, 1]  # one full slice, then the rest
    assert len(log.grids("sum_parts")) == 1


# ---------------------------------------------------------------- reductions in parts

@pytest.fixture
def small_parts(monkeypatch):
    monkeypatch.setattr(cuda, "MIN_PART", 100)


@pytest.mark.parametrize("shape", [(3, 2, 7, 13), (300, 3), (2, 5, 1, 1), (1, 1, 517)])
def test_batch_norm_in_parts(be, small_parts, shape):
    """Statistics and gradients per channel from many parts (part edges inside a sample, S = 1, one value per
    sample), against the reference; a large offset checks that the parts' variances combine accurately."""
    x = randn(*shape, seed=6) * 3 + 100
    C = shape[1]
    weight, bias, grad = randn(C, seed=7), randn(C, seed=8), randn(*shape, seed=9)
    if x.size // C < 2:
        pytest.skip("batch norm needs two values per channel")
    y, mean, var, invstd = (back(be, a) for a in be.batch_norm(on(be, x), on(be, weight), on(be, bias), 1e-5))
    ry, rmean, rvar, rinvstd = numpy_ref.batch_norm(x, weight, bias, 1e-5)
    close(mean, rmean, rtol=1e-5)
    close(var, rvar, rtol=1e-3)
    close(y, ry, rtol=1e-3, atol=1e-3)
    got = be.batch_norm_backward(on(be, grad), on(be, x), on(be, weight), on(be, rmean), on(be, rinvstd))
    want = numpy_ref.batch_norm_backward(grad, x, weight, rmean, rinvstd)
    for a, b in zip(got, want):
        close(back(be, a), b, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("activation", [None, "relu", "relu6"])
def test_channel_affine_backward_in_parts(be, small_parts, activation):
    x, scale, shift = randn(3, 4, 9, 11, seed=10) * 4, randn(4, seed=11), randn(4, seed=12)
    y = numpy_ref.channel_affine(x, scale, shift, activation)
    grad = randn(*x.shape, seed=13)
    got = be.channel_affine_backward(on(be, grad), on(be, x), on(be, y), on(be, scale), activation)
    want = numpy_ref.channel_affine_backward(grad, x, y, scale, activation)
    for a, b in zip(got, want):
        close(back(be, a), b, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("op", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("shape, axis", [((5, 7, 31), None), ((2, 1001), 1), ((3, 4, 97), (0, 2))])
def test_long_reductions_in_parts(be, small_parts, monkeypatch, op, shape, axis):
    log = LaunchLog(be.kernels, monkeypatch)
    x = randn(*shape, seed=14)
    got = getattr(be, op)(on(be, x), axis=axis)
    close(back(be, got), getattr(np, op)(x.astype(np.float64), axis=axis), rtol=1e-4)
    assert log.grids("reduce_row_parts")  # the full-tensor sum no longer runs in one block


# ---------------------------------------------------------------- binary ops

@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "maximum", "minimum", "power", "relu_backward"])
def test_binary_equal_shapes_and_numbers(be, monkeypatch, op):
    log = LaunchLog(be.kernels, monkeypatch)
    a, b = np.abs(randn(3, 5, 37, seed=15)) + 0.5, randn(3, 5, 37, seed=16)
    close(back(be, getattr(be, op)(on(be, a), on(be, b))), getattr(numpy_ref, op)(a, b), rtol=1e-5)
    assert log.grids("binary_same_f32") and not log.grids("binary_f32")
    for number in (2, 0.5, np.float32(1.5)):
        for args in ((a, number), (number, a)):
            if op == "relu_backward":
                continue
            want = getattr(numpy_ref, op)(*args)
            got = getattr(be, op)(*(on(be, v) if isinstance(v, np.ndarray) else v for v in args))
            assert got.dtype == np.float32 and got.shape == want.shape
            close(back(be, got), want, rtol=1e-5)
    assert not log.grids("binary_f32")


def test_binary_float64_numbers_keep_numpys_promotion(be):
    a = randn(4, 3, seed=17)
    got = be.add(on(be, a), np.float64(0.5))
    assert got.dtype == numpy_ref.add(a, np.float64(0.5)).dtype


# ---------------------------------------------------------------- folded GEMM grids

def test_gemm_grid_folds_huge_batch_and_m(be, monkeypatch):
    """Grid.y past the limit (the limit lowered to 2 so that the emulator stays quick): the row tiles are
    walked in steps of grid.y, the batch rides in grid.x, and every product is right."""
    monkeypatch.setattr(be.kernels, "max_grid_yz", 2)
    log = LaunchLog(be.kernels, monkeypatch)
    a, b = randn(3, 5 * 64 + 7, 9, seed=18), randn(3, 9, 70, seed=19)
    close(back(be, be.matmul(on(be, a), on(be, b))), a.astype(np.float64) @ b, rtol=1e-4)
    assert log.grids("matmul_tiled") == [(2 * 3, 2)]
    close(back(be, be.kernels.matmul(on(be, a), on(be, b), version="naive")), a.astype(np.float64) @ b, rtol=1e-4)
    assert log.grids("matmul_naive") == [(5 * 3, 2)]


def test_a_grid_past_cudas_limits_is_refused(be):
    with pytest.raises(ValueError, match="must fold it"):
        be.kernels.launch("matmul", "matmul_tiled", (1, 1, 70_000), (256,), ())


def test_gemm_launch_plan_for_a_batch_of_70000(be, monkeypatch):
    """70,000 1x1 products: 70,000 blocks along grid.x, within CUDA's limits (the kernel is not run here)."""
    grids = []
    monkeypatch.setattr(be.kernels, "function", lambda module, kernel: lambda grid, block, args, shared_mem=0:
                        grids.append(grid))
    be.kernels.matmul(on(be, np.ones((70_000, 1, 1), np.float32)), on(be, np.ones((70_000, 1, 1), np.float32)))
    assert grids == [(70_000, 1)]


def test_gemm_batch_of_70000_tiny_matrices(be):
    """Past grid.z's 65,535 for real: 70,000 blocks (about 20 s on the emulator's fibers)."""
    a, b = randn(70_000, 1, 1, seed=20), randn(70_000, 1, 2, seed=21)
    close(back(be, be.matmul(on(be, a), on(be, b))), a @ b, rtol=1e-5)


@pytest.mark.skipif(gpu_count() == 0, reason="4.2 million row tiles: for a GPU")
def test_gemm_m_past_65535_row_tiles_on_a_gpu():
    be = get_backend("cuda")
    M = 65_536 * 64 + 3
    a, b = randn(M, 1, seed=22), randn(1, 3, seed=23)
    close(back(be, be.matmul(on(be, a), on(be, b))), a @ b, rtol=1e-5)


# ---------------------------------------------------------------- metadata and checks without round trips

def test_metadata_reaches_the_device_once(be):
    kernels = be.kernels
    a, b = on(be, randn(3, 1, 5, seed=24)), on(be, randn(4, 1, seed=25))
    be.add(a, b)
    x, w = on(be, randn(2, 3, 8, 8, seed=26)), on(be, randn(4, 3, 3, 3, seed=27))
    be.conv2d(x, w, (1, 1), (1, 1), (1, 1), 1)
    cached = dict(kernels._metadata)
    be.mul(a, b)
    be.conv2d(x, w, (1, 1), (1, 1), (1, 1), 1)
    assert kernels._metadata.keys() == cached.keys()
    assert all(kernels._metadata[k] is v for k, v in cached.items())


def test_embedding_kernels_stay_in_the_table(be):
    """An id out of range (the op's check is deferred: tests/test_deferred.py) is never followed: the gather
    writes NaN for it, the scatter-add skips it."""
    weight = randn(6, 3, seed=28)
    out = back(be, be.embedding(on(be, weight), on(be, np.array([0, 7, -1, 5]))))
    assert np.isnan(out[1:3]).all() and np.array_equal(out[[0, 3]], weight[[0, 5]])
    ids = np.array([[1, 7], [5, 1]])  # 7 is skipped, not written past the table
    dw = back(be, be.embedding_backward(on(be, np.ones((2, 2, 3), np.float32)), on(be, ids), 6))
    assert dw.shape == (6, 3) and dw[1].tolist() == [2, 2, 2] and dw[5].tolist() == [1, 1, 1] and dw.sum() == 9


def test_cross_entropy_target_out_of_range_gives_nan_not_a_wild_read(be):
    logits, target = randn(3, 4, seed=29), np.array([0, 4, 3])
    loss, _ = be.cross_entropy(on(be, logits), on(be, target))
    loss = back(be, loss)
    want, _ = numpy_ref.cross_entropy(logits, np.array([0, 0, 3]))
    assert np.isnan(loss[1]) and np.allclose(loss[[0, 2]], want[[0, 2]], rtol=1e-5)


# ---------------------------------------------------------------- the Learner reads losses in groups

def _blobs(n=400, nan_at=None):
    from minidl.data import ArrayDataset, DataLoaders
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    if nan_at is not None:
        x[nan_at, 2] = np.nan
    return DataLoaders.from_dsets(ArrayDataset(x[:320], y[:320]), ArrayDataset(x[320:], y[320:]), bs=32)


def _fit(tmp_path, epochs=2, dls=None):
    import minidl
    import minidl.nn as nn
    from minidl.learn import Learner, accuracy
    minidl.set_seed(0)
    learn = Learner(dls or _blobs(), nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)),
                    metrics=accuracy, lr=1e-2, path=tmp_path)
    learn.show_progress = False
    learn.fit(epochs)
    return learn


def as_if_on_a_gpu(monkeypatch):
    """Losses treated as device values (read only through read_numbers); returns the list of reads."""
    from minidl.learn import callback, recorder
    reads, read = [], callback.read_numbers

    def counted(tensors):
        if tensors:  # (nothing to read is no read)
            reads.append(len(tensors))
        return read(tensors)
    monkeypatch.setattr(callback, "on_host", lambda t: False)
    monkeypatch.setattr(callback, "read_numbers", counted)
    monkeypatch.setattr(recorder, "read_numbers", counted)
    return reads


def test_the_learner_reads_losses_once_per_group_not_per_batch(tmp_path, monkeypatch):
    on_host = _fit(tmp_path).recorder
    reads = as_if_on_a_gpu(monkeypatch)
    on_device = _fit(tmp_path).recorder
    # 10 training and 3 validation batches per epoch: a read per 16 (or the stage's last) batch in
    # TerminateOnNaN, the Recorder's once per epoch and once per validation; no read of a single loss
    assert reads and len(reads) <= 2 * 4 and sum(reads) == 2 * 2 * (10 + 3)
    assert on_device.losses == pytest.approx(on_host.losses) and len(on_device.losses) == 20
    assert on_device.smooth_losses == pytest.approx(on_host.smooth_losses)
    assert on_device.values[-1][:3] == pytest.approx(on_host.values[-1][:3])  # train, valid loss, accuracy


def test_a_nan_found_late_on_a_gpu_names_the_batch_it_appeared_in(tmp_path, monkeypatch):
    from minidl.learn import NonFiniteLossError
    as_if_on_a_gpu(monkeypatch)
    with pytest.raises(NonFiniteLossError, match=r"the training loss is nan at epoch 0, batch \d \(of 10\).*"
                                                 r"Training stopped at batch 9 of epoch 0"):
        _fit(tmp_path, dls=_blobs(nan_at=3 * 32 + 5))


# ---------------------------------------------------------------- dropout masks made on the device

def splitmix64_uniform(seed, n):
    """u_i = the top 24 bits of SplitMix64's i-th output for seed, over 2**24 (elementwise.cu's dropout_mask_f32)."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / 2 ** 24


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
def test_dropout_mask_on_the_device(be, p):
    shape = (3, 7, 53)
    mask = back(be, be.dropout_mask(shape, p, seed=12345))
    n = int(np.prod(shape))
    want = np.where(splitmix64_uniform(12345, n) >= p, 1 / (1 - p), 0.0).reshape(shape)
    close(mask, want, rtol=1e-6)
    assert mask.dtype == np.float32 and abs((mask == 0).mean() - p) < 0.04  # about p of them dropped
    other = back(be, be.dropout_mask(shape, p, seed=12346))
    assert p == 0 or not np.array_equal(mask, other)  # a new seed, a new mask
