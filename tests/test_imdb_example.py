"""examples/imdb.py end to end at toy sizes on made-up reviews: the sources pooled without duplicates, the test
set kept out of everything else, ULMFiT's two steps, and the accuracies it ends with."""
import importlib.util
import pathlib

import numpy as np
import pandas as pd
import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "imdb.py"
SMALL = ["--emb", "64", "--hidden", "96", "--bs", "16", "--bptt", "16", "--max-len", "40", "--lm-epochs", "2",
         "--epochs", "5", "--lr", "2e-2", "--lm-lr", "1e-2"]


def load():
    spec = importlib.util.spec_from_file_location("imdb_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def made_up_reviews(n, seed):
    """The example's synthetic reviews ("The plot was superb. The cast felt dull. ..."), each starting with its
    own number: a language model learns their pattern, and to tell the two kinds apart, in seconds."""
    return load().synthetic_reviews(n, seed, prefix="Review {seed}-{k}. ")


@pytest.fixture
def data(tmp_path):
    """imdb_reviews/reviews.csv (600 reviews) and imdb_sample/texts.csv (40, 10 of them also in reviews.csv)."""
    reviews = made_up_reviews(600, seed=0)
    (tmp_path / "imdb_reviews").mkdir()
    reviews.to_csv(tmp_path / "imdb_reviews" / "reviews.csv", index=False)
    sample = pd.concat([reviews[:10], made_up_reviews(30, seed=1)])
    (tmp_path / "imdb_sample").mkdir()
    pd.DataFrame({"label": sample.sentiment, "text": sample.review, "is_valid": False}).to_csv(
        tmp_path / "imdb_sample" / "texts.csv", index=False)
    return tmp_path


@pytest.mark.parametrize("schedule", [["--gradual", "--lr", "5e-2"],  # (its later groups train at lr / 2 / 2.6^k)
                                      ["--no-gradual"]])
def test_ulmfit_on_pooled_reviews_with_a_held_out_test_set(data, tmp_path, capsys, monkeypatch, schedule):
    monkeypatch.chdir(tmp_path)
    valid_accuracy, test_accuracy = load().main(["--data", str(data), "--hold-out", "100", "--out", "out", *SMALL,
                                                 *schedule])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].endswith("630 distinct reviews: 424 to train on, 106 to validate, 100 to test (held out)")
    assert "epoch       train_loss  valid_loss  accuracy    perplexity  time" in out    # (a) the language model
    assert (tmp_path / "out" / "models" / "imdb_encoder.ckpt").is_file()
    predicted = [line.rsplit(": ", 1)[0] for line in out if line.startswith("predict(")]
    assert predicted == [f"predict({text!r})" for text in ("I really liked that movie!",
                                                          "A dull, predictable film: two hours I will never get back.")]
    assert out[-2:] == [f"valid accuracy {valid_accuracy:.4f}", f"test accuracy {test_accuracy:.4f}"]
    assert valid_accuracy >= 0.8 and test_accuracy >= 0.8                       # chance: 0.5


def test_a_test_file_is_taken_out_of_the_pool(data, tmp_path, capsys):
    test = made_up_reviews(600, seed=0)[100:130]                                 # 30 reviews of reviews.csv
    test.to_csv(tmp_path / "test.csv", index=False)
    _, test_accuracy = load().main(["--data", str(data), "--test", str(tmp_path / "test.csv"), "--no-lm",
                                    "--out", str(tmp_path / "out"), *SMALL, "--epochs", "3"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].endswith(f"630 distinct reviews: 480 to train on, 120 to validate, 30 to test "
                           f"(from {tmp_path / 'test.csv'})")
    assert "perplexity" not in "".join(out) and out[-1] == f"test accuracy {test_accuracy:.4f}"
    assert test_accuracy >= 0.8


def test_the_ensemble_averages_a_forwards_and_a_backwards_classifier(data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    valid_accuracy, test_accuracy = load().main(["--data", str(data), "--hold-out", "100", "--out", "out", "--no-lm",
                                                 *SMALL, "--epochs", "3", "--ensemble"])
    out = capsys.readouterr().out.strip().splitlines()
    assert sum(line.startswith("epoch ") for line in out) == 2                  # two classifiers trained
    each = {line.split(":")[0].strip(): float(line.rsplit(" ", 1)[1]) for line in out if line.startswith("  ")}
    assert set(each) == {"forwards", "backwards"} and min(each.values()) >= 0.8   # each read its own way, learnt
    assert out[-2:] == [f"valid accuracy {valid_accuracy:.4f}", f"test accuracy {test_accuracy:.4f}"]
    assert test_accuracy >= 0.8


def test_bad_rows_and_missing_data_are_named(data, tmp_path):
    example = load()
    pd.DataFrame({"review": ["fine film", "awful"], "sentiment": ["positive", "meh"]}).to_csv(
        data / "imdb_reviews" / "reviews.csv", index=False)
    with pytest.raises(ValueError, match=r"imdb_reviews/reviews\.csv, row 1: the sentiment is 'meh'"):
        example.main(["--data", str(data), *SMALL])
    pd.DataFrame({"review": ["fine film", " "], "sentiment": ["positive", "negative"]}).to_csv(
        data / "imdb_reviews" / "reviews.csv", index=False)
    with pytest.raises(ValueError, match=r"reviews\.csv, row 1: the review is empty"):
        example.main(["--data", str(data), *SMALL])
    with pytest.raises(SystemExit, match=r"(?s)no reviews in .*empty \(none of imdb_reviews/reviews\.csv.*Fix: "):
        example.main(["--data", str(tmp_path / "empty"), *SMALL])


def test_offline_it_trains_on_a_synthetic_stand_in_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINIDL_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("MINIDL_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    valid_accuracy, _ = load().main(["--no-download", "--no-lm", "--limit", "300", "--hold-out", "100",
                                     "--out", "out", *SMALL, "--epochs", "3"])
    captured = capsys.readouterr()
    assert "SYNTHETIC stand-in" in captured.err and "synthetic stand-in (no data found)" in captured.out
    assert valid_accuracy >= 0.8                                                 # chance: 0.5
