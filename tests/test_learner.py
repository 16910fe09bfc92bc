"""The Learner end to end: training reaches accuracy, lr_find restores, checkpoints resume exactly."""
import math
import os
from collections import OrderedDict

import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl.data import ArrayDataset, DataLoaders
from minidl.io import CheckpointError
from minidl.learn import (Callback, CancelBatchException, CancelFitException, CancelStepException,
                          EarlyStoppingCallback, F1Score, Learner, SaveModelCallback, accuracy, error_rate,
                          rmse)
from minidl.optim.schedule import one_cycle


# ---------------------------------------------------------------- synthetic problems

def xor_like(n=2000, seed=0):
    """Two classes split by a curved boundary: a linear model cannot get far."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] + 0.5 * x[:, 2] > 0).astype(np.int64)
    cut = int(n * 0.8)
    return DataLoaders.from_dsets(ArrayDataset(x[:cut], y[:cut]), ArrayDataset(x[cut:], y[cut:]), bs=64)


def mlp(dropout=0.0):
    return nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.BatchNorm1d(32), nn.Dropout(dropout), nn.Linear(32, 2))


def bars(n=320, seed=0):
    """8x8 images holding a horizontal (class 0) or a vertical (class 1) bar, plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.3, (n, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 2, n)
    for i in range(n):
        k = rng.integers(1, 7)
        if y[i] == 0:
            x[i, 0, k, 1:7] += 1.5
        else:
            x[i, 0, 1:7, k] += 1.5
    cut = int(n * 0.75)
    return DataLoaders.from_dsets(ArrayDataset(x[:cut], y[:cut]), ArrayDataset(x[cut:], y[cut:]), bs=32)


def small_cnn():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 2))


def weights(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ---------------------------------------------------------------- training reaches a set accuracy

def test_mlp_reaches_accuracy_with_fit_one_cycle(tmp_path, capsys):
    minidl.set_seed(0)
    learn = Learner(xor_like(), mlp(), metrics=[accuracy, error_rate], path=tmp_path)
    learn.fit_one_cycle(5, 1e-2)
    loss, acc, err = learn.validate()
    assert acc >= 0.92 and abs(acc + err - 1) < 1e-9
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["epoch", "train_loss", "valid_loss", "accuracy", "error_rate", "time"]
    assert [line.split()[0] for line in out[1:6]] == ["0", "1", "2", "3", "4"]
    assert learn.recorder.values[-1][1] == pytest.approx(loss)


def test_small_cnn_reaches_accuracy(tmp_path):
    minidl.set_seed(0)
    learn = Learner(bars(), small_cnn(), metrics=accuracy, path=tmp_path)
    learn.fit_one_cycle(4, 2e-2)
    assert learn.validate()[1] >= 0.95


def test_regression_picks_mse_and_reports_rmse(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], dtype=np.float32) + 0.1 * rng.standard_normal(600)).astype(np.float32)
    dls = DataLoaders.from_dsets(ArrayDataset(x[:500], y[:500, None]), ArrayDataset(x[500:], y[500:, None]), bs=50)
    minidl.set_seed(0)
    learn = Learner(dls, nn.Linear(3, 1), metrics=rmse, path=tmp_path)
    assert type(learn.loss_func).__name__ == "MSELossFlat"
    learn.fit_one_cycle(6, 0.1)
    loss, value = learn.validate()
    assert value == pytest.approx(math.sqrt(loss), rel=1e-4)  # rmse over the whole set = sqrt(mse)
    assert value < 0.2


# ---------------------------------------------------------------- the schedule the Learner runs

