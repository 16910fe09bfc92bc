"""fastai's WikiText-103 AWD-LSTM as ULMFiT's start: found in $MINIDL_CACHE/models/wt103-fwd or downloaded there,
read without torch, renamed for minidl, its embedding rows matched to a new vocabulary; offline, a loud warning
and random weights; a bad file, an error naming it. The weights here are a small fake written by torch.save with
fastai's key names (and a local server stands in for fastai's model zoo)."""
import http.server
import io
import pickle
import tarfile
import threading

import numpy as np
import pandas as pd
import pytest

import minidl
from minidl.io import PthError
from minidl.text import pretrained
from minidl.text.data import TextDataLoaders
from minidl.text.learner import language_model_learner, text_classifier_learner
from minidl.text.pretrained import PretrainedWeightsWarning, match_embeds, read_itos

SIZES = dict(emb_sz=8, n_hid=12, n_layers=2)
OLD_ITOS = ["xxunk", "xxpad", "xxbos", "xxmaj", "the", "film", "was", "good", "bad", "wikipedia", "century", "."]


def fastai_state_dict(torch, itos, emb_sz, n_hid, n_layers):
    """A language model's state dict as fastai saves it: the embedding twice (and tied to the decoder), each
    LSTM's hidden matrix twice (the trained ``_raw`` and WeightDropout's dropped copy), in fastai's order."""
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(len(itos), emb_sz, generator=g)
    state = {"0.encoder.weight": emb, "0.encoder_dp.emb.weight": emb}
    for k in range(n_layers):
        n_in, n_out = emb_sz if k == 0 else n_hid, n_hid if k < n_layers - 1 else emb_sz
        state[f"0.rnns.{k}.weight_hh_l0_raw"] = torch.randn(4 * n_out, n_out, generator=g)
        state[f"0.rnns.{k}.module.weight_ih_l0"] = torch.randn(4 * n_out, n_in, generator=g)
        state[f"0.rnns.{k}.module.weight_hh_l0"] = torch.zeros(4 * n_out, n_out)     # dropped: not what is trained
        state[f"0.rnns.{k}.module.bias_ih_l0"] = torch.randn(4 * n_out, generator=g)
        state[f"0.rnns.{k}.module.bias_hh_l0"] = torch.randn(4 * n_out, generator=g)
    state["1.decoder.weight"] = emb
    state["1.decoder.bias"] = torch.randn(len(itos), generator=g)
    return state


