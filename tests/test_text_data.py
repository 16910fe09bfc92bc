"""Text data: fastai's tokenization rules, the vocabulary, language-model streams that continue from batch
to batch, padded classification batches, the token cache, and errors that name the row or file."""
import numpy as np
import pandas as pd
import pytest

from minidl.text import core
from minidl.text.core import SPECIAL_TOKENS, Vocab, tokenize
from minidl.text.data import LMDataLoader, TextClassLoader, TextDataLoaders, tokenize_texts


@pytest.mark.parametrize("rule, text, expected", [
    (core.fix_html, "good<br />bad &amp; ugly &quot;x&quot;", 'good\nbad & ugly "x"'),
    (core.replace_rep, "wow!!!!! ok", "wow xxrep 5 !  ok"),
    (core.replace_rep, "cool!!", "cool!!"),                                  # 2 is not a repetition yet
    (core.replace_wrep, "it is very very very good", "it is xxwrep 3 very good"),
    (core.spec_add_spaces, "10/10 #1", "10 / 10  # 1"),
    (core.rm_useless_spaces, "a   b  c", "a b c"),
    (core.replace_all_caps, "I LOVED it, OK?", "I xxup loved it, xxup ok?"),
    (core.replace_maj, "Really good, I think", "xxmaj really good, I think"),
    (core.lowercase, "  Hello World ", "xxbos hello world"),
])
def test_each_rule(rule, text, expected):
    assert rule(text) == expected


def test_tokenize_applies_the_rules_then_splits_words():
    assert tokenize("I LOVED it!!!! <br />Really. Don't miss it, it's 10/10.") == [
        "xxbos", "i", "xxup", "loved", "it", "xxrep", "4", "!", "xxmaj", "really", ".", "xxmaj", "do", "n't",
        "miss", "it", ",", "it", "'s", "10", "/", "10", "."]
    with pytest.raises(TypeError, match="a text is a str, got float"):
        tokenize(float("nan"))


def test_vocab_keeps_frequent_tokens_after_the_special_ones():
    tokens = [["xxbos", "a", "b", "a", "c"], ["xxbos", "a", "b", "d"]]
    vocab = Vocab.from_tokens(tokens, min_freq=2)
    assert vocab.itos[:len(SPECIAL_TOKENS)] == SPECIAL_TOKENS and vocab.itos[9:11] == ["a", "b"]
    assert len(vocab) % 8 == 0 and all(t.startswith("xxfake") for t in vocab.itos[11:])
    assert vocab.numericalize(["a", "c", "zzz"]) == [9, 0, 0]                 # below min_freq and unseen: xxunk
    assert vocab.decode(vocab.numericalize(["xxbos", "b", "a"])) == "xxbos b a"
    assert len(Vocab.from_tokens(tokens, min_freq=1, max_vocab=10).itos[:10]) == 10


def test_the_language_model_stream_continues_from_batch_to_batch():
    texts = [list(range(100 * k, 100 * k + n)) for k, n in enumerate([30, 50, 40, 61])]   # 181 tokens
    dl = LMDataLoader(texts, bs=4, seq_len=7)
    stream = np.concatenate(texts)
    windows = list(dl)
    assert len(windows) == len(dl) and all(x.shape == y.shape for x, y in windows)
    x_rows = np.concatenate([x.numpy() for x, _ in windows], axis=1)
    y_rows = np.concatenate([y.numpy() for _, y in windows], axis=1)
    row_len = 180 // 4
    np.testing.assert_array_equal(x_rows, stream[:4 * row_len].reshape(4, row_len)[:, :x_rows.shape[1]])
    np.testing.assert_array_equal(y_rows, stream[1:4 * row_len + 1].reshape(4, row_len)[:, :y_rows.shape[1]])
    assert x_rows.shape[1] >= row_len - 1                                   # nothing of the stream left out


def test_training_streams_shuffle_texts_and_jitter_lengths_reproducibly():
    texts = [[k] * 40 for k in range(30)]
    dl = LMDataLoader(texts, bs=4, seq_len=20, shuffle=True, seed=1)
    first = [(x.shape[1], int(x.numpy()[0, 0])) for x, _ in dl]
    second = [(x.shape[1], int(x.numpy()[0, 0])) for x, _ in dl]
    assert first != second                                                  # a new order each epoch
    assert len({n for n, _ in first + second}) > 2                          # window lengths vary
    dl.epoch = 0
    assert [(x.shape[1], int(x.numpy()[0, 0])) for x, _ in dl] == first     # the same seed, the same epoch


