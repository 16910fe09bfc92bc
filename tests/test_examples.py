"""The examples run and reach their targets (fewer epochs than the demo, same code)."""
import importlib.util
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", [0, 1])
def test_autograd_tour_learns_spirals(seed, capsys):
    accuracy = load("00_autograd_tour").main(["--epochs", "15", "--seed", str(seed)])
    assert accuracy >= 0.98
    assert "epoch  15" in capsys.readouterr().out


def test_learner_tour_reaches_its_accuracy(tmp_path, capsys):
    accuracy = load("01_learner_tour").main(["--epochs", "5", "--out", str(tmp_path)])
    assert accuracy >= 0.90
    out = capsys.readouterr().out
    assert out.startswith("SuggestedLRs(valley=") and "epoch       train_loss  valid_loss  accuracy" in out
    assert (tmp_path / "lr_find.png").exists()


def test_tabular_example_on_a_data_folder_and_a_uci_test_file(tmp_path, capsys):
    from minidl.tabular import synthetic_adult
    synthetic_adult(4000, seed=4).to_csv(tmp_path / "adult.csv", index=False)
    test = synthetic_adult(300, seed=5)
    test["salary"] = test["salary"].map({">=50k": ">50K.", "<50k": "<=50K."})
    with open(tmp_path / "adult.test", "w") as f:
        f.write("|1x3 Cross validator\n")
        test.to_csv(f, header=False, index=False)
    tabular = load("tabular")
    accuracy = tabular.main(["--data", str(tmp_path), "--epochs", "3"])
    out = capsys.readouterr().out
    assert f"data: {tmp_path / 'adult.csv'}, 4000 rows" in out      # the folder given, nothing else
    assert out.strip().splitlines()[-1] == f"valid accuracy: {accuracy:.4f}"
    assert "epoch       train_loss  valid_loss  accuracy" in out and accuracy > 0.65  # chance: 0.53, the rule itself: 0.74
    test_accuracy = tabular.main(["--data", str(tmp_path), "--epochs", "3", "--test", str(tmp_path / "adult.test")])
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == f"test accuracy: {test_accuracy:.4f}" and test_accuracy > 0.65