def write_wt103(folder, itos=OLD_ITOS, **sizes):
    """lstm_fwd.pth and itos_wt103.pkl in ``folder``; returns the state dict as numpy arrays."""
    torch = pytest.importorskip("torch", reason="the fake WikiText-103 weights are written with torch.save")
    folder.mkdir(parents=True, exist_ok=True)
    state = fastai_state_dict(torch, itos, **dict(SIZES, **sizes))
    torch.save(state, folder / "lstm_fwd.pth")
    (folder / "itos_wt103.pkl").write_bytes(pickle.dumps(itos))
    return {k: v.numpy() for k, v in state.items()}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty MINIDL_CACHE, and fastai's model zoo out of reach: nothing is downloaded unless a test serves it."""
    monkeypatch.setenv("MINIDL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pretrained, "WT103_URL", "http://127.0.0.1:9/wt103-fwd.tgz")   # nothing listens
    return tmp_path / "cache"


def reviews_df():
    texts = ["The film was good .", "The film was bad .", "A good cast , a good story .", "Dull and bad ."] * 6
    return pd.DataFrame({"text": texts, "label": ["pos", "neg"] * 12, "is_valid": [False] * 18 + [True] * 6})


def test_match_embeds_keeps_shared_rows_and_gives_new_tokens_the_mean():
    weight, bias = np.arange(15.0).reshape(5, 3), np.arange(5.0)
    state = match_embeds({"0.encoder.weight": weight, "1.decoder.bias": bias}, ["a", "b", "c"], ["a", "c", "d", "b"])
    new = state["0.encoder.weight"]
    np.testing.assert_array_equal(new[[0, 1, 3]], weight[[0, 2, 1]])
    np.testing.assert_array_equal(new[2], weight.mean(0))
    np.testing.assert_array_equal(state["1.decoder.bias"], [0, 2, bias.mean(), 1])
    assert state["1.decoder.weight"] is new                                  # tied


def test_the_language_model_starts_from_the_files_weights_matched_to_its_vocabulary(cache):
    minidl.set_seed(0)
    file = write_wt103(cache / "models" / "wt103-fwd")
    dls = TextDataLoaders.from_df(reviews_df(), is_lm=True, valid_col="is_valid", bs=2, seq_len=6, min_freq=1)
    learn = language_model_learner(dls, config=SIZES)                      # pretrained=True, fastai's default
    encoder, decoder = learn.model[0], learn.model[1].decoder
    old = {tok: i for i, tok in enumerate(OLD_ITOS)}
    emb, bias = encoder.encoder.weight.numpy(), decoder.bias.numpy()
    shared = [tok for tok in dls.vocab.itos if tok in old]
    assert {"the", "film", "good", "xxbos", "xxmaj", "."} <= set(shared) and "cast" in dls.vocab.itos
    for i, tok in enumerate(dls.vocab.itos):
        row = file["0.encoder.weight"][old[tok]] if tok in old else file["0.encoder.weight"].mean(0)
        np.testing.assert_allclose(emb[i], row, rtol=1e-6, err_msg=tok)
        np.testing.assert_allclose(bias[i], file["1.decoder.bias"][old[tok]] if tok in old
                                   else file["1.decoder.bias"].mean(), rtol=1e-6, err_msg=tok)
    assert decoder.weight is encoder.encoder.weight
    for k, rnn in enumerate(encoder.rnns):
        np.testing.assert_array_equal(rnn.weight_hh_l0_raw.numpy(), file[f"0.rnns.{k}.weight_hh_l0_raw"])
        np.testing.assert_array_equal(rnn.module.weight_ih_l0.numpy(), file[f"0.rnns.{k}.module.weight_ih_l0"])
        np.testing.assert_array_equal(rnn.module.bias_hh_l0.numpy(), file[f"0.rnns.{k}.module.bias_hh_l0"])
        assert not rnn.weight_hh_l0_raw.requires_grad                      # frozen: the embeddings learn first
    assert encoder.encoder.weight.requires_grad and decoder.bias.requires_grad
    learn.fit_one_cycle(1, 1e-2)                                            # and it trains


def test_the_classifier_starts_from_the_files_encoder(cache):
    file = write_wt103(cache / "models" / "wt103-fwd")
    dls = TextDataLoaders.from_df(reviews_df(), valid_col="is_valid", bs=4, min_freq=1)
    learn = text_classifier_learner(dls, config=SIZES)
    encoder = learn.model[0].module
    k = dls.vocab.itos.index("good")
    np.testing.assert_array_equal(encoder.encoder.weight.numpy()[k], file["0.encoder.weight"][OLD_ITOS.index("good")])
    np.testing.assert_array_equal(encoder.rnns[1].module.weight_ih_l0.numpy(), file["0.rnns.1.module.weight_ih_l0"])
    assert not encoder.encoder.weight.requires_grad and learn.model[1].layers[-1].weight.requires_grad  # head only
    label, _, probs = learn.predict("The film was good .")
    assert label in ("neg", "pos") and probs.shape == (2,)


def test_the_weights_are_downloaded_once_into_the_cache(cache, monkeypatch):
    source = cache.parent / "zoo" / "wt103-fwd"
    write_wt103(source)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:                 # fastai's archive: a wt103-fwd/ folder
        tar.add(source, arcname="wt103-fwd")
    hits = []

    class Zoo(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(archive.getvalue())))
            self.end_headers()
            self.wfile.write(archive.getvalue())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Zoo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(pretrained, "WT103_URL", f"http://127.0.0.1:{server.server_address[1]}/wt103-fwd.tgz")
    try:
        dls = TextDataLoaders.from_df(reviews_df(), valid_col="is_valid", bs=4, min_freq=1)
        text_classifier_learner(dls, config=SIZES)
        assert sorted(p.name for p in (cache / "models" / "wt103-fwd").iterdir()) == ["itos_wt103.pkl", "lstm_fwd.pth"]
        assert [p.name for p in (cache / "models").iterdir()] == ["wt103-fwd"]   # no leftovers of the download
        text_classifier_learner(dls, config=SIZES)
        assert hits == ["/wt103-fwd.tgz"]                                     # the second time, from the cache
    finally:
        server.shutdown()
        server.server_close()