def test_one_cycle_through_the_learner_follows_fastai(tmp_path):
    learn = Learner(xor_like(), mlp(), path=tmp_path)
    learn.show_progress = False
    learn.fit_one_cycle(2, lr_max=1e-2, pct_start=0.25)
    lrs, moms = learn.recorder.lrs, learn.recorder.moms
    n = len(lrs)
    sched = one_cycle([1e-2], pct_start=0.25)
    expected = [sched["lr"](i / n)[0] for i in range(n)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    assert lrs[0] == pytest.approx(1e-2 / 25)
    assert max(lrs) == pytest.approx(1e-2, rel=1e-2)
    assert moms[0] == pytest.approx(0.95) and min(moms) == pytest.approx(0.85, abs=1e-3)
    assert learn.opt.param_groups[0]["lr"] == pytest.approx(sched["lr"]((n - 1) / n)[0])


# ---------------------------------------------------------------- lr_find

def test_lr_find_leaves_model_optimizer_and_rng_bit_identical(tmp_path):
    minidl.set_seed(1)
    learn = Learner(xor_like(), mlp(dropout=0.2), path=tmp_path)
    learn.show_progress = False
    learn.fit(1, lr=1e-3)                               # the optimizer now has state (Adam moments)
    before_model, before_opt = weights(learn.model), learn.opt.state_dict()
    before_rng = minidl.random.generator().bit_generator.state
    suggestions = learn.lr_find(num_it=30)
    assert_same_weights(before_model, weights(learn.model))
    after_opt = learn.opt.state_dict()
    assert after_opt["param_groups"] == before_opt["param_groups"]
    for k, state in before_opt["state"].items():
        for name, value in state.items():
            np.testing.assert_array_equal(value, after_opt["state"][k][name])
    assert minidl.random.generator().bit_generator.state == before_rng
    assert 1e-7 <= suggestions.valley <= 10 and 1e-7 <= suggestions.steep <= 10
    assert 1e-8 <= suggestions.minimum <= 1   # a tenth of the rate at the lowest loss
    assert os.path.exists(tmp_path / "lr_find.png")


def test_training_after_lr_find_is_the_same_as_without(tmp_path):
    runs = []
    for use_lr_find in (False, True):
        minidl.set_seed(2)
        learn = Learner(xor_like(), mlp(dropout=0.1), path=tmp_path)
        learn.show_progress = False
        if use_lr_find:
            learn.lr_find(num_it=20, plot=None)
        learn.fit_one_cycle(1, 1e-2)
        runs.append(weights(learn.model))
    assert_same_weights(*runs)


def test_lr_find_stops_when_the_loss_diverges(tmp_path):
    minidl.set_seed(0)
    learn = Learner(xor_like(), mlp(), path=tmp_path)
    learn.lr_find(start_lr=1e-5, end_lr=1e4, num_it=100, plot=None)
    recorded = len(learn.recorder.lrs)
    assert recorded < 100
    assert learn.recorder.smooth_losses[-1] > 4 * min(learn.recorder.smooth_losses)
    assert learn.opt is None  # there was no optimizer before: there is none after


# ---------------------------------------------------------------- checkpoints

class StopAfter(Callback):
    order = 80

    def __init__(self, epoch):
        self.stop_epoch = epoch

    def after_epoch(self):
        if self.epoch == self.stop_epoch:
            raise CancelFitException()


@pytest.mark.parametrize("loader_seed", [None, 7])
def test_resuming_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path, loader_seed):
    def make(seed):
        minidl.set_seed(seed)
        dls = xor_like()
        dls.train.seed = loader_seed
        learn = Learner(dls, mlp(dropout=0.2), path=tmp_path, metrics=accuracy)
        learn.show_progress = False
        return learn

    uninterrupted = make(3)
    uninterrupted.fit_one_cycle(4, 1e-2)

    interrupted = make(3)
    interrupted.fit_one_cycle(4, 1e-2, cbs=[SaveModelCallback(every_epoch=True, with_opt=True), StopAfter(1)])
    assert (tmp_path / "models" / "model_1.ckpt").exists()

    resumed = make(99)                                   # other initial weights: the checkpoint must set them
    resumed.load("model_1")
    assert resumed.epochs_done == 2
    resumed.fit_one_cycle(4, 1e-2, start_epoch=resumed.epochs_done)
    assert_same_weights(weights(uninterrupted.model), weights(resumed.model))


