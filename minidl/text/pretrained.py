"""fastai's WikiText-103 AWD-LSTM: a language model that already knows English, to start ULMFiT from.

fastai trained an AWD-LSTM (emb_sz 400, n_hid 1152, 3 layers) to predict the next word of
Wikipedia's 103 million words (WikiText-103) and publishes its weights: the archive ``WT103_URL``
holds ``lstm_fwd.pth`` (the state dict, written by torch.save) and ``itos_wt103.pkl`` (its
vocabulary, a pickled list of 60,000 tokens). ``pretrained_state(itos)`` brings them to a model:

1. **find**: in ``~/.minidl/models/wt103-fwd/`` (``$MINIDL_CACHE/models/...``, beside the vision
   weights), else downloaded there once and unpacked as safely as the data sets are. fastai
   publishes no checksum for this archive; what keeps a tampered download harmless is step 2;
2. **read** without torch: the weights with ``load_pth``, the token list with an unpickler that
   builds nothing but lists and strings (a pickle naming any function is refused, unrun);
3. **rename** to minidl's AWD_LSTM: fastai's state dict holds two copies minidl does not keep
   (the embedding seen through its dropout, ``0.encoder_dp.emb.weight``, and the dropped hidden
   matrix ``0.rnns.k.module.weight_hh_l0`` beside its trained original ``..._raw``);
4. **match the embeddings** to the new vocabulary (fastai's ``match_embeds``): a token both
   vocabularies have keeps its WikiText row; a token WikiText never saw (a film's name, "xxfake")
   gets the mean row, a guess that is at least typical; the decoder's bias likewise.

Offline with no files, there is nothing to load: a loud warning says what is missing, where to
put it, and that training starts from random weights; the caller goes on with those.
"""
import os
import pickle
import re
import shutil
import sys
import tempfile
import urllib.error
import warnings
from http.client import HTTPException
from pathlib import Path

import numpy as np

from ..data.external import _DownloadFailed, _fetch, _folder_holding, _install, _untar, cache_dir
from ..io import load_pth

__all__ = ["WT103_URL", "WT103_FILES", "PretrainedWeightsWarning", "wt103_dir", "read_itos", "read_wt103",
           "match_embeds", "pretrained_state"]

WT103_URL = "https://s3.amazonaws.com/fast-ai-modelzoo/wt103-fwd.tgz"   # fastai's URLs.WT103_FWD
WT103_FILES = ("lstm_fwd.pth", "itos_wt103.pkl")


class PretrainedWeightsWarning(UserWarning):
    """pretrained=True, but the weights could not be had: the model trains from random weights."""


def wt103_dir():
    """The WikiText-103 files' folder: ``$MINIDL_CACHE/models/wt103-fwd``, else ``~/.minidl/models/wt103-fwd``."""
    return cache_dir().parent / "models" / "wt103-fwd"


