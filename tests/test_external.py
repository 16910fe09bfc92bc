"""find_data: the search order, the error that says where to put files, and the download
(against a local HTTP server serving a zip or a tar.gz built here; no internet needed)."""
import hashlib
import http.server
import io
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from minidl.data import external
from minidl.data.external import ChecksumError, DataNotFoundError, find_data

FILES = {"a.csv": b"x,y\n1,2\n", "b.txt": b"the toy data set\n"}
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def toy(monkeypatch, tmp_path):
    """A fake data set "toy" (required files a.csv, b.txt) and a clean environment:
    no MINIDL_DATA, the cache in tmp_path/cache, HOME in tmp_path/home, no proxies."""
    monkeypatch.setitem(external.DATASETS, "toy", {"required": ("a.csv", "b.txt"), "optional": ()})
    monkeypatch.setitem(external.SHA256, "toy", {"a.csv": sha256(FILES["a.csv"])})
    monkeypatch.setattr(external, "PUBLISHED_MD5", external.PUBLISHED_MD5 | {"toy"})
    monkeypatch.setitem(external.SOURCES, "toy", "http://127.0.0.1:9/toy.zip")  # replaced by `server`
    monkeypatch.delenv("MINIDL_DATA", raising=False)
    monkeypatch.setenv("MINIDL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    return tmp_path / "cache" / "data"


def write_files(folder, files=FILES):
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def make_zip(files=FILES, top="toy/"):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in {**files, "README.txt": b"read me\n"}.items():
            zf.writestr(top + name, data)
    return buffer.getvalue()


@pytest.fixture
def server(toy, monkeypatch):
    """A local HTTP server on 127.0.0.1 serving `routes` (path -> bytes); `hits` lists requests."""
    routes, hits = {}, []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            body = routes.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/toy.zip"
    monkeypatch.setitem(external.SOURCES, "toy", url)

    def serve(archive, md5=None, path="/toy.zip"):
        routes[path] = archive
        routes[path + ".md5"] = f"{md5 or hashlib.md5(archive).hexdigest()}  {path[1:]}\n".encode()

    yield serve, hits
    httpd.shutdown()
    httpd.server_close()


def leftovers(cache):
    """What the cache holds besides finished data set folders (temporary files and folders)."""
    return sorted(p.name for p in cache.iterdir() if p.name.startswith(".")) if cache.exists() else []


# --- finding files already there ---

def test_found_via_argument_as_folder_itself_or_parent(toy, tmp_path):
    folder = write_files(tmp_path / "somewhere" / "toy")
    assert find_data("toy", data=folder, download=False) == folder
    assert find_data("toy", data=tmp_path / "somewhere", download=False) == folder
    assert find_data("toy", data=str(folder), download=False) == folder


def test_found_via_env_MINIDL_DATA(toy, tmp_path, monkeypatch):
    folder = write_files(tmp_path / "env" / "toy")
    monkeypatch.setenv("MINIDL_DATA", str(tmp_path / "env"))
    assert find_data("toy", download=False) == folder
    monkeypatch.setenv("MINIDL_DATA", str(folder))
    assert find_data("toy", download=False) == folder


def test_found_in_cache_MINIDL_CACHE_or_home(toy, tmp_path, monkeypatch):
    folder = write_files(toy / "toy")  # $MINIDL_CACHE/data/toy
    assert find_data("toy", download=False) == folder
    monkeypatch.delenv("MINIDL_CACHE")
    home_folder = write_files(tmp_path / "home" / ".minidl" / "data" / "toy")
    assert find_data("toy", download=False) == home_folder


def test_search_order_argument_then_env_then_cache(toy, tmp_path, monkeypatch):
    arg, env, cache = (write_files(tmp_path / where / "toy") for where in ("arg", "env", "cache/data"))
    monkeypatch.setenv("MINIDL_DATA", str(env))
    assert find_data("toy", data=arg, download=False) == arg
    with pytest.raises(DataNotFoundError, match="a data folder was given"):   # never a silent fallback
        find_data("toy", data=tmp_path / "empty", download=False)
    monkeypatch.delenv("MINIDL_DATA")
    assert find_data("toy", download=False) == cache


def test_an_explicit_data_folder_is_the_only_place_looked_at(toy, tmp_path, monkeypatch, server):
    serve, hits = server
    serve(make_zip())
    env = write_files(tmp_path / "env" / "toy")
    monkeypatch.setenv("MINIDL_DATA", str(tmp_path / "env"))
    with pytest.raises(DataNotFoundError) as info:    # neither MINIDL_DATA nor a download stands in
        find_data("toy", data=tmp_path / "mine")
    assert f"{tmp_path / 'mine'}  (" in str(info.value) and str(env) not in str(info.value)
    assert hits == [] and not (toy / "toy").exists()


def test_a_data_set_may_have_another_layout(toy, tmp_path, monkeypatch):
    monkeypatch.setitem(external.DATASETS, "toy", {"required": ("a.csv", "b.txt"), "optional": (),
                                                   "also": (("c.csv",),)})
    folder = write_files(tmp_path / "toy", {"c.csv": b"1\n"})
    assert find_data("toy", data=tmp_path, download=False) == folder


def test_incomplete_folder_does_not_count(toy, tmp_path):
    folder = write_files(tmp_path / "toy", {"a.csv": b"1\n"})  # b.txt is missing
    with pytest.raises(DataNotFoundError, match="no b.txt"):
        find_data("toy", data=folder, download=False)


def test_missing_lists_every_place_searched_and_where_to_put_files(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDL_DATA", str(tmp_path / "env"))
    with pytest.raises(DataNotFoundError) as info:
        find_data("toy", download=False)
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    for place in (tmp_path / "env", tmp_path / "env" / "toy", toy, toy / "toy"):
        assert f"{place}  (" in message
    assert f"put a.csv, b.txt in {toy / 'toy'}/" in message
    assert "MINIDL_DATA" in message and "--data PATH" in message and "download=False" in message


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown data set 'nope'"):
        find_data("nope")


# --- downloading ---

@pytest.mark.parametrize("top", ["toy/", "", "outer/inner/"])
def test_download_extracts_into_cache_once(server, toy, top, capsys):
    serve, hits = server
    serve(make_zip(top=top))
    folder = find_data("toy")
    assert folder == toy / "toy"
    assert {p.name for p in folder.iterdir()} == {"a.csv", "b.txt", "README.txt"}
    assert (folder / "a.csv").read_bytes() == FILES["a.csv"]
    assert sorted(hits) == ["/toy.zip", "/toy.zip.md5"]
    assert leftovers(toy) == [] and sorted(p.name for p in toy.iterdir()) == ["toy"]
    err = capsys.readouterr().err  # stderr is not a terminal here: a start line and an end line
    assert "Downloading toy.zip" in err and "Downloaded toy.zip" in err and "\r" not in err

    assert find_data("toy") == folder  # found in the cache: no second download
    assert len(hits) == 2


def test_download_without_published_md5_checks_pinned_sha256(server, toy, monkeypatch):
    serve, hits = server
    monkeypatch.setattr(external, "PUBLISHED_MD5", set())  # like UCI's adult.zip
    serve(make_zip())
    assert find_data("toy") == toy / "toy"
    assert hits == ["/toy.zip"]


def test_download_progress_bar_redraws_on_a_terminal(server, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    serve, _ = server
    serve(make_zip())
    monkeypatch.setattr("sys.stderr", Terminal())
    find_data("toy")
    err = external.sys.stderr.getvalue()
    assert "\rDownloading toy.zip 100% |" in err and err.endswith("\n")


def test_download_md5_mismatch_deletes_everything(server, toy):
    serve, _ = server
    archive = make_zip()
    serve(archive, md5="0" * 32)
    with pytest.raises(ChecksumError) as info:
        find_data("toy")
    message = str(info.value)
    assert "toy.zip" in message and "0" * 32 in message and hashlib.md5(archive).hexdigest() in message
    assert not (toy / "toy").exists() and leftovers(toy) == []


def test_download_sha256_mismatch_deletes_everything(server, toy):
    serve, _ = server
    bad = {**FILES, "a.csv": b"tampered\n"}
    serve(make_zip(bad))  # the published md5 matches this archive: only the pinned sha256 catches it
    with pytest.raises(ChecksumError) as info:
        find_data("toy")
    message = str(info.value)
    assert "a.csv" in message and sha256(FILES["a.csv"]) in message and sha256(bad["a.csv"]) in message
    assert not (toy / "toy").exists() and leftovers(toy) == []


def test_download_completes_a_partial_cache_folder_keeping_user_files(server, toy):
    serve, _ = server
    serve(make_zip())
    mine = write_files(toy / "toy", {"b.txt": b"my own copy\n"})  # a.csv missing
    assert find_data("toy") == mine
    assert (mine / "a.csv").read_bytes() == FILES["a.csv"]
    assert (mine / "b.txt").read_bytes() == b"my own copy\n"
    assert leftovers(toy) == []


def test_server_unreachable_raises_data_not_found(toy, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/toy.zip"
    monkeypatch.setitem(external.SOURCES, "toy", url)
    with pytest.raises(DataNotFoundError) as info:
        find_data("toy")
    message = str(info.value)
    assert f"download from {url} failed" in message and "refused" in message.lower()
    assert f"put a.csv, b.txt in {toy / 'toy'}/" in message
    assert not (toy / "toy").exists() and leftovers(toy) == []


def test_http_error_and_bad_archive_raise_data_not_found(server, toy):
    serve, _ = server
    with pytest.raises(DataNotFoundError, match="HTTP Error 404"):
        find_data("toy")  # nothing served yet
    serve(b"<html>not a zip</html>")
    with pytest.raises(DataNotFoundError, match="not a zip archive"):
        find_data("toy")
    serve(make_zip({"a.csv": FILES["a.csv"]}))
    with pytest.raises(DataNotFoundError, match="no folder with a.csv, b.txt"):
        find_data("toy")
    assert not (toy / "toy").exists() and leftovers(toy) == []


# --- tar.gz archives (Oxford-IIIT Pet's kind): a pinned md5, a pattern rule, safe unpacking ---

PHOTOS = {"images/Bengal_1.jpg": b"a cat\n", "images/beagle_2.jpg": b"a dog\n", "images/Bengal_1.mat": b"?"}


@pytest.fixture
def pics(server, toy, monkeypatch):
    """A data set "pics" like Oxford-IIIT Pet: an images/ folder with at least one .jpg, from a
    tar.gz on the same local server as "toy", checked against a pinned md5 (none published)."""
    serve, hits = server
    url = external.SOURCES["toy"].rsplit("/", 1)[0] + "/pics.tar.gz"
    monkeypatch.setitem(external.DATASETS, "pics", {"required": ("images/*.jpg",), "optional": ()})
    monkeypatch.setitem(external.SOURCES, "pics", url)

    def serve_tar(archive, md5=None):
        serve(archive, path="/pics.tar.gz")
        monkeypatch.setitem(external.ARCHIVE_MD5, "pics", md5 or hashlib.md5(archive).hexdigest())

    return serve_tar, hits


def make_targz(files=PHOTOS, top="", members=()):
    """A tar.gz of `files` under `top`, plus extra `members`: (TarInfo, bytes or None) pairs."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(top + name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def tar_member(name, kind=tarfile.REGTYPE, linkname="", data=None):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.size = len(data) if data is not None else 0
    return info, data


def test_a_pattern_rule_needs_one_matching_file(toy, tmp_path, monkeypatch):
    monkeypatch.setitem(external.DATASETS, "pics", {"required": ("images/*.jpg",), "optional": ()})
    folder = write_files(tmp_path / "pics" / "images", {"Bengal_1.mat": b"?"})
    with pytest.raises(DataNotFoundError, match=r"no images/\*\.jpg"):
        find_data("pics", data=tmp_path, download=False)
    (folder / "Bengal_1.jpg").write_bytes(b"a cat\n")
    assert find_data("pics", data=tmp_path, download=False) == tmp_path / "pics"
    assert find_data("pics", data=tmp_path / "pics", download=False) == tmp_path / "pics"


@pytest.mark.parametrize("top", ["", "oxford/"])  # the real archive's top folder is images/ itself
def test_tar_gz_download_checks_the_pinned_md5_and_unpacks_into_cache_once(pics, toy, top, capsys):
    serve, hits = pics
    serve(make_targz(top=top))
    folder = find_data("pics")
    assert folder == toy / "pics"
    assert {p.name for p in (folder / "images").iterdir()} == {"Bengal_1.jpg", "beagle_2.jpg", "Bengal_1.mat"}
    assert (folder / "images" / "Bengal_1.jpg").read_bytes() == PHOTOS["images/Bengal_1.jpg"]
    assert hits == ["/pics.tar.gz"]                     # the md5 is pinned: nothing else is fetched
    assert leftovers(toy) == [] and sorted(p.name for p in toy.iterdir()) == ["pics"]
    err = capsys.readouterr().err
    assert "Downloading pics.tar.gz" in err and "Downloaded pics.tar.gz" in err

    assert find_data("pics") == folder                  # found in the cache: no second download
    assert hits == ["/pics.tar.gz"]


def test_tar_gz_md5_mismatch_deletes_everything(pics, toy):
    serve, _ = pics
    archive = make_targz()
    serve(archive, md5="0" * 32)
    with pytest.raises(ChecksumError) as info:
        find_data("pics")
    message = str(info.value)
    assert "pics.tar.gz" in message and "0" * 32 in message and hashlib.md5(archive).hexdigest() in message
    assert not (toy / "pics").exists() and leftovers(toy) == []


@pytest.mark.parametrize("member, why", [
    (tar_member("/tmp/minidl-evil.jpg", data=b"x"), "absolute path"),
    (tar_member("../evil.jpg", data=b"x"), "'..'"),
    (tar_member("images/../../evil.jpg", data=b"x"), "'..'"),
    (tar_member("images/up", tarfile.SYMTYPE, "../../outside"), "symbolic link.*outside the archive's folder"),
    (tar_member("images/passwd", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link.*outside the archive's folder"),
    (tar_member("images/hard", tarfile.LNKTYPE, "../secret"), "hard link"),
    (tar_member("images/tty", tarfile.CHRTYPE), "device"),
], ids=["absolute", "dotdot", "dotdot-inside", "symlink-up", "symlink-absolute", "hardlink-up", "device"])
def test_unsafe_tar_members_are_refused_before_anything_is_written(pics, toy, tmp_path, member, why):
    serve, _ = pics
    serve(make_targz(members=[member]))   # its md5 matches: a checksum does not make an archive safe
    with pytest.raises(DataNotFoundError, match=f"refused to unpack.*{member[0].name}.*{why}"):
        find_data("pics")
    assert not (toy / "pics").exists() and leftovers(toy) == []
    assert not (tmp_path / "cache" / "evil.jpg").exists() and not (toy / "evil.jpg").exists()


def refused_and_nothing_written(find, toy, tmp_path, match):
    """``find()`` refuses the archive, and nothing appears anywhere but the cache's own folders."""
    outside = lambda: sorted(p for p in tmp_path.rglob("*") if not (p.is_relative_to(toy) or toy.is_relative_to(p)))
    before = outside()
    with pytest.raises(DataNotFoundError, match=match):
        find()
    assert outside() == before
    assert not (toy / "pics").exists() and leftovers(toy) == []


def test_every_link_is_refused_even_one_inside_the_archive(pics, toy, tmp_path):
    serve, _ = pics
    serve(make_targz(members=[tar_member("images/cat.jpg", tarfile.SYMTYPE, "Bengal_1.jpg")]))
    refused_and_nothing_written(lambda: find_data("pics"), toy, tmp_path,
                                "images/cat.jpg.*symbolic link.*inside the archive.*no data set needs links")
    serve(make_targz(members=[tar_member("images/copy.jpg", tarfile.LNKTYPE, "images/Bengal_1.jpg")]))
    refused_and_nothing_written(lambda: find_data("pics"), toy, tmp_path, "images/copy.jpg.*hard link")


def test_a_chain_of_links_each_harmless_alone_is_refused(pics, toy, tmp_path):
    """s2 -> . and s1 -> s2/.. each stay inside; followed one after the other, s1 is the parent folder."""
    serve, _ = pics
    serve(make_targz(members=[tar_member("s2", tarfile.SYMTYPE, "."), tar_member("s1", tarfile.SYMTYPE, "s2/.."),
                              tar_member("s1/escaped.jpg", data=b"outside!")]))
    refused_and_nothing_written(lambda: find_data("pics"), toy, tmp_path, "'s2'.*symbolic link")
    assert not list(tmp_path.rglob("escaped.jpg"))


def test_an_archive_built_like_cve_2025_4517_is_refused(pics, toy, tmp_path):
    """CPython's test for CVE-2025-4517: directories with 247-character names reached through one-letter
    links, nested until the path passes PATH_MAX, where os.path.realpath stops resolving; a link made
    of "../" then leads the data filter's check astray and a file lands outside the destination."""
    serve, _ = pics
    steps, members, path = "abcdefghijklmnop", [], ""
    for step in steps:
        info = tarfile.TarInfo(path + step * 247)
        info.type = tarfile.DIRTYPE
        members.append((info, None))
        members.append(tar_member(path + step, tarfile.SYMTYPE, step * 247))
        path += step + "/"
    members.append(tar_member(path + "l" * 254, tarfile.SYMTYPE, "../" * len(steps)))
    members.append(tar_member("escape", tarfile.SYMTYPE, path + "l" * 254 + "/../../../../escaped"))
    members.append(tar_member("escape/flag.jpg", data=b"outside!"))
    serve(make_targz(members=members))
    refused_and_nothing_written(lambda: find_data("pics"), toy, tmp_path, "'a'.*symbolic link")
    assert not list(tmp_path.parent.glob("escaped*"))


def test_a_bad_or_truncated_tar_gz_raises_data_not_found(pics, toy, monkeypatch):
    serve, _ = pics
    serve(b"<html>not a tar</html>")
    with pytest.raises(DataNotFoundError, match="not a readable tar.gz archive"):
        find_data("pics")
    archive = make_targz({f"images/Bengal_{i}.jpg": bytes(range(256)) * 40 for i in range(20)})
    serve(archive[: len(archive) // 2])              # cut short, and its md5 pinned to match
    with pytest.raises(DataNotFoundError, match="not a readable tar.gz archive"):
        find_data("pics")
    assert not (toy / "pics").exists() and leftovers(toy) == []


# --- the real files, where this machine has them ---

@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="no ../shared/data beside the project")
@pytest.mark.parametrize("name", ["adult", "ml-latest-small"])
def test_real_data_found_and_pinned_sha256_match(name):
    folder = find_data(name, data=SHARED_DATA, download=False)
    assert folder == SHARED_DATA / name
    for file, expected in external.SHA256[name].items():
        assert hashlib.sha256((folder / file).read_bytes()).hexdigest() == expected, file


# ---------------------------------------------------------------------- untar_data (the book's way)
def test_untar_data_returns_the_folder_fastai_names(toy, tmp_path, monkeypatch):
    from minidl.data import URLs, untar_data
    data = tmp_path / "data"
    write_files(data / "adult_sample", {"adult.csv": b"age,salary\n39, <50k\n"})
    monkeypatch.setenv("MINIDL_DATA", str(data))
    assert untar_data(URLs.ADULT_SAMPLE) == data / "adult_sample"
    # only <root>/<name> counts: the files at the root itself are not the data set
    write_files(data, {"ratings.csv": b"userId,movieId,rating\n1,1,4.0\n"})
    with pytest.raises(DataNotFoundError) as info:
        untar_data(URLs.ML_SAMPLE, download=False)
    message = str(info.value)
    assert f"create the folder {data / 'movie_lens_sample'} holding ratings.csv" in message
    assert URLs.ML_SAMPLE in message and "MINIDL_DATA" in message
    # the cache is the second place looked in
    write_files(toy / "movie_lens_sample", {"ratings.csv": b"userId,movieId,rating\n1,1,4.0\n"})
    assert untar_data(URLs.ML_SAMPLE, download=False) == toy / "movie_lens_sample"


def test_untar_data_names_each_of_fastais_folders():
    from minidl.data import URLs
    from minidl.data.external import DATASETS, SOURCES
    names = {"PETS": "oxford-iiit-pet", "ADULT_SAMPLE": "adult_sample", "ML_SAMPLE": "movie_lens_sample",
             "ML_100k": "ml-100k", "CAMVID_TINY": "camvid_tiny", "CAMVID": "camvid", "IMDB": "imdb",
             "IMDB_SAMPLE": "imdb_sample", "MNIST_SAMPLE": "mnist_sample", "MNIST_TINY": "mnist_tiny"}
    for attr, folder in names.items():
        url = getattr(URLs, attr)
        assert folder in DATASETS and SOURCES[folder] == url
        assert url.rsplit("/", 1)[-1].split(".")[0] == folder
        assert url.startswith("https://")
        assert folder in external.ARCHIVE_MD5 or folder in external.PUBLISHED_MD5   # every download is checked


def test_untar_data_downloads_checks_and_unpacks_into_the_cache(server, toy, monkeypatch):
    from minidl.data import URLs, untar_data
    serve, hits = server
    archive = make_targz({"ratings.csv": b"userId,movieId,rating,timestamp\n1,2,4.0,5\n"}, top="movie_lens_sample/")
    url = external.SOURCES["toy"].rsplit("/", 1)[0] + "/movie_lens_sample.tgz"
    monkeypatch.setitem(external.SOURCES, "movie_lens_sample", url)
    serve(archive, path="/movie_lens_sample.tgz")
    monkeypatch.setitem(external.ARCHIVE_MD5, "movie_lens_sample", "0" * 32)   # the wrong md5: refused
    with pytest.raises(ChecksumError, match="md5 mismatch"):
        untar_data(URLs.ML_SAMPLE)
    assert not (toy / "movie_lens_sample").exists() and not list(toy.glob(".movie_lens_sample-*"))
    monkeypatch.setitem(external.ARCHIVE_MD5, "movie_lens_sample", hashlib.md5(archive).hexdigest())
    folder = untar_data(URLs.ML_SAMPLE)
    assert folder == toy / "movie_lens_sample" and (folder / "ratings.csv").read_text().startswith("userId")
    assert untar_data(URLs.ML_SAMPLE) == folder and hits.count("/movie_lens_sample.tgz") == 2  # no third download


def test_untar_data_refuses_an_unknown_address(toy):
    from minidl.data import untar_data
    with pytest.raises(ValueError, match=r"untar_data: 'https://example.org/cifar10.tgz' is not a data set.*"
                                         r"URLs\.\{PETS"):
        untar_data("https://example.org/cifar10.tgz")