def test_classification_batches_pad_at_the_start_and_group_similar_lengths():
    rng = np.random.default_rng(0)
    texts = [list(rng.integers(2, 50, n)) for n in rng.integers(3, 60, 100)]
    dl = TextClassLoader(texts, np.arange(100) % 2, bs=8, shuffle=True, seed=0, pad_id=1)
    seen = []
    widths = []
    for x, y in dl:
        x = x.numpy()
        for row in x:
            real = row[np.argmax(row != 1):]
            assert (row[:len(row) - len(real)] == 1).all()                 # padding first, then the text
            seen.append(tuple(real))
        widths.append(x.shape[1] - np.mean([np.sum(r != 1) for r in x]))
    assert sorted(seen) == sorted(tuple(t) for t in texts)                  # every text once
    assert np.mean(widths) < 5                                              # little padding per row
    truncated = TextClassLoader(texts, None, bs=4, max_len=10).one_batch()[0].numpy()
    assert truncated.shape[1] <= 10


def test_from_df_splits_numbers_and_labels(tmp_path):
    df = pd.DataFrame({"text": ["a good film", "a bad film", "good good", "bad bad", "so good", "so bad"] * 5,
                       "label": ["pos", "neg"] * 15, "is_valid": [False] * 24 + [True] * 6})
    dls = TextDataLoaders.from_df(df, valid_col="is_valid", bs=4, min_freq=1, cache=tmp_path)
    assert dls.classes == ["neg", "pos"] and len(dls.train.dataset) == 24 and len(dls.valid.dataset) == 6
    x, y = dls.valid.one_batch()
    assert x.dtype == y.dtype and set(y.numpy()) <= {0, 1}
    assert list(tmp_path.glob("tokens-*.json"))                              # tokenized once, kept on disk
    lm = TextDataLoaders.from_df(df, is_lm=True, valid_col="is_valid", bs=2, seq_len=5, min_freq=1)
    assert lm.is_lm and lm.c == len(lm.vocab)


def test_the_token_cache_is_read_back(tmp_path, monkeypatch):
    first = tokenize_texts(["Some text here.", "More TEXT."], cache=tmp_path)
    monkeypatch.setattr("minidl.text.data.tokenize", lambda t: pytest.fail("tokenized again"))
    assert tokenize_texts(["Some text here.", "More TEXT."], cache=tmp_path) == first


def test_bad_texts_are_named(tmp_path):
    df = pd.DataFrame({"text": ["fine", "  ", None], "label": ["a", "b", "a"]})
    with pytest.raises(ValueError, match=r"column 'text' is empty at rows \['1', '2'\]"):
        TextDataLoaders.from_df(df)
    for split, label in (("train", "pos"), ("valid", "pos"), ("train", "neg"), ("valid", "neg")):
        (tmp_path / split / label).mkdir(parents=True)
        (tmp_path / split / label / "1.txt").write_text("a review")
    (tmp_path / "train" / "pos" / "2.txt").write_bytes("caf\xe9".encode("latin1"))
    with pytest.raises(ValueError, match=r"train/pos/2\.txt: not UTF-8 text"):
        TextDataLoaders.from_folder(tmp_path)
    (tmp_path / "train" / "pos" / "2.txt").write_text("")
    with pytest.raises(ValueError, match=r"2\.txt: the file is empty"):
        TextDataLoaders.from_folder(tmp_path)
    (tmp_path / "train" / "pos" / "2.txt").unlink()
    (tmp_path / "train" / "unsup").mkdir()                                  # IMDb's reviews with no label
    (tmp_path / "train" / "unsup" / "1.txt").write_text("an unlabelled review")
    assert TextDataLoaders.from_folder(tmp_path, min_freq=1, bs=2).classes == ["neg", "pos"]
    (tmp_path / "valid" / "odd").mkdir()
    (tmp_path / "valid" / "odd" / "1.txt").write_text("another review")
    with pytest.raises(ValueError, match=r"valid/odd/1\.txt \(and 0 more\) is labelled 'odd', a folder .*train "
                                         r"does not have \(it has \['neg', 'pos'\]\)"):
        TextDataLoaders.from_folder(tmp_path, min_freq=1)
    assert TextDataLoaders.from_folder(tmp_path, classes=["pos", "neg"], min_freq=1, bs=2).classes == ["neg", "pos"]


