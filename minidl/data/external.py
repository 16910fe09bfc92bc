"""External data sets: find a data set's folder, or download it once into a cache.

    path = find_data("adult")               # a folder holding adult.data, adult.names
    df = path / "adult.data"
    path = untar_data(URLs.PETS)            # the book's way: fastai's names, the folder oxford-iiit-pet

Where ``find_data(name, data)`` looks, first hit wins:

1. ``data`` (a path, e.g. an example's ``--data PATH``): when given, it is the only place
   looked at, and a folder without the data set is an error, never a silent fallback;
2. the environment variable ``MINIDL_DATA``;
3. the cache, ``~/.minidl/data`` (``$MINIDL_CACHE/data`` when ``MINIDL_CACHE`` is set);
4. the official archive (a zip or a tar.gz), downloaded into the cache, checked and
   unpacked there.

In 1-3 a root may be the data set's folder itself (it holds the files) or its parent
(``<root>/<name>/`` holds them). A required "file" may be a glob pattern such as
``images/*.jpg``: it is there when at least one file matches. Nothing is ever half-installed: the archive is
downloaded and unpacked beside the cache under temporary names, checked, and only then
renamed into place; a bad download is deleted.
"""
import hashlib
import os
import posixpath
import re
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from http.client import HTTPException
from pathlib import Path

__all__ = ["find_data", "untar_data", "URLs", "cache_dir", "DataNotFoundError", "ChecksumError", "DATASETS",
           "SOURCES", "SHA256", "ARCHIVE_MD5"]

# The files each data set must have (a folder counts as the data set when it holds all
# of them, or all of one of the "also" layouts); the optional ones are used when present.
# The download provides the "required" layout. Oxford-IIIT Pet is ~7,400 photos whose names
# no one lists, so its rule is a pattern: an images/ folder with at least one .jpg in it.
DATASETS = {
    "adult": {"required": ("adult.data", "adult.names"), "optional": ("adult.test",),
              "also": (("adult.csv",),)},                          # fastai's layout
    "ml-latest-small": {"required": ("ratings.csv", "movies.csv"), "optional": ()},
    "ml-100k": {"required": ("u.data", "u.item"), "optional": ()},
    "oxford-iiit-pet": {"required": ("images/*.jpg",), "optional": ("annotations",)},
    # fastai's samples, each in the folder fastai names it (what untar_data(URLs.X) returns)
    "adult_sample": {"required": ("adult.csv",), "optional": ()},
    "movie_lens_sample": {"required": ("ratings.csv",), "optional": ()},
    "camvid_tiny": {"required": ("codes.txt", "images/*.png", "labels/*.png"), "optional": ()},
    "camvid": {"required": ("codes.txt", "valid.txt", "images/*.png", "labels/*.png"), "optional": (),
               "also": (("codes.txt", "train/*.png", "trainannot/*.png", "val/*.png", "valannot/*.png"),)},  # SegNet's
    "imdb": {"required": ("train/pos/*.txt", "train/neg/*.txt", "test/pos/*.txt", "test/neg/*.txt"),
             "optional": ("unsup",)},
    "imdb_sample": {"required": ("texts.csv",), "optional": ()},
    "mnist_sample": {"required": ("labels.csv", "train/3/*.png", "train/7/*.png", "valid/3/*.png", "valid/7/*.png"),
                     "optional": ()},
    "mnist_tiny": {"required": ("labels.csv", "train/3/*.png", "train/7/*.png", "valid/3/*.png", "valid/7/*.png"),
                   "optional": ()},
}