class _TokenListUnpickler(pickle.Unpickler):
    """Lists and strings need no class to be rebuilt, so a token list never asks for one: any request is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it asks to load {module}.{name}, and a list of tokens names nothing")


def read_itos(path):
    """A pickled vocabulary (a list of str), read without running anything; a clear error naming the file otherwise."""
    try:
        with open(path, "rb") as f:
            itos = _TokenListUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, RecursionError,
            MemoryError) as e:
        raise ValueError(f"{path}: not a pickled list of tokens ({type(e).__name__}: {e}); refused, nothing "
                         f"was run. Download it again from {WT103_URL}") from None
    if not isinstance(itos, list) or not all(isinstance(t, str) for t in itos):
        raise ValueError(f"{path}: holds a {type(itos).__name__}, not a list of str tokens; download it again "
                         f"from {WT103_URL}")
    return itos


_DROPPED_HIDDEN = re.compile(r"0\.rnns\.\d+\.module\.weight_hh_l0")


def read_wt103(folder):
    """(state dict with minidl's names, itos) from ``folder``'s lstm_fwd.pth and itos_wt103.pkl."""
    weights_file, itos_file = (Path(folder) / name for name in WT103_FILES)
    wgts = load_pth(weights_file)          # a PthError naming the file if it is damaged or not a state dict
    if isinstance(wgts, dict) and "model" in wgts:
        wgts = wgts["model"]               # saved with its optimizer: the model's part
    if not isinstance(wgts, dict) or "0.encoder.weight" not in wgts:
        raise ValueError(f"{weights_file}: holds no '0.encoder.weight', so it is not fastai's AWD-LSTM language "
                         f"model; download it again from {WT103_URL}")
    state = {k: np.asarray(v) for k, v in wgts.items()
             if k != "0.encoder_dp.emb.weight" and not _DROPPED_HIDDEN.fullmatch(k)}
    itos = read_itos(itos_file)
    if len(itos) != len(state["0.encoder.weight"]):
        raise ValueError(f"{itos_file}: {len(itos)} tokens for the {len(state['0.encoder.weight'])} rows of the "
                         f"embedding in {weights_file}; the two files do not belong together")
    return state, itos


def match_embeds(state, old_itos, new_itos):
    """``state`` with its embedding (and tied decoder) rows and decoder bias reordered for ``new_itos``:
    a token of ``old_itos`` keeps its row; a new one gets the mean row (and the mean bias)."""
    old_index = {tok: i for i, tok in enumerate(old_itos)}
    rows = np.array([old_index.get(tok, -1) for tok in new_itos])
    known = (rows >= 0)[:, None]
    state = dict(state)
    weight = state["0.encoder.weight"]
    state["0.encoder.weight"] = np.where(known, weight[rows], weight.mean(0))
    state["1.decoder.weight"] = state["0.encoder.weight"]           # tied: the same matrix
    if "1.decoder.bias" in state:
        bias = state["1.decoder.bias"]
        state["1.decoder.bias"] = np.where(known[:, 0], bias[rows], bias.mean())
    return state


def pretrained_state(new_itos, who):
    """The WikiText-103 language model's state dict (minidl's names) matched to ``new_itos``, and the file it
    came from; (None, None) with a loud warning when the files are neither in ``wt103_dir()`` nor downloadable."""
    folder = wt103_dir()
    if not all((folder / name).is_file() for name in WT103_FILES):
        try:
            _download(folder)
        except _DownloadFailed as e:
            _warn_random_weights(who, folder, e)
            return None, None
    state, old_itos = read_wt103(folder)
    return match_embeds(state, old_itos, new_itos), folder / WT103_FILES[0]


def _warn_random_weights(who, folder, why):
    message = (f"\n*** {who}(pretrained=True): no WikiText-103 weights, so training starts from RANDOM weights. ***\n"
               f"The pretrained AWD-LSTM ({', '.join(WT103_FILES)}) is not in {folder}, and the download of "
               f"{WT103_URL} failed ({why}).\n"
               f"Fix: on a machine with a network, download that archive and unpack its two files into {folder}/ "
               f"(or set MINIDL_CACHE to a folder whose models/wt103-fwd/ holds them); pretrained=False trains "
               f"from random weights without this warning.\n")
    print(message, file=sys.stderr, flush=True)
    warnings.warn(message, PretrainedWeightsWarning, stacklevel=4)


def _download(folder):
    """Download ``WT103_URL``, unpack it beside ``folder`` and move its two files into ``folder``."""
    models = folder.parent
    try:
        models.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _DownloadFailed(f"cannot create the folder {models}: {e}") from e
    fd, archive = tempfile.mkstemp(dir=models, prefix=".wt103-fwd-", suffix=".tgz.part")
    os.close(fd)
    archive = Path(archive)
    unpacked = Path(tempfile.mkdtemp(dir=models, prefix=".wt103-fwd-", suffix=".unpacking"))
    try:
        try:
            _fetch(WT103_URL, archive)
        except (OSError, HTTPException) as e:   # URLError, HTTPError, timeouts, resets
            raise _DownloadFailed(e.reason if type(e) is urllib.error.URLError else e) from e
        _untar(archive, unpacked)              # every member checked before anything is written
        found = _folder_holding(unpacked, WT103_FILES)
        if found is None:
            raise _DownloadFailed(f"the archive holds no folder with {' and '.join(WT103_FILES)}")
        _install(found, folder, WT103_FILES)
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(unpacked, ignore_errors=True)
