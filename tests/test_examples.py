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


def test_bytes_as_images_pictures_and_split(tmp_path):
    import numpy as np
    from PIL import Image
    example = load("bytes_as_images")
    rng = np.random.default_rng(0)
    data = bytes(range(256)) * 40                                   # 10,240 bytes: a window past the header
    picture = np.asarray(example.byte_picture(data, rng))
    assert picture.shape == (64, 64) and picture.dtype == np.uint8
    start = int(picture[0, 0])                                       # rows are consecutive bytes of the file
    assert np.array_equal(picture.ravel(), (np.arange(4096) + start) % 256)
    short = np.asarray(example.byte_picture(b"\x07" * 100, rng)).ravel()
    assert (short[:100] == 7).all() and (short[100:] == 0).all()     # a short file from its start, then padding
    counts = example.make_pictures(tmp_path, n_per_kind=10, seed=0)
    assert counts == {"train": 24, "valid": 8, "test": 8}
    for kind in example.KINDS:
        sizes = [len(list((tmp_path / split / kind).glob("*.png"))) for split in ("train", "valid", "test")]
        assert sizes == [6, 2, 2]
    assert Image.open(next((tmp_path / "test" / "compressed").glob("*.png"))).mode == "L"


def test_bytes_as_images_tells_file_kinds_apart(tmp_path, capsys):
    valid_error, test_error = load("bytes_as_images").main(
        ["--n", "60", "--size", "64", "--epochs", "3", "--bs", "16", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert f"test error_rate {test_error:.4f} (48 pictures of files never seen)" in out
    assert test_error <= 0.4 and valid_error <= 0.4                  # four kinds: chance is 0.75 (here: 0.23, 0.15)
    assert (tmp_path / "batch.png").exists() and (tmp_path / "confusion_matrix.png").exists()


def test_camvid_example_trains_and_scores_without_void(tmp_path, capsys):
    """SegNet's layout, made up: train/ trainannot/ val/ valannot/ test/ testannot/, codes.txt with Unlabelled."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    root = tmp_path / "data" / "camvid"
    codes = ["Sky", "Road", "Car", "Unlabelled"]
    colours = np.array([(90, 140, 230), (90, 90, 90), (220, 30, 30), (0, 0, 0)])
    for split, n in (("train", 10), ("val", 4), ("test", 4)):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for k in range(n):
            pixels, ids = load("camvid").street_scene(rng, colours)
            Image.fromarray(pixels).save(root / split / f"{k}.png")
            Image.fromarray(ids).save(root / f"{split}annot" / f"{k}.png")
    (root / "codes.txt").write_text("\n".join(codes) + "\n")
    camvid = load("camvid")
    accuracy, miou = camvid.main(["--data", str(tmp_path / "data"), "--size", "36", "--epochs", "10",
                                  "--freeze-epochs", "1", "--bs", "5", "--lr", "1e-2", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "10 training and 4 validation scenes, 4 codes (void: Unlabelled)" in out
    assert out.strip().splitlines()[-2:] == [f"valid pixel accuracy {accuracy:.4f}", f"valid miou {miou:.4f}"]
    assert "per-class IoU: Sky" in out and "Unlabelled" not in out.split("per-class IoU:")[1].splitlines()[0]
    assert accuracy > 0.8                                            # sky and road: chance is about 0.5
    test_accuracy, _ = camvid.main(["--data", str(tmp_path / "data"), "--test", str(root), "--size", "36",
                                    "--epochs", "1", "--freeze-epochs", "1", "--bs", "7", "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert "14 training and 4 test scenes" in out and out.strip().splitlines()[-2].startswith("test pixel accuracy")


def test_camvid_example_reads_fastais_layout(tmp_path, capsys):
    """fastai's CamVid: images/, labels/<name>_P.png, valid.txt, codes.txt whose void class is "Void"."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(1)
    root = tmp_path / "camvid"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    colours = np.array([(90, 140, 230), (90, 90, 90), (220, 30, 30), (0, 0, 0)])
    for k in range(8):
        pixels, ids = load("camvid").street_scene(rng, colours)
        Image.fromarray(pixels).save(root / "images" / f"0001TP_{k:04d}.png")
        Image.fromarray(ids).save(root / "labels" / f"0001TP_{k:04d}_P.png")
    (root / "valid.txt").write_text("0001TP_0006.png\n0001TP_0007.png\n")
    (root / "codes.txt").write_text("Sky\nRoad\nCar\nVoid\n")
    load("camvid").main(["--data", str(tmp_path), "--size", "36", "--epochs", "1", "--freeze-epochs", "1",
                         "--bs", "3", "--out", str(tmp_path / "out")])
    assert "6 training and 2 validation scenes, 4 codes (void: Void)" in capsys.readouterr().out


def test_camvid_example_offline_trains_on_a_synthetic_stand_in_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINIDL_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("MINIDL_CACHE", str(tmp_path / "cache"))
    accuracy, _ = load("camvid").main(["--no-download", "--size", "36", "--epochs", "2", "--freeze-epochs", "1",
                                       "--bs", "8", "--lr", "1e-2", "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert "SYNTHETIC stand-in" in captured.err and "40 training and 12 validation scenes" in captured.out
    assert 0 <= accuracy <= 1