def test_state_dict_round_trip_through_a_checkpoint(tmp_path):
    minidl.set_seed(0)
    learn = Learner(bars(), small_cnn(), path=tmp_path)
    learn.show_progress = False
    learn.fit(1, lr=1e-3)
    path = learn.save("cnn")
    other = Learner(bars(), small_cnn(), path=tmp_path).load("cnn")
    assert_same_weights(weights(learn.model), weights(other.model))
    x = bars().valid.one_batch()[0]
    learn.model.eval(), other.model.eval()
    np.testing.assert_array_equal(learn.model(x).numpy(), other.model(x).numpy())
    assert str(path).endswith("cnn.ckpt")


def test_a_bad_checkpoint_gives_a_clear_error(tmp_path):
    learn = Learner(xor_like(), mlp(), path=tmp_path)
    learn.show_progress = False
    learn.fit(1)
    path = learn.save("good")
    (tmp_path / "models" / "junk.ckpt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable minidl checkpoint"):
        learn.load("junk")
    data = open(path, "rb").read()
    (tmp_path / "models" / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        learn.load("truncated")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        learn.load("missing")
    other = nn.Sequential(OrderedDict(body=nn.Linear(6, 32), head=nn.Linear(32, 2)))
    with pytest.raises(RuntimeError, match=r"missing keys.*body.weight.*\n.*unexpected keys.*4.weight"):
        Learner(xor_like(), other, path=tmp_path).load("good")
    with pytest.raises(RuntimeError, match=r"shape mismatches: 0.weight: checkpoint \(32, 6\), model \(2, 6\)"):
        Learner(xor_like(), nn.Sequential(nn.Linear(6, 2)), path=tmp_path).load("good", strict=False)


def test_saving_is_atomic(tmp_path, monkeypatch):
    learn = Learner(xor_like(), mlp(), path=tmp_path)
    learn.save("ckpt")
    before = open(tmp_path / "models" / "ckpt.ckpt", "rb").read()
    real_write = np.lib.format.write_array
    calls = []

    def failing_write(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing_write)
    with minidl.no_grad():
        next(learn.model.parameters()).add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        learn.save("ckpt")
    assert open(tmp_path / "models" / "ckpt.ckpt", "rb").read() == before
    assert os.listdir(tmp_path / "models") == ["ckpt.ckpt"]


# ---------------------------------------------------------------- callbacks and events

def tiny_dls(n_train=4, n_valid=2, bs=2):
    x = np.random.default_rng(0).standard_normal((n_train + n_valid, 6)).astype(np.float32)
    y = np.arange(n_train + n_valid) % 2
    return DataLoaders.from_dsets(ArrayDataset(x[:n_train], y[:n_train]), ArrayDataset(x[n_train:], y[n_train:]), bs=bs)


EVENTS = ["before_fit", "before_epoch", "before_train", "before_batch", "after_pred", "after_loss",
          "before_backward", "after_backward", "before_step", "after_step", "after_batch", "after_train",
          "before_validate", "after_validate", "after_epoch", "after_fit"]


def test_events_run_in_fastai_order(tmp_path):
    events = []
    Logged = type("Logged", (Callback,), {e: (lambda e: lambda self: events.append(e))(e) for e in EVENTS})
    cb = Logged()
    learn = Learner(tiny_dls(), mlp(), cbs=cb, path=tmp_path)
    learn.show_progress = False
    learn.fit(1)
    batch = ["before_batch", "after_pred", "after_loss", "before_backward", "after_backward",
             "before_step", "after_step", "after_batch"]
    valid_batch = ["before_batch", "after_pred", "after_loss", "after_batch"]
    assert events == (["before_fit", "before_epoch", "before_train"] + batch * 2 + ["after_train",
                          "before_validate"] + valid_batch + ["after_validate", "after_epoch", "after_fit"])


def test_cancelling_a_step_leaves_the_weights_and_a_batch_skips_the_model(tmp_path):
    class NoStep(Callback):
        def before_step(self):
            raise CancelStepException()

    learn = Learner(tiny_dls(), mlp(), cbs=NoStep(), path=tmp_path)
    learn.show_progress = False
    before = weights(learn.model)
    learn.model.eval()
    learn.fit(2)
    after = weights(learn.model)
    for k in before:
        if "running" not in k and "num_batches" not in k:
            np.testing.assert_array_equal(before[k], after[k])

    class SkipBatches(Callback):
        def before_batch(self):
            self.learn.calls = getattr(self.learn, "calls", 0) + 1
            raise CancelBatchException()

        def after_pred(self):
            raise AssertionError("the model ran although the batch was cancelled")

    learn = Learner(tiny_dls(), mlp(), cbs=SkipBatches(), path=tmp_path)
    learn.show_progress = False
    learn.fit(1)
    assert learn.calls == 3  # 2 training batches + 1 validation batch, all skipped


def test_early_stopping_and_save_model_keep_the_best(tmp_path, capsys):
    minidl.set_seed(0)
    learn = Learner(xor_like(), mlp(), path=tmp_path, metrics=accuracy,
                    cbs=[EarlyStoppingCallback(patience=2), SaveModelCallback(monitor="accuracy")])
    learn.fit(30, lr=0.0)                      # lr 0: nothing improves after the first epoch
    assert len(learn.recorder.values) == 3     # epoch 0 improves; 1 and 2 do not: stop
    assert "early stopping" in capsys.readouterr().out
    assert (tmp_path / "models" / "model.ckpt").exists()
    with pytest.raises(ValueError, match="cannot monitor 'f1'"):
        Learner(xor_like(), mlp(), path=tmp_path, cbs=EarlyStoppingCallback(monitor="f1")).fit(1)


# ---------------------------------------------------------------- freezing and fine_tune

def two_groups(model):
    return [list(model[0].parameters()) + list(model[2].parameters()), list(model[4].parameters())]


def test_freeze_trains_only_the_head_and_batch_norm(tmp_path):
    minidl.set_seed(0)
    learn = Learner(xor_like(), mlp(), splitter=two_groups, path=tmp_path)
    learn.show_progress = False
    learn.freeze()
    before = weights(learn.model)
    learn.fit(1, lr=1e-2)
    after = weights(learn.model)
    np.testing.assert_array_equal(before["0.weight"], after["0.weight"])       # body: frozen
    assert not np.array_equal(before["2.weight"], after["2.weight"])           # batch norm: trains
    assert not np.array_equal(before["4.weight"], after["4.weight"])           # head: trains
    learn.unfreeze()
    assert all(p.requires_grad for p in learn.model.parameters())


def test_fine_tune_trains_the_head_then_everything_with_discriminative_rates(tmp_path):
    minidl.set_seed(0)
    learn = Learner(xor_like(), mlp(), splitter=two_groups, path=tmp_path, metrics=accuracy)
    learn.show_progress = False
    start_loss = learn.validate()[0]
    phases = []

    class Phase(Callback):
        def before_fit(self):
            phases.append([p.requires_grad for p in self.model[0].parameters()])

        def after_fit(self):
            phases[-1].append([g["lr"] for g in self.opt.param_groups])

    learn.fine_tune(2, base_lr=1e-2, freeze_epochs=1, cbs=[Phase()])
    (frozen_w, frozen_b, first_lrs), (w, b, second_lrs) = phases
    assert not frozen_w and not frozen_b and w and b          # body frozen, then trained
    assert first_lrs[0] == pytest.approx(first_lrs[1] / 10)   # slice(base_lr): hi/10 for the body
    assert second_lrs[0] == pytest.approx(second_lrs[1] / 100)  # lr_mult=100 between body and head
    assert learn.validate()[0] < start_loss


# ---------------------------------------------------------------- metrics and predictions

def test_metrics_over_uneven_batches():
    preds = minidl.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0], [5.0, 1.0]])
    targets = minidl.tensor([0, 1, 1, 1, 1])
    assert accuracy(preds, targets).item() == pytest.approx(0.6)
    metric = F1Score()
    metric.reset()
    metric.accumulate(preds[:3], targets[:3])
    metric.accumulate(preds[3:], targets[3:])
    tp, fp, fn = 2, 0, 2                       # predicted [0, 1, 0, 1, 0]
    assert metric.value == pytest.approx(2 * tp / (2 * tp + fp + fn))
    r = rmse
    r.reset()
    r.accumulate(minidl.tensor([1.0, 2.0, 3.0]), minidl.tensor([1.0, 2.0, 5.0]))
    r.accumulate(minidl.tensor([0.0]), minidl.tensor([2.0]))
    assert r.value == pytest.approx(math.sqrt((4 + 4) / 4))   # not the mean of per-batch roots


