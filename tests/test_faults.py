"""Nothing silent: a NaN loss, an interrupt, a thread count that would crash, an edit autograd cannot
see, an unreadable file given for prediction, a failing transform. Each ends in a clear error or a
correct result, never a silent wrong number (issue [2/7]; the data, tabular and checkpoint faults
have tests of their own: test_external.py, test_tabular_faults.py, test_io_faults.py)."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import minidl
import minidl.nn as nn
from minidl.data import ArrayDataset, DataLoaders
from minidl.learn import Callback, Learner, NonFiniteLossError, accuracy
from minidl.vision import ImageDataLoaders, Resize, get_image_files
from minidl.vision.data import UnreadableImageError


def blobs(n=400, seed=0, nan_in_valid=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    if nan_in_valid:
        x[-3, 2] = np.nan
    cut = int(0.8 * n)
    return DataLoaders.from_dsets(ArrayDataset(x[:cut], y[:cut]), ArrayDataset(x[cut:], y[cut:]), bs=32)


def model():
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))


# ---------------------------------------------------------------------- a loss that is not a number
def test_a_diverging_loss_stops_training_with_what_to_try(tmp_path):
    minidl.set_seed(0)
    learn = Learner(blobs(), model(), metrics=accuracy, lr=1e6, path=tmp_path)
    with pytest.raises(NonFiniteLossError) as info:
        learn.fit(3)
    message = str(info.value)
    assert "the training loss is" in message and "at epoch 0, batch" in message
    assert "the last finite training loss was" in message and "a lower learning rate (it is 1e+06 now" in message
    assert "learn.remove_cbs(learn.terminate_on_nan)" in message
    assert all(np.isfinite(p.numpy()).all() for p in learn.model.parameters())   # no NaN step was taken
    assert all(p.grad is None for p in learn.model.parameters()) and not learn.model.training


def test_a_nan_in_the_validation_data_is_named_too(tmp_path):
    """The same fault arriving another way: training is fine, one validation row holds a NaN."""
    minidl.set_seed(0)
    learn = Learner(blobs(nan_in_valid=True), model(), metrics=accuracy, lr=1e-2, path=tmp_path)
    with pytest.raises(NonFiniteLossError, match=r"the validation loss is nan at epoch 0, batch 2 \(of 3\)"):
        learn.fit(1)


def test_the_nan_check_can_be_turned_off(tmp_path, capsys):
    minidl.set_seed(0)
    learn = Learner(blobs(), model(), lr=1e6, path=tmp_path)
    learn.remove_cbs(learn.terminate_on_nan)
    learn.fit(1)                                       # the user asked for it: the table says nan
    assert "nan" in capsys.readouterr().out


def test_lr_find_still_ends_its_sweep_at_a_diverging_loss(tmp_path):
    minidl.set_seed(0)
    learn = Learner(blobs(), model(), path=tmp_path)
    suggestions = learn.lr_find(end_lr=1e8, num_it=60, plot=None)
    assert np.isfinite(suggestions.valley) and all(np.isfinite(learn.recorder.smooth_losses))


# ---------------------------------------------------------------------- an interrupt
class InterruptAfterBackward(Callback):
    def __init__(self, exception):
        self.exception = exception

    def after_backward(self):
        if self.train_iter == 2:
            raise self.exception


@pytest.mark.parametrize("exception", [KeyboardInterrupt(), RuntimeError("a callback failed")],
                         ids=["ctrl-c", "a-callback-error"])
def test_an_interrupt_between_backward_and_step_leaves_no_stale_gradient(tmp_path, exception):
    minidl.set_seed(0)
    learn = Learner(blobs(), model(), lr=1e-2, path=tmp_path)
    ran = []

    class Witness(Callback):
        def after_fit(self):
            ran.append("after_fit")

    with pytest.raises(type(exception)):
        learn.fit(1, cbs=[InterruptAfterBackward(exception), Witness()])
    assert ran == ["after_fit"] and not learn.model.training
    assert all(p.grad is None for p in learn.model.parameters())
    # The next fit's first step is the same as a fresh learner's from the same weights.
    state = {k: v.numpy().copy() for k, v in learn.model.state_dict().items()}
    fresh = Learner(blobs(), model(), lr=1e-2, path=tmp_path)
    fresh.model.load_state_dict(state)
    for lrn in (learn, fresh):
        lrn.opt = None
        minidl.set_seed(1)
        lrn.fit(1, cbs=[StopAfterOneStep()])
    for a, b in zip(learn.model.parameters(), fresh.model.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


class StopAfterOneStep(Callback):
    def after_step(self):
        from minidl.learn import CancelFitException
        raise CancelFitException()


# ---------------------------------------------------------------------- threads
def test_set_num_threads_is_bounded_with_the_reason():
    before = minidl.get_num_threads()
    with pytest.raises(ValueError, match=r"100000 threads is more than minidl allows here \(\d+: 4 per core"):
        minidl.set_num_threads(100000)
    assert minidl.get_num_threads() == before
    minidl.set_num_threads(minidl.max_threads())      # the bound itself is allowed
    minidl.set_num_threads(before)


def test_omp_num_threads_too_large_is_capped_at_import():
    """The same fault arriving through the environment: libgomp would crash at the first kernel."""
    code = ("import minidl; a = minidl.randn(200, 200); (a @ a).numpy(); "
            "print(minidl.get_num_threads(), minidl.max_threads())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={"OMP_NUM_THREADS": "100000", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    used, bound = map(int, result.stdout.split())
    assert used == bound and "OMP_NUM_THREADS asks for 100000 threads" in result.stderr


# ---------------------------------------------------------------------- edits autograd cannot see
def test_numpy_of_a_tensor_that_requires_grad_is_read_only():
    w = minidl.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = (w * w).sum()                                   # saves w for backward
    with pytest.raises(ValueError, match="read-only"):
        w.numpy()[0] = 100.0
    with pytest.raises(ValueError, match="read-only"):
        np.asarray(w)[1] = 100.0                        # the same array by another door
    y.backward()
    np.testing.assert_array_equal(w.grad.numpy(), [2.0, 4.0, 6.0])
    w.detach().numpy()[0] = 5.0                         # the documented way out of autograd
    assert w.numpy()[0] == 5.0


def test_numpy_of_an_intermediate_result_is_read_only():
    """A variant: a tensor made by an op (saved by the next op) rather than a leaf."""
    x = minidl.tensor([[1.0, -2.0]], requires_grad=True)
    h = minidl.relu(x)
    y = (h * h).sum()
    with pytest.raises(ValueError, match="read-only"):
        h.numpy()[0, 0] = 0.0
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[2.0, 0.0]])


# ---------------------------------------------------------------------- files given for prediction
@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(8):
        for label in ("red", "blue"):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(folder / f"{label}.{k}.png")
    return folder


def test_test_dl_refuses_an_unreadable_file_by_name(photos, tmp_path):
    dls = ImageDataLoaders.from_name_func(photos, get_image_files(photos), lambda n: n.split(".")[0],
                                          valid_pct=0.25, seed=0, item_tfms=Resize(8), bs=4)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    files = get_image_files(photos)[:3] + [broken]
    with pytest.raises(UnreadableImageError, match=f"{broken}: not a readable image.*skip_bad=True"):
        list(dls.test_dl(files))
    kept = dls.test_dl(files, skip_bad=True)
    assert sum(len(b[0]) for b in kept) == 3 and list(kept.dataset.bad_files) == [broken]


def test_a_failing_item_transform_names_the_file(photos):
    class Explodes:
        order = 0

        def __call__(self, image, train):
            raise ZeroDivisionError("division by zero")

    dls = ImageDataLoaders.from_name_func(photos, get_image_files(photos), lambda n: n.split(".")[0],
                                          valid_pct=0.25, seed=0, item_tfms=[Resize(8), Explodes()], bs=4,
                                          num_workers=2)
    with pytest.raises(RuntimeError, match=r"failed on .*photos/(red|blue)\.\d+\.png \(ZeroDivisionError"):
        dls.train.one_batch()


def test_predict_on_an_unreadable_file_names_it(photos, tmp_path):
    """The same fault arriving another way: one file given to learn.predict rather than to test_dl."""
    from minidl.vision import vision_learner
    from minidl.vision.models import resnet18
    dls = ImageDataLoaders.from_name_func(photos, get_image_files(photos), lambda n: n.split(".")[0],
                                          valid_pct=0.25, seed=0, item_tfms=Resize(8), bs=4)
    learn = vision_learner(dls, resnet18, pretrained=False, path=tmp_path)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"GIF89a but not really")
    with pytest.raises(OSError, match=str(broken)):
        learn.predict(broken)