# Where each data set's official archive lives: a .zip, or a .tar.gz / .tgz (the name's
# ending says which). Tests point these at a local server.
_FASTAI = "https://s3.amazonaws.com/"   # where fastai keeps its copies of the data sets (fastai's URLs)
SOURCES = {
    "adult": "https://archive.ics.uci.edu/static/public/2/adult.zip",
    "ml-latest-small": "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
    "ml-100k": "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
    "oxford-iiit-pet": _FASTAI + "fast-ai-imageclas/oxford-iiit-pet.tgz",  # 812 MB: images/ and annotations/
    "adult_sample": _FASTAI + "fast-ai-sample/adult_sample.tgz",
    "movie_lens_sample": _FASTAI + "fast-ai-sample/movie_lens_sample.tgz",
    "camvid_tiny": _FASTAI + "fast-ai-sample/camvid_tiny.tgz",
    "camvid": _FASTAI + "fast-ai-imagelocal/camvid.tgz",
    "imdb": _FASTAI + "fast-ai-nlp/imdb.tgz",
    "imdb_sample": _FASTAI + "fast-ai-sample/imdb_sample.tgz",
    "mnist_sample": _FASTAI + "fast-ai-sample/mnist_sample.tgz",
    "mnist_tiny": _FASTAI + "fast-ai-sample/mnist_tiny.tgz",
}


class URLs:
    """fastai's names for its data sets (``fastai.data.external.URLs``), so the book's
    ``untar_data(URLs.PETS)`` reads the same. Each is the archive's address; its file name
    without ``.tgz`` / ``.zip`` is the folder ``untar_data`` returns."""
    PETS = SOURCES["oxford-iiit-pet"]
    ADULT_SAMPLE = SOURCES["adult_sample"]
    ML_SAMPLE = SOURCES["movie_lens_sample"]
    ML_100k = SOURCES["ml-100k"]
    CAMVID_TINY = SOURCES["camvid_tiny"]
    CAMVID = SOURCES["camvid"]
    IMDB = SOURCES["imdb"]
    IMDB_SAMPLE = SOURCES["imdb_sample"]
    MNIST_SAMPLE = SOURCES["mnist_sample"]
    MNIST_TINY = SOURCES["mnist_tiny"]

# GroupLens publishes `<url>.md5` beside each zip; we check the archive against it.
# It comes from the same server as the zip, so it guards against a corrupt or truncated
# download, not against tampering. The pinned SHA256 below is what guards the content.
PUBLISHED_MD5 = {"ml-latest-small", "ml-100k"}

# The md5 of an archive, pinned here (the publisher gives none beside it). fastai's archives:
# the md5 fastai itself checks them against (its fastai/data/checks.txt, keyed by these URLs).
# We have no copies of the archives here to compute them ourselves, so those pins are what we
# check against.
ARCHIVE_MD5 = {
    "oxford-iiit-pet": "e4db5c768afd933bb91f5f594d7417a4",
    "adult_sample": "64eb9d7e23732de0b138f7372d15492f",
    "movie_lens_sample": "10961384dfe7c5181460390a460c1f77",
    "camvid_tiny": "2cf6daf91b7a2083ecfa3e9968e9d915",
    "camvid": "648371e4f3a833682afb39b08a3ce2aa",
    "imdb": "90f9b1c4ff43a90d67553c9240dc0249",
    "imdb_sample": "0842e61a9867caa2e6fbdb14fa703d61",
    "mnist_sample": "2dbc7ec6f9259b583af0072c55816a88",
    "mnist_tiny": "56143e8f24db90d925d82a5a74141875",
}

# SHA256 of extracted files, checked after unpacking. Computed with hashlib.sha256 over
# the files in the project's ../shared/data/ (adult/adult.data from UCI; ratings.csv and
# movies.csv from GroupLens' ml-latest-small.zip). Files we have no copy of here
# (adult.test, ml-100k's u.data and u.item) are not pinned: ml-100k relies on the md5.
SHA256 = {
    "adult": {
        "adult.data": "df25a4e32ed6f1bd4b3910d21a7bd661a09061eced7cb45555a519d9667cc87b",
    },
    "ml-latest-small": {
        "ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
        "movies.csv": "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07",
    },
    "ml-100k": {},  # fastai's samples and Oxford-IIIT Pet: the archive's pinned md5 covers every file
}

TIMEOUT_S = 20  # per network operation (connect, each read), so a dead network fails fast


class DataNotFoundError(FileNotFoundError):
    """The data set is in none of the places searched and could not be downloaded.

    ``not_downloaded`` says in one line why no download stood in (offline, download=False, ...).
    """

    def __init__(self, message, not_downloaded=None):
        super().__init__(message)
        self.not_downloaded = not_downloaded