def test_get_preds_predict_and_validate(tmp_path):
    minidl.set_seed(0)
    learn = Learner(xor_like(), mlp(), path=tmp_path, metrics=accuracy)
    learn.show_progress = False
    learn.fit_one_cycle(3, 1e-2)
    probs, targets, decoded = learn.get_preds(with_decoded=True)
    assert probs.shape == (400, 2) and targets.shape == (400,)
    np.testing.assert_allclose(probs.numpy().sum(axis=1), 1, rtol=1e-5)
    acc = (decoded.numpy() == targets.numpy()).mean()
    assert acc == pytest.approx(learn.validate()[1])
    x0 = learn.dls.valid.dataset[0][0]
    label, index, p = learn.predict(x0)
    assert int(index.item()) == int(decoded.numpy()[0])
    np.testing.assert_allclose(p.numpy(), probs.numpy()[0], rtol=1e-5)


def test_recorder_plots_are_png_files(tmp_path):
    learn = Learner(xor_like(), mlp(), path=tmp_path)
    learn.show_progress = False
    learn.fit_one_cycle(2, 1e-2)
    for path in (learn.recorder.plot_loss(str(tmp_path / "loss.png")),
                 learn.recorder.plot_sched(str(tmp_path / "sched.png"))):
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- regressions found in review

