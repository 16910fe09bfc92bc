"""Data parallelism (minidl/distributed.py, learn/distributed.py): each test launches ``mpiexec -n 2``.

They need mpi4py and an MPI launcher (``pip install 'minidl[distributed]'`` brings both: mpi4py and
MPICH's wheel, whose mpiexec lands beside python); without them they are skipped, saying why.
Each run has a timeout: a deadlock fails the test instead of hanging CI.
"""
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import minidl
from minidl import distributed

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _mpiexec():
    beside_python = pathlib.Path(sys.executable).parent / "mpiexec"
    return str(beside_python) if beside_python.exists() else shutil.which("mpiexec") or shutil.which("mpirun")


def _skip_reason():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install 'minidl[distributed]')"
    if _mpiexec() is None:
        return "no mpiexec/mpirun found (the mpich wheel puts one beside python)"
    return None


needs_mpi = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


def launch(tmp_path, script, n=2, timeout=120, env=None, check=True):
    """Run ``script`` (Python source) on ``n`` ranks (n=None: a plain process); returns the CompletedProcess."""
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(script))
    cmd = [sys.executable, str(path)] if n is None else [_mpiexec(), "-n", str(n), sys.executable, str(path)]
    environ = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **(env or {}))
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=timeout, env=environ)
    if check and done.returncode != 0:
        raise AssertionError(f"{cmd} exited with {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}")
    return done


@needs_mpi
def test_all_reduce_and_broadcast_are_exact_for_float32_float64_and_odd_sizes(tmp_path):
    out = launch(tmp_path, """
        import numpy as np, minidl
        from minidl import distributed as dist
        w = dist.init()
        for dtype in ("float32", "float64"):
            for n in (1, 3, 1001, 65537):
                x = np.random.default_rng([n, w.rank]).standard_normal(n).astype(dtype)
                every = np.stack([np.random.default_rng([n, r]).standard_normal(n).astype(dtype)
                                  for r in range(w.size)])
                t = dist.all_reduce(minidl.tensor(x), "sum")
                assert t.dtype == dtype and np.allclose(t.numpy(), every.sum(0), rtol=1e-6, atol=1e-6), (dtype, n)
                m = dist.all_reduce(minidl.tensor(x), "mean")
                assert np.allclose(m.numpy(), every.mean(0), rtol=1e-6, atol=1e-6)
                b = dist.broadcast(minidl.tensor(x.reshape(1, n)), src=1)
                assert b.shape == (1, n) and (b.numpy()[0] == every[1]).all()
            view = minidl.tensor(np.arange(12.0, dtype=dtype).reshape(3, 4) * (w.rank + 1)).transpose(0, 1)
            dist.all_reduce(view)                                    # a non-contiguous view: reduced in place
            assert np.allclose(view.numpy(), np.arange(12.0).reshape(3, 4).T * 3)
        i = dist.all_reduce(minidl.tensor([w.rank + 1, 10]), "sum")
        assert i.numpy().tolist() == [3, 20]
        dist.barrier()
        print("collectives ok on rank", w.rank)
    """)
    assert out.stdout.count("collectives ok") == 2


@needs_mpi
def test_buckets_are_all_reduced_during_backward_last_layer_first(tmp_path):
    out = launch(tmp_path, """
        import numpy as np, minidl
        from minidl import nn, distributed as dist
        w = dist.init()
        minidl.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
        ddp = dist.DistributedDataParallel(model, bucket_mb=0)        # a bucket per parameter
        params = list(model.parameters())
        x = minidl.tensor(np.random.default_rng(w.rank).standard_normal((5, 4)).astype(np.float32))
        ddp(x).sum().backward()
        assert ddp.next_bucket == len(ddp.buckets) == len(params)     # every all-reduce started in backward
        assert [b.params[0] for b in ddp.buckets] == params[::-1]      # last registered first
        local = [p.grad.numpy().copy() for p in params]
        ddp.finish_gradients()
        every = dist.all_gather_object(local)
        for k, p in enumerate(params):
            assert np.allclose(p.grad.numpy(), np.mean([g[k] for g in every], axis=0), atol=1e-6)
        print("buckets ok")
    """)
    assert out.stdout.count("buckets ok") == 2