def test_missing_and_unknown_labels_are_named():
    df = pd.DataFrame({"text": ["good film", "bad film", "fine", "poor"], "label": ["pos", None, "pos", " "]})
    with pytest.raises(ValueError, match=r"column 'label' has no label at rows \['1', '3'\] \(2 in all\)"):
        TextDataLoaders.from_df(df)
    df = pd.DataFrame({"text": ["good film", "bad film"] * 6, "label": ["pos", "neg"] * 5 + ["pos", "meh"],
                       "is_valid": [False] * 9 + [True] * 3})
    with pytest.raises(ValueError, match=r"validation labels \['meh'\] never occur in training \(texts \[11\]"):
        TextDataLoaders.from_df(df, valid_col="is_valid")
    dls = TextDataLoaders.from_df(df[:10], bs=4, min_freq=1, valid_pct=0.25, seed=0)
    test = dls.test_dl(["a good film", "a bad film", "so so"], ["pos", "neg", "pos"])
    x, y = test.one_batch()
    assert x.shape[0] == 3 and sorted(y.numpy()) == [0, 1, 1]
    with pytest.raises(ValueError, match=r"test_dl: labels \['meh'\] are not among the classes \['neg', 'pos'\] "
                                         r"\(test texts \[2\], 1 in all\)"):
        dls.test_dl(["a good film", "a bad film", "so so"], ["pos", "neg", "meh"])
    with pytest.raises(ValueError, match="test text 1 is empty"):
        dls.test_dl(["a good film", ""])


@pytest.mark.parametrize("make", [
    lambda ids: LMDataLoader(ids, bs=4, seq_len=5, shuffle=True, seed=3),
    lambda ids: TextClassLoader(ids, [k % 2 for k in range(len(ids))], bs=3, shuffle=True, seed=3),
], ids=["language model", "classifier"])
def test_shards_of_two_ranks_interleave_back_into_each_batch(make):
    """Data parallel: rank r keeps rows r, r + 2, ... of every batch, the same batches on both ranks (the LM's
    streams stay whole, so each rank carries its own rows' hidden state); a batch of one row is lent to both."""
    rng = np.random.default_rng(0)
    ids = [rng.integers(2, 50, size=n) for n in rng.integers(3, 12, size=7)]
    whole = list(make(ids))
    parts = [list(make(ids).shard(r, 2)) for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == len(whole)
    for batch, mine, theirs in zip(whole, *parts):
        for field, a, b in zip(batch, mine, theirs):
            rows = field.numpy()
            if len(rows) == 1:
                assert np.array_equal(a.numpy(), rows) and np.array_equal(b.numpy(), rows)
                continue
            for part, mine in ((a.numpy(), rows[0::2]), (b.numpy(), rows[1::2])):
                width = part.shape[-1]        # a classifier's rank pads its rows to their own longest
                assert np.array_equal(part, mine[..., mine.shape[-1] - width:])
                assert (mine[..., :mine.shape[-1] - width] == 1).all()          # what it left out was padding
    assert len(list(make(ids).shard(1, 2).new())) == len(whole)        # new(): the whole set again, to predict
    with pytest.raises(ValueError, match="rank must lie in"):
        make(ids).shard(2, 2)


def test_backwards_loaders_read_every_text_from_its_end():
    """ULMFiT's second model: the same batches with each text's ids reversed (the language model's stream too),
    new texts (test_dl) numbered the same way, and the vocabulary unchanged."""
    texts = ["the plot was superb", "a dull and tedious film", "superb", "tedious film"] * 3
    labels = ["pos", "neg", "pos", "neg"] * 3
    splits = (list(range(8)), list(range(8, 12)))
    common = dict(splits=splits, bs=4, min_freq=1, seed=0)
    fwd = TextDataLoaders.from_texts(texts, labels, **common)
    bwd = TextDataLoaders.from_texts(texts, labels, backwards=True, **common)
    assert bwd.backwards and not fwd.backwards and bwd.vocab.itos == fwd.vocab.itos
    for dl_f, dl_b in ((fwd.valid, bwd.valid), (fwd.test_dl(texts[:4]), bwd.test_dl(texts[:4]))):
        for (xf, *yf), (xb, *yb) in zip(dl_f, dl_b):
            for row_f, row_b in zip(xf.numpy(), xb.numpy()):
                words_f, words_b = row_f[row_f != 1], row_b[row_b != 1]         # padding (id 1) left out
                assert list(words_b) == list(words_f[::-1]) and len(words_f) > 1
            assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(yf, yb))
    assert bwd.numericalize(["superb", "film"]) == fwd.numericalize(["film", "superb"])
    lm_f = TextDataLoaders.from_texts(texts, is_lm=True, splits=splits, bs=2, seq_len=4, min_freq=1)
    lm_b = TextDataLoaders.from_texts(texts, is_lm=True, splits=splits, bs=2, seq_len=4, min_freq=1, backwards=True)
    stream_f = np.concatenate([x.numpy()[0] for x, _ in lm_f.valid])
    stream_b = np.concatenate([x.numpy()[0] for x, _ in lm_b.valid])
    first = fwd.vocab.numericalize(tokenize(texts[8]))
    assert list(stream_b[:len(first)]) == first[::-1] and list(stream_f[:len(first)]) == first