def quiet(learn):
    learn.show_progress = False
    return learn


def test_fit_without_lr_uses_the_learners_lr_again(tmp_path):
    learn = quiet(Learner(xor_like(), mlp(), path=tmp_path, lr=1e-3))
    learn.fit_one_cycle(1, 1e-2)
    learn.fit(1)
    assert learn.recorder.lrs[0] == pytest.approx(1e-3)


def test_zero_epochs_is_a_no_op(tmp_path):
    learn = quiet(Learner(xor_like(), mlp(), path=tmp_path))
    before = weights(learn.model)
    learn.fit_one_cycle(0)
    assert_same_weights(before, weights(learn.model))


def test_biases_and_batch_norm_get_no_weight_decay_by_default(tmp_path):
    for wd_bn_bias, expect_decay in ((False, False), (True, True)):
        learn = quiet(Learner(xor_like(), mlp(), path=tmp_path, lr=0.5, wd=0.1, wd_bn_bias=wd_bn_bias))
        learn.create_opt()
        with minidl.no_grad():
            learn.model[2].bias.fill_(1.0)                 # batch norm's bias starts at 0: give it something to decay
        for p in learn.model.parameters():
            p.grad = minidl.zeros_like(p)              # no gradient: only weight decay can move them
        before = weights(learn.model)
        learn.opt.step()
        after = weights(learn.model)
        assert not np.array_equal(before["0.weight"], after["0.weight"])          # weights always decay
        for name in ("0.bias", "2.weight", "2.bias"):
            assert np.array_equal(before[name], after[name]) != expect_decay, name


def test_the_last_row_is_printed_when_early_stopping_ends_the_fit(tmp_path, capsys):
    learn = Learner(xor_like(), mlp(), path=tmp_path, cbs=EarlyStoppingCallback(patience=1))
    learn.fit(5, lr=0.0)
    rows = [line for line in capsys.readouterr().out.splitlines() if line[:1].isdigit()]
    assert len(rows) == len(learn.recorder.values) == 2