def test_a_single_process_is_a_world_of_one_and_errors_name_the_fix(tmp_path):
    out = launch(tmp_path, """
        import minidl
        from minidl import distributed as dist
        try:
            dist.rank()
        except RuntimeError as e:
            assert "init()" in str(e), e
        w = dist.init()
        assert (w.rank, w.size, dist.rank(), dist.world_size()) == (0, 1, 0, 1)
        t = minidl.tensor([1.0, 2.0])
        assert dist.all_reduce(t, "mean").numpy().tolist() == [1.0, 2.0]   # no-ops
        dist.broadcast(t); dist.barrier()
        for bad, fix in ((minidl.tensor([True]), ".float()"), ([1.0], "minidl.tensor"),
                         (minidl.tensor([1, 2]), "op='sum'")):
            try:
                dist.all_reduce(bad, "mean")
            except TypeError as e:
                assert fix in str(e), e
            else:
                raise AssertionError(f"no error for {bad!r}")
        print("world of one ok")
    """, n=None)
    assert "world of one ok" in out.stdout


TRAINING = """
    import sys, numpy as np, minidl
    from minidl import nn
    from minidl.data import ArrayDataset, DataLoaders
    from minidl.learn import Learner, accuracy
    from minidl.optim import SGD
    from functools import partial

    bn, distributed, n_train, bs, drop_last = {bn!r}, {distributed!r}, {n_train}, {bs}, {drop_last}
    minidl.set_seed(0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n_train + 7, 5))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    dls = DataLoaders.from_dsets(ArrayDataset(x[:n_train], y[:n_train]), ArrayDataset(x[n_train:], y[n_train:]),
                                 bs=bs, seed=3, drop_last=drop_last, prefetch=0)
    layers = [nn.Linear(5, 16)] + ([nn.BatchNorm1d(16)] if bn else []) + [nn.ReLU(), nn.Linear(16, 2)]
    model = nn.Sequential(*layers)
    for p in list(model.parameters()) + list(model.buffers()):   # float64: equal to 1e-6 means equal
        if p.dtype == np.float32:
            p.data = p.data.astype(np.float64)
    learn = Learner(dls, model, opt_func=partial(SGD, momentum=0.9), lr=0.1, metrics=accuracy)
    if distributed:
        learn.to_distributed(sync_bn=bn)
    learn.fit(3)
    final = learn.validate()
    from minidl import distributed as dist
    rank = dist.rank() if dist.is_initialized() else 0
    np.savez(f"weights_{{rank}}.npz", **{{k: v.numpy() for k, v in model.state_dict().items()}},
             recorded=np.array(learn.recorder.values[-1], dtype=float), final=np.array(final, dtype=float))
    print("trained", rank)
"""


def _train(tmp_path, n, **settings):
    settings = {"bn": False, "distributed": n is not None, "n_train": 32, "bs": 8, "drop_last": True, **settings}
    folder = tmp_path / f"run_{n}"
    folder.mkdir()
    out = launch(folder, TRAINING.format(**settings), n=n, timeout=180)
    return [dict(np.load(folder / f"weights_{r}.npz")) for r in range(n or 1)], out


@needs_mpi
@pytest.mark.parametrize("bn", [False, True], ids=["no_batchnorm", "sync_batchnorm"])
def test_two_ranks_on_halves_of_each_batch_end_as_one_process_on_the_whole_batch(tmp_path, bn):
    (single,), _ = _train(tmp_path, None, bn=bn)
    (rank0, rank1), out = _train(tmp_path, 2, bn=bn)
    assert "world size" not in out.stderr
    for key in single:
        assert np.array_equal(rank0[key], rank1[key]), f"{key}: the ranks' replicas differ"
        np.testing.assert_allclose(rank0[key], single[key], rtol=1e-6, atol=1e-6, err_msg=key)


@needs_mpi
def test_uneven_shards_keep_the_ranks_equal_and_validation_exact(tmp_path):
    # 37 training samples in batches of 4 (kept): the last batch has 1 sample for 2 ranks (padded, said);
    # 7 validation samples: the last batch of 3 splits 2 / 1, and the gathered metrics are the whole set's.
    (rank0, rank1), out = _train(tmp_path, 2, n_train=37, bs=4, drop_last=False)
    assert "repeat its first sample" in out.stderr
    for key in rank0:
        assert np.array_equal(rank0[key], rank1[key]), key
    np.testing.assert_allclose(rank0["recorded"][1:], rank0["final"], rtol=1e-12)