def test_offline_without_the_files_it_warns_loudly_and_trains_from_random_weights(cache, capsys):
    dls = TextDataLoaders.from_df(reviews_df(), is_lm=True, valid_col="is_valid", bs=2, seq_len=6, min_freq=1)
    with pytest.warns(PretrainedWeightsWarning) as record:
        learn = language_model_learner(dls, config=SIZES)
    message = str(record[0].message)
    folder = cache / "models" / "wt103-fwd"
    for said in ("RANDOM weights", "lstm_fwd.pth", "itos_wt103.pkl", str(folder), "http://127.0.0.1:9/wt103-fwd.tgz",
                 "Connection refused", "pretrained=False"):
        assert said in message, said
    assert message in capsys.readouterr().err                               # printed as well
    assert all(p.requires_grad for p in learn.model.parameters())          # nothing loaded, nothing frozen
    with pytest.warns(PretrainedWeightsWarning):
        text_classifier_learner(TextDataLoaders.from_df(reviews_df(), valid_col="is_valid", min_freq=1), config=SIZES)


def test_bad_files_are_named(cache, tmp_path):
    folder = cache / "models" / "wt103-fwd"
    write_wt103(folder)
    dls = TextDataLoaders.from_df(reviews_df(), valid_col="is_valid", bs=4, min_freq=1)
    with pytest.raises(ValueError, match=r"lstm_fwd\.pth does not fit this AWD_LSTM: its weights were trained with "
                                         r"emb_sz=8, n_hid=12, n_layers=2"):
        text_classifier_learner(dls, config=dict(SIZES, n_hid=16))

    (folder / "itos_wt103.pkl").write_bytes(pickle.dumps(OLD_ITOS[:-1]))
    with pytest.raises(ValueError, match=r"itos_wt103\.pkl: 11 tokens for the 12 rows of the embedding in .*lstm_fwd"):
        text_classifier_learner(dls, config=SIZES)

    (folder / "itos_wt103.pkl").write_bytes(pickle.dumps({"the": 0}))
    with pytest.raises(ValueError, match=r"itos_wt103\.pkl: holds a dict, not a list of str tokens"):
        text_classifier_learner(dls, config=SIZES)

    class Payload:                                                          # a pickle that would run a command
        def __reduce__(self):
            import os
            return os.system, (f"touch {tmp_path / 'ran'}",)
    (folder / "itos_wt103.pkl").write_bytes(pickle.dumps(["the", Payload()]))
    with pytest.raises(ValueError, match=r"itos_wt103\.pkl: not a pickled list of tokens .*asks to load "
                                         r"(posix|os)\.system.*refused, nothing was run"):
        read_itos(folder / "itos_wt103.pkl")
    assert not (tmp_path / "ran").exists()

    (folder / "lstm_fwd.pth").write_bytes(b"not a state dict")
    with pytest.raises(PthError, match=r"lstm_fwd\.pth"):
        text_classifier_learner(dls, config=SIZES)