class ChecksumError(Exception):
    """A downloaded file's digest differs from the expected one (the download was deleted)."""


def cache_dir():
    """The download cache for data sets: ``$MINIDL_CACHE/data``, else ``~/.minidl/data``."""
    root = os.environ.get("MINIDL_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".minidl") / "data"


def find_data(name, data=None, download=True, named=False):
    """The folder holding data set ``name``'s files; download it into the cache if need be.

    ``data``: a folder to look in first (the data set's folder or its parent).
    ``download=False`` never touches the network. ``named=True`` accepts only a folder
    called ``name`` inside each place (untar_data's rule). Raises ``DataNotFoundError`` (a
    ``FileNotFoundError``) listing every place searched and what to put where.
    """
    if name not in DATASETS:
        raise ValueError(f"find_data: unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    required = DATASETS[name]["required"]
    layouts = (required, *DATASETS[name].get("also", ()))
    if data is not None:
        roots = [("the data argument", Path(data).expanduser())]
    else:
        roots = [("MINIDL_DATA", Path(os.environ["MINIDL_DATA"]).expanduser())] if os.environ.get("MINIDL_DATA") else []
        roots.append(("the cache", cache_dir()))

    searched = []
    for why, root in roots:
        for folder in (root / name,) if named else (root, root / name):
            if any(_holds(folder, files) for files in layouts):
                return folder
            missing = [f for f in required if not _has(folder, f)]
            searched.append(f"{folder}  ({why}: " + (f"no {', '.join(missing)})" if folder.is_dir()
                                                    else "no such folder)"))

    url = SOURCES.get(name)
    failure = "download=False"
    if data is not None:
        failure = "a data folder was given, so nothing else is searched or downloaded"
    elif download and url is None:
        failure = "no official archive is known for it"
    elif download:
        try:
            return _download(name)
        except _DownloadFailed as e:
            failure = f"download from {url} failed: {e}"
    target = roots[0][1] / name if named else cache_dir() / name
    source = f" (unpacked from {url})" if url else ""
    if named:
        fix = (f"create the folder {target} holding {', '.join(required)}{source}, "
               f"or set MINIDL_DATA to a folder that holds {name}/")
    else:
        fix = (f"put {', '.join(required)} in {target}/{source}, or pass the folder holding them "
               f"(data=PATH, an example's --data PATH) or set MINIDL_DATA=PATH")
    raise DataNotFoundError(
        f"data set {name!r} not found: no folder holding {', '.join(required)}.\n"
        f"Searched:\n" + "".join(f"  {s}\n" for s in searched) +
        f"Not downloaded: {failure}.\nFix: {fix}.", not_downloaded=failure)


def untar_data(url, download=True):
    """fastai's ``untar_data``: the folder of the data set at ``url`` (one of ``URLs``), as a Path.

    The folder is named as fastai names it (``URLs.PETS`` -> ``oxford-iiit-pet``), and is looked
    for in ``$MINIDL_DATA/<name>``, then ``~/.minidl/data/<name>``; else the archive is downloaded
    into the cache, checked against its pinned md5 and unpacked (``find_data``'s downloader).
    Offline with nothing found, ``DataNotFoundError`` names the folder to create and its files.
    """
    name = re.sub(r"\.(tgz|tar\.gz|zip)$", "", str(url).rsplit("/", 1)[-1])
    if name not in DATASETS:
        known = ", ".join(k for k, v in vars(URLs).items() if k.isupper())
        raise ValueError(f"untar_data: {url!r} is not a data set minidl knows (it would be the folder {name!r}); "
                         f"give one of URLs.{{{known}}}")
    return find_data(name, download=download, named=True)


def _holds(folder, files):
    return all(_has(folder, f) for f in files)


def _has(folder, file):
    """Whether ``folder/file`` is a file; for a pattern (``images/*.jpg``), whether any file matches."""
    if any(c in file for c in "*?["):
        return any(p.is_file() for p in folder.glob(file))  # stops at the first match
    return (folder / file).is_file()


class _DownloadFailed(Exception):
    """The network or the archive let us down (not a checksum mismatch: that is louder)."""


def _download(name):
    """Download, check and unpack ``SOURCES[name]`` into ``cache_dir()/name``; return that folder."""
    url, required = SOURCES[name], DATASETS[name]["required"]
    kind = "tar.gz" if url.endswith((".tar.gz", ".tgz")) else "zip"
    cache = cache_dir()
    target = cache / name
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _DownloadFailed(f"cannot create the cache folder {cache}: {e}") from e
    # Temporary names in the cache itself, so the final rename stays on one file system.
    fd, archive = tempfile.mkstemp(dir=cache, prefix=f".{name}-", suffix=f".{kind}.part")
    os.close(fd)
    archive = Path(archive)
    unpacked = Path(tempfile.mkdtemp(dir=cache, prefix=f".{name}-", suffix=".unpacking"))
    try:
        try:
            expected_md5 = ARCHIVE_MD5.get(name) or (_published_md5(url) if name in PUBLISHED_MD5 else None)
            _fetch(url, archive)
        except (OSError, HTTPException) as e:  # URLError, HTTPError, timeouts, resets are all here
            # A plain URLError's str() is "<urlopen error ...>": its reason reads better.
            raise _DownloadFailed(e.reason if type(e) is urllib.error.URLError else e) from e
        if expected_md5 is not None:
            _check_digest(archive, "md5", expected_md5,
                          label=f"{url.rsplit('/', 1)[-1]} (the downloaded archive)")
        if kind == "zip":
            _unzip(archive, unpacked)
        else:
            _untar(archive, unpacked)
        archive.unlink()  # a big archive need not sit beside its unpacked copy any longer
        folder = _folder_holding(unpacked, required)
        if folder is None:
            raise _DownloadFailed(f"the archive holds no folder with {', '.join(required)}")
        for file, digest in SHA256.get(name, {}).items():
            _check_digest(folder / file, "sha256", digest, label=f"{file} (from {url})")
        if not _holds(target, required):  # another process may have just finished the same download
            _install(folder, target, required)
        if not _holds(target, required):
            raise _DownloadFailed(f"unpacked, but {target} already has files of its own in the way "
                                  f"(it still lacks {', '.join(required)}): move them away and try again")
        return target
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(unpacked, ignore_errors=True)


def _unzip(archive, dest):
    # zipfile itself drops absolute paths and ".." from member names, so nothing lands outside dest.
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)
    except zipfile.BadZipFile as e:
        raise _DownloadFailed(f"not a zip archive ({e})") from e


def _untar(archive, dest):
    """Unpack a tar.gz into ``dest``, refusing any member that could write outside it (a link of any kind,
    an absolute path, a '..', a device).

    Every member is checked before anything is written (``_unsafe_member``); tarfile's own
    "data" filter (Python 3.12, and 3.8.17 / 3.9.17 / 3.10.12 / 3.11.4) then checks again
    as it extracts, and also drops permission bits such as set-user-ID.
    """
    try:
        with tarfile.open(archive, "r:gz") as tf:
            members = tf.getmembers()  # reads the archive through once: a truncated one fails here
            for member in members:
                why = _unsafe_member(member)
                if why:
                    raise _DownloadFailed(f"refused to unpack the archive: its member {member.name!r} {why}")
            if hasattr(tarfile, "data_filter"):
                tf.extractall(dest, members=members, filter="data")
            else:
                tf.extractall(dest, members=members)
    except tarfile.FilterError as e:  # the filter caught what _unsafe_member did not
        raise _DownloadFailed(f"refused to unpack the archive: {e}") from e
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise _DownloadFailed(f"not a readable tar.gz archive ({e})") from e


def _unsafe_member(member):
    """Why extracting this tar member could touch something outside the destination, or None."""
    def escapes(path):  # `path` relative to the destination; tar names are "/" separated on every system
        return path.startswith("/") or posixpath.normpath(path).split("/")[0] == ".."

    name = member.name
    if name.startswith("/") or ".." in name.split("/"):
        return "has an absolute path or a '..'"
    # No data set needs a link, and a link that looks harmless on its own can still lead a later
    # member outside: `s2 -> .` then `s1 -> s2/..` then a file through s1, or links nested past
    # PATH_MAX so that realpath stops resolving them (CVE-2025-4517). So every link is refused.
    if member.issym():
        where = "outside the archive's folder" if escapes(posixpath.join(posixpath.dirname(name), member.linkname)) \
            else "inside the archive"
        return f"is a symbolic link ({member.linkname!r}, {where}); no data set needs links, so none is unpacked"
    if member.islnk():  # hard links name their target from the top
        return f"is a hard link ({member.linkname!r}); no data set needs links, so none is unpacked"
    if member.isdev():
        return "is a device or a pipe, not data"
    return None


def _published_md5(url):
    """The md5 GroupLens publishes at ``<url>.md5`` (``<md5>  <name>`` or ``MD5 (<name>) = <md5>``)."""
    with urllib.request.urlopen(url + ".md5", timeout=TIMEOUT_S) as response:
        text = response.read(4096).decode("ascii", "replace")
    found = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    if not found:
        raise _DownloadFailed(f"{url}.md5 holds no md5 digest: {text[:80]!r}")
    return found.group(0).lower()


def _fetch(url, dest):
    """Stream ``url`` into the file ``dest`` with a progress bar on stderr."""
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        progress = _Progress(url.rsplit("/", 1)[-1], total)
        while chunk := response.read(1 << 16):
            out.write(chunk)
            progress.update(len(chunk))
        progress.close()
    if total and progress.done != total:
        raise _DownloadFailed(f"the connection closed after {progress.done} of {total} bytes")


class _Progress:
    """A plain-text progress bar: redrawn in place on a terminal, a start and an end line otherwise."""

    def __init__(self, label, total, width=30):
        self.label, self.total, self.width, self.done = label, total, width, 0
        self.tty = sys.stderr.isatty()
        self.last_draw = 0.0
        if not self.tty:
            size = _mb(total) if total else "size unknown"
            print(f"Downloading {label} ({size}) ...", file=sys.stderr, flush=True)

    def update(self, n):
        self.done += n
        now = time.monotonic()
        if self.tty and now - self.last_draw > 0.1:  # ten redraws a second is plenty
            self.last_draw = now
            self._draw()

    def _draw(self):
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * self.width)
            text = f"{frac:4.0%} |{bar:<{self.width}}| {_mb(self.done)} / {_mb(self.total)}"
        else:
            text = _mb(self.done)
        sys.stderr.write(f"\rDownloading {self.label} {text}")
        sys.stderr.flush()

    def close(self):
        if self.tty:
            self._draw()
            sys.stderr.write("\n")
        else:
            print(f"Downloaded {self.label} ({_mb(self.done)})", file=sys.stderr, flush=True)
        sys.stderr.flush()


def _mb(n):
    return f"{n / 1e6:.1f} MB"


def _check_digest(path, algorithm, expected, label):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    actual = digest.hexdigest()
    if actual != expected.lower():
        raise ChecksumError(f"{label}: {algorithm} mismatch, expected {expected}, got {actual}. "
                            f"The download was deleted; try again, or fetch the files yourself.")


def _folder_holding(root, files):
    """The folder under ``root`` (itself included) that holds all ``files``, or None."""
    for folder in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        if _holds(folder, files):
            return folder
    return None


def _install(folder, target, required):
    """Move the unpacked ``folder`` to ``target``: one atomic rename when ``target`` is new."""
    if not target.exists():
        try:
            os.replace(folder, target)
            return
        except OSError:
            if _holds(target, required):
                return  # another process renamed its copy in first
            raise
    # `target` exists but lacks some files (a user's partial copy): add the missing ones,
    # each with its own atomic rename, leaving the user's own files as they are.
    for item in folder.iterdir():
        if not (target / item.name).exists():
            os.replace(item, target / item.name)