def test_get_preds_on_the_training_set_keeps_dataset_order_and_the_rng(tmp_path):
    learn = quiet(Learner(xor_like(), mlp(), path=tmp_path))
    state = minidl.random.generator().bit_generator.state
    _, targets = learn.get_preds(ds_idx=0)
    assert minidl.random.generator().bit_generator.state == state
    np.testing.assert_array_equal(targets.numpy(), learn.dls.train.dataset.arrays[1])


def test_lr_find_restores_show_progress_and_needs_enough_points(tmp_path):
    learn = quiet(Learner(xor_like(), mlp(), path=tmp_path))
    learn.lr_find(num_it=20, plot=None)
    assert learn.show_progress is False
    with pytest.raises(ValueError, match="usable points"):
        learn.lr_find(num_it=4, plot=None)


def test_inference_without_validation_data_names_the_problem(tmp_path):
    dls = xor_like()
    dls.valid = None
    learn = quiet(Learner(dls, mlp(), path=tmp_path))
    with pytest.raises(ValueError, match="no validation data"):
        learn.validate()
    with pytest.raises(ValueError, match="no validation data"):
        learn.get_preds()
    with pytest.raises(ValueError, match="validation set"):
        learn.fit(1, cbs=EarlyStoppingCallback())


def test_freeze_on_a_single_group_freezes_nothing_as_fastai(tmp_path):
    learn = Learner(xor_like(), mlp(), path=tmp_path)
    learn.freeze()        # fine_tune on a collab model: its "frozen" epoch trains the whole model
    assert all(p.requires_grad for p in learn.model.parameters())
    with pytest.raises(ValueError, match=r"freeze_to\(1\): the model has 1 parameter group.*nothing would train"):
        learn.freeze_to(1)
    assert all(p.requires_grad for p in learn.model.parameters())


def test_float64_data_for_a_float32_model_is_caught_at_construction(tmp_path):
    x = np.random.default_rng(0).standard_normal((100, 6))          # float64
    dls = DataLoaders.from_dsets(ArrayDataset(x, np.arange(100) % 2), bs=10)
    with pytest.raises(TypeError, match="float64 but the model's parameters are float32"):
        Learner(dls, mlp(), path=tmp_path)


def test_predict_decodes_probabilities_not_logits(tmp_path):
    x = np.random.default_rng(0).standard_normal((64, 6)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    dls = DataLoaders.from_dsets(ArrayDataset(x, y), ArrayDataset(x, y), bs=16)
    model = nn.Linear(6, 1)
    learn = quiet(Learner(dls, model, loss_func=nn.BCEWithLogitsLossFlat(), path=tmp_path))
    with minidl.no_grad():
        model.weight.zero_()
        model.bias.fill_(0.3)                               # logit 0.3: probability 0.574 > 0.5
    _, decoded, probs = learn.predict(x[0])
    assert bool(decoded.item()) and probs.item() == pytest.approx(1 / (1 + math.exp(-0.3)), rel=1e-5)
    assert learn.get_preds(with_decoded=True)[2].numpy().all()


def test_lr_find_suggestions_follow_fastais_formulas():
    from minidl.learn import steep, valley
    lrs = np.geomspace(1e-5, 1, 40)
    losses = np.concatenate([np.full(10, 2.0) + np.linspace(0, 0.05, 10), np.linspace(2.0, 0.5, 20),
                             np.linspace(0.5, 3.0, 10)])
    # fastai's loops, written out
    n, lds, max_start, max_end = len(losses), [1] * len(losses), 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end, max_start = i, i - lds[i]
    sections = (max_end - max_start) / 3
    assert valley(lrs, losses) == lrs[max_start + int(sections) + int(sections / 2)]
    grads = (losses[1:] - losses[:-1]) / (np.log(lrs[1:]) - np.log(lrs[:-1]))
    assert steep(lrs, losses) == lrs[grads.argmin()]


def test_f1_thresholds_logits_through_the_sigmoid():
    metric = F1Score()
    metric.reset()
    metric.accumulate(minidl.tensor([[0.3], [0.3], [-2.0]]), minidl.tensor([1, 1, 0]))
    assert metric.value == 1.0