@needs_mpi
def test_a_rank_that_raises_stops_the_others_within_a_timeout(tmp_path):
    start = time.perf_counter()
    out = launch(tmp_path, """
        import time, minidl
        from minidl import distributed as dist
        w = dist.init()
        if w.rank == 1:
            raise RuntimeError("rank 1 fails on purpose")
        t = minidl.tensor([1.0])
        for _ in range(100):
            dist.all_reduce(t)   # waits for rank 1, which never comes
            time.sleep(0.1)
    """, timeout=60, check=False)
    assert out.returncode != 0
    assert time.perf_counter() - start < 30
    assert "rank 1 fails on purpose" in out.stderr and "MPI_Abort" in out.stderr


@needs_mpi
def test_a_rank_that_hangs_makes_the_others_time_out_with_an_error(tmp_path):
    start = time.perf_counter()
    out = launch(tmp_path, """
        import time, minidl
        from minidl import distributed as dist
        w = dist.init()
        if w.rank == 1:
            time.sleep(60)
        dist.all_reduce(minidl.tensor([1.0]))
    """, timeout=60, check=False, env={"MINIDL_DIST_TIMEOUT": "2"})
    assert out.returncode != 0
    assert time.perf_counter() - start < 30
    assert "TimeoutError" in out.stderr and "MINIDL_DIST_TIMEOUT" in out.stderr


def test_a_leafs_hook_runs_as_soon_as_its_gradient_is_final():
    """The hook DistributedDataParallel needs: the last layer's gradient is ready before the first's backward."""
    a, b = minidl.randn(3, 4, requires_grad=True), minidl.randn(4, 2, requires_grad=True)
    seen = []
    b.register_post_accumulate_grad_hook(lambda t: seen.append(("b", a.grad is None, t.grad is not None)))
    handle = a.register_post_accumulate_grad_hook(lambda t: seen.append(("a", True, t.grad is not None)))
    x = minidl.randn(5, 3)
    ((x @ a).relu() @ b).sum().backward()
    assert seen == [("b", True, True), ("a", True, True)]   # b's hook ran while a had no gradient yet
    handle.remove()
    shared = minidl.randn(3, requires_grad=True)            # a leaf used twice: the hook waits for both uses
    counts = []
    shared.register_post_accumulate_grad_hook(lambda t: counts.append(t.grad.numpy().copy()))
    (shared * 2 + shared * 3).sum().backward()
    assert len(counts) == 1 and np.allclose(counts[0], 5)


def _tabular_example(tmp_path, n):
    from minidl.tabular import synthetic_adult
    synthetic_adult(800, seed=4).to_csv(tmp_path / "adult.csv", index=False)
    cmd = [sys.executable, str(ROOT / "examples" / "tabular.py"), "--distributed", "--data", str(tmp_path),
           "--epochs", "1"]
    cmd = cmd if n is None else [_mpiexec(), "-n", str(n)] + cmd
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_example_with_distributed_in_a_single_process_is_a_world_of_one(tmp_path):
    out = _tabular_example(tmp_path, None)
    assert "world size: 1" in out and "valid accuracy" in out


@needs_mpi
def test_an_example_on_two_ranks_prints_once(tmp_path):
    out = _tabular_example(tmp_path, 2)
    assert out.count("world size: 2") == 1 and out.count("valid accuracy") == 1 and out.count("epoch ") == 1


def test_sync_batchnorm_is_batchnorm_in_a_world_of_one():
    minidl.set_seed(0)
    model = minidl.nn.Sequential(minidl.nn.Linear(3, 4), minidl.nn.BatchNorm1d(4))
    x = minidl.randn(6, 3)
    expected = model(x).numpy()
    weight = model[1].weight
    minidl.nn.convert_sync_batchnorm(model)
    assert isinstance(model[1], minidl.nn.SyncBatchNorm) and model[1].weight is weight
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-6)
    assert set(model.state_dict()) == {"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                                       "1.running_var", "1.num_batches_tracked"}
