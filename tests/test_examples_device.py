"""`--device cpu|cuda|emu` on every example: parsed, carried to the loaders and the Learner, and trained on.

Three levels, cheapest first:

* every example parses ``--device emu`` (and refuses an unknown device, naming the three);
* every example builds its loaders and its Learner on the device: the first ``fit`` finds the
  batches, the model and the decoding threads there (``fit`` is stopped right there, so this
  runs in seconds even on "emu");
* the smallest full run of each example on "emu" (the CUDA kernels on the CPU). The autograd
  tour runs always; the others take minutes on "emu" and are marked slow (``--runslow``).
"""
import argparse
import importlib.util
import pathlib

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
NAMES = ["00_autograd_tour", "01_learner_tour", "tabular", "collab", "pets", "camvid", "imdb", "bytes_as_images"]


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Parsed(Exception):
    """Raised by the patched parse_args: the example stops right after parsing its arguments."""


@pytest.mark.parametrize("name", NAMES)
def test_every_example_parses_device(name, monkeypatch):
    parse = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        raise Parsed(parse(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    example = load(name)
    with pytest.raises(Parsed) as parsed:
        example.main(["--device", "emu"])
    assert parsed.value.args[0].device == "emu"
    with pytest.raises(Parsed) as parsed:
        example.main([])
    assert parsed.value.args[0].device == "cpu"          # the default: the CPU kernels


@pytest.mark.parametrize("name", NAMES)
def test_an_unknown_device_is_refused_with_the_choices(name, capsys):
    with pytest.raises(SystemExit):
        load(name).main(["--device", "tpu"])
    err = capsys.readouterr().err
    assert "--device: invalid choice: 'tpu'" in err and "'cpu', 'cuda', 'emu'" in err


# ---------------------------------------------------------------- small data, made here (no download)

@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No data folder and no cache: the examples use their synthetic stand-ins or the files given."""
    monkeypatch.setenv("MINIDL_DATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("MINIDL_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def adult_folder(root, rows=400):
    from minidl.tabular import synthetic_adult
    root.mkdir(exist_ok=True)
    synthetic_adult(rows, seed=4).to_csv(root / "adult.csv", index=False)
    return root


def movielens_folder(root, users=40, items=30):
    """A tiny ml-latest-small: ratings.csv and movies.csv."""
    root.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    with open(root / "ratings.csv", "w") as f:
        f.write("userId,movieId,rating,timestamp\n")
        for u in range(1, users + 1):
            for i in rng.choice(items, 8, replace=False) + 1:
                f.write(f"{u},{i},{rng.integers(1, 11) / 2},0\n")
    with open(root / "movies.csv", "w") as f:
        f.write("movieId,title,genres\n" + "".join(f"{i},Movie {i} (2000),Drama\n" for i in range(1, items + 1)))
    return root


def small_run(name, root, device):
    """The smallest settings of each example that still train a few batches and score them."""
    out = str(pathlib.Path(root or ".") / f"out-{name}")
    args = {
        "00_autograd_tour": lambda: ["--epochs", "1", "--points", "32", "--hidden", "8"],
        "01_learner_tour": lambda: ["--epochs", "1", "--out", out],
        "tabular": lambda: ["--data", str(adult_folder(root / "adult")), "--limit", "160", "--epochs", "1",
                            "--bs", "32"],
        "collab": lambda: ["--data", str(movielens_folder(root / "ml")), "--limit", "160", "--epochs", "1",
                           "--bs", "32", "--factors", "4", "--out", out],
        "pets": lambda: ["--no-download", "--limit", "12", "--size", "32", "--bs", "4", "--epochs", "1",
                         "--out", out],
        "camvid": lambda: ["--no-download", "--limit", "4", "--size", "24", "--bs", "2", "--freeze-epochs", "1",
                           "--epochs", "1", "--out", out],
        "imdb": lambda: ["--no-download", "--no-lm", "--limit", "40", "--hold-out", "8", "--epochs", "1",
                         "--bs", "8", "--emb", "8", "--hidden", "8", "--layers", "1", "--max-len", "32",
                         "--bptt", "16", "--out", out],
        "bytes_as_images": lambda: ["--n", "5", "--size", "32", "--bs", "4", "--epochs", "1", "--out", out],
    }[name]()
    return args + ["--device", device]


class FitReached(Exception):
    """Raised by the patched Learner.fit: the example got as far as training."""


@pytest.mark.parametrize("name", [n for n in NAMES if n != "00_autograd_tour"])   # the tour has no Learner
def test_the_device_reaches_the_loaders_and_the_learner(name, offline, monkeypatch):
    from minidl.learn import Learner
    seen = {}

    def fit_and_stop(learn, *args, **kwargs):
        seen["loaders"] = [dl.device for dl in (learn.dls.train, learn.dls.valid) if dl is not None]
        seen["params"] = {p.device for p in learn.model.parameters()}
        seen["workers"] = getattr(learn.dls.train, "num_workers", None)
        raise FitReached

    monkeypatch.setattr(Learner, "fit", fit_and_stop)
    with pytest.raises(FitReached):
        load(name).main(small_run(name, offline, "emu"))
    assert seen["loaders"] and set(seen["loaders"]) == {"emu"}
    assert seen["params"] == {"emu"}
    if name in ("pets", "camvid", "bytes_as_images"):   # decoding threads: 2 beside CPU kernels ("emu" is one)
        assert seen["workers"] == 2


def test_decode_workers_grow_for_a_gpu():
    from minidl.data import decode_workers
    assert decode_workers("cpu", cpu_count=16) == decode_workers("emu", cpu_count=16) == 2
    assert decode_workers("cuda", cpu_count=16) == 15 and decode_workers("cuda", cpu_count=64) == 16
    assert decode_workers("cuda", cpu_count=2) == 2


# ---------------------------------------------------------------- whole (tiny) runs on the emulated GPU

def test_autograd_tour_trains_on_emu(capsys):
    accuracy = load("00_autograd_tour").main(small_run("00_autograd_tour", None, "emu"))
    out = capsys.readouterr().out
    assert "on 'emu'" in out and "epoch   1" in out and 0 <= accuracy <= 1


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("name", [n for n in NAMES if n != "00_autograd_tour"])
def test_example_trains_on_emu(name, offline, capsys, monkeypatch):
    if name == "01_learner_tour":   # its data is the README's; only lr_find's sweep is cut short (100 -> 12 steps)
        import functools
        from minidl.learn import Learner
        monkeypatch.setattr(Learner, "lr_find", functools.partialmethod(Learner.lr_find, num_it=12))
    result = load(name).main(small_run(name, offline, "emu"))
    out = capsys.readouterr().out
    assert "train_loss" in out      # the Learner's table: at least one epoch trained and validated
    assert result is not None
