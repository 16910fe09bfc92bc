"""Text data: tokenized texts cached on disk, language-model streams, and padded batches of reviews.

Two kinds of batches, as in fastai (ULMFiT):

* **language model** (``is_lm=True``): every text (each begun with xxbos) is joined into one long
  stream, the stream is cut into ``bs`` equal rows laid one under the other, and the rows are
  read left to right ``seq_len`` tokens at a time. Row r of batch k+1 continues row r of batch
  k, so a model that keeps its hidden state from batch to batch reads each row as one long
  text. The target is the input shifted by one token: predict the next word. In training the
  texts are shuffled each epoch and each window's length varies around ``seq_len`` (fastai's
  jitter: ``seq_len`` 95% of the time, else half of it, plus normal noise of 5), so the
  windows do not always cut the stream at the same places.
* **classification**: one review per row, padded with xxpad at the start (so its last tokens,
  which the classifier's last hidden state reads, line up at the end). Rows of similar length
  go together (``SortedBatches``), so little of a batch is padding.
"""
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .. import random as _random
from ..data import DataLoaders, RandomSplitter
from ..data.core import set_shard
from ..tensor import tensor
from .core import PAD, RULES, Vocab, tokenize

__all__ = ["tokenize_texts", "LMDataLoader", "SortedBatches", "TextClassLoader", "TextDataLoaders", "read_text_file"]


def tokenize_texts(texts, cache=None, what="texts"):
    """Each text's tokens. With ``cache`` (a folder), they are kept there in a file named after a hash of
    the texts and the rules, so a second run on the same texts reads them instead of tokenizing again."""
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"tokenize_texts: {what} {i} is {'empty' if isinstance(t, str) else repr(t)[:40]}; "
                             f"every text needs words (drop the empty ones first)")
    if cache is None:
        return [tokenize(t) for t in texts]
    digest = hashlib.sha256()
    for name in [r.__name__ for r in RULES] + texts:
        digest.update(name.encode("utf-8", "surrogatepass") + b"\0")
    path = Path(cache) / f"tokens-{digest.hexdigest()[:20]}.json"
    if path.is_file():
        return json.loads(path.read_text())
    tokens = [tokenize(t) for t in texts]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(tokens))
    os.replace(tmp, path)      # a run killed half-way leaves no half-written cache
    return tokens


def read_text_file(path):
    """A review file's text (UTF-8); an error naming the file if it is not UTF-8 or holds nothing."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); convert it, e.g. "
                         f"iconv -f latin1 -t utf-8") from None
    if not text.strip():
        raise ValueError(f"{path}: the file is empty; a review needs words")
    return text


class _TextLoader:
    """What a Learner asks of a loader beyond iterating it: its device, a copy in order, its texts, a shard."""
    rank, world_size = 0, 1   # data parallel (shard): this process's part of every batch

    @property
    def dataset(self):
        return self.texts

    @property
    def batch_size(self):
        return self.bs

    def to(self, device):
        """Put the batches on ``device`` (in place; returns self)."""
        self.device = device
        return self

    def new(self, shuffle=False, **ignored):
        """A copy of this loader that does not shuffle (to predict on, in order)."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__, shuffle=shuffle, rank=0, world_size=1)
        if hasattr(self, "sampler"):
            copy.sampler = SortedBatches(self.sampler.lengths, self.bs, shuffle)
        return copy

    def shard(self, rank, world_size, seed=None):
        """Data parallelism (as DataLoader.shard): every rank draws the same order (``seed``, the same on all
        ranks, for a shuffling loader without one) and keeps rows rank, rank + world_size, ... of each batch."""
        set_shard(self, rank, world_size, seed)
        return self

    def rows_in_batch(self, i):
        """How many texts batch ``i`` holds before sharding (the last may hold fewer)."""
        return min(self.bs, len(self.texts) - i * self.bs)

    def _part(self, rows):
        """This rank's rows of a batch (positions rank, rank + world_size, ...); a batch with fewer rows than
        ranks lends its first row to the ranks without one."""
        if self.world_size == 1:
            return rows
        if len(rows) < self.world_size:
            rows = np.concatenate([rows, np.repeat(rows[:1], self.world_size - len(rows), axis=0)])
        return rows[self.rank::self.world_size]


class LMDataLoader(_TextLoader):
    """Batches (x, y) of a language model over texts of token ids: x (bs, seq_len), y = the next tokens.

    ``len(self)`` is the number of windows in an epoch; ``seed`` fixes each epoch's text order and
    window lengths (training only: ``shuffle``)."""

    def __init__(self, ids, bs=64, seq_len=72, shuffle=False, seed=None, device="cpu"):
        self.texts = [np.asarray(t, dtype=np.int64) for t in ids]
        total = sum(len(t) for t in self.texts)
        if total < bs * 2:
            raise ValueError(f"LMDataLoader: {total} tokens are too few for {bs} rows; use a smaller bs")
        self.bs, self.seq_len, self.shuffle, self.seed, self.device = bs, seq_len, shuffle, seed, device
        self.row_len = (total - 1) // bs       # each row needs one more token than it shows, for its targets
        self.epoch = 0

    def __len__(self):
        return -(-(self.row_len - 1) // self.seq_len) if self.row_len > 1 else 0

    def rows_in_batch(self, i):
        """Every window has ``bs`` rows (streams)."""
        return self.bs

    def _rng(self):
        if self.seed is not None:
            return np.random.default_rng([self.seed, self.epoch])
        return _random.generator() if self.shuffle else np.random.default_rng(0)

    def _rows(self, rng):
        order = rng.permutation(len(self.texts)) if self.shuffle else range(len(self.texts))
        stream = np.concatenate([self.texts[i] for i in order])
        return stream[:self.bs * self.row_len + 1], self.row_len

    def __iter__(self):
        rng = self._rng()
        stream, row_len = self._rows(rng)
        rows = self._part(stream[:self.bs * row_len].reshape(self.bs, row_len))   # each rank: some of the streams
        targets = self._part(stream[1:self.bs * row_len + 1].reshape(self.bs, row_len))
        start = 0
        while start < row_len - 1:
            n = self.seq_len
            if self.shuffle:   # fastai's jitter of the window length
                base = self.seq_len if rng.random() < 0.95 else self.seq_len / 2
                n = max(5, int(rng.normal(base, 5)))
            n = min(n, row_len - start)
            yield (tensor(rows[:, start:start + n], device=self.device),
                   tensor(targets[:, start:start + n], device=self.device))
            start += n
        self.epoch += 1

    def one_batch(self):
        """The first window of the stream in text order (no shuffling, no jitter): to look at or to size a model."""
        return next(iter(LMDataLoader(self.texts, self.bs, self.seq_len, device=self.device)))


class SortedBatches:
    """The order of a classification epoch: texts of similar length in the same batch.

    Training (``shuffle``): the texts are shuffled, cut into chunks of 50 batches, each chunk sorted
    by length and cut into batches, and the batches shuffled (fastai's SortedDL); the longest batch
    comes first, so running out of memory happens at once, not at the end. Validation: longest first."""

    def __init__(self, lengths, bs, shuffle):
        self.lengths, self.bs, self.shuffle = np.asarray(lengths), bs, shuffle

    def batches(self, rng):
        """This epoch's batches, each an array of text indices (``rng`` draws the training order)."""
        n, bs = len(self.lengths), self.bs
        if not self.shuffle:
            order = np.argsort(-self.lengths, kind="stable")
            return [order[i:i + bs] for i in range(0, n, bs)]
        order = rng.permutation(n)
        chunk = 50 * bs
        parts = []
        for i in range(0, n, chunk):
            part = order[i:i + chunk]
            part = part[np.argsort(-self.lengths[part], kind="stable")]
            parts += [part[j:j + bs] for j in range(0, len(part), bs)]
        longest = int(np.argmax([self.lengths[b].max() for b in parts]))
        rest = [parts[k] for k in rng.permutation(len(parts)) if k != longest]
        return [parts[longest]] + rest


class TextClassLoader(_TextLoader):
    """Batches (x, y) of reviews padded at the start to the batch's longest (at most ``max_len`` tokens: the
    rest is cut from the start, the end being what the classifier reads last), and their labels."""

    def __init__(self, ids, labels, bs=64, shuffle=False, seed=None, device="cpu", pad_id=1, max_len=None):
        self.texts = [np.asarray(t, dtype=np.int64) for t in ids]
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.bs, self.shuffle, self.seed, self.device, self.pad_id, self.max_len = bs, shuffle, seed, device, pad_id, max_len
        self.sampler = SortedBatches([len(t) for t in self.texts], bs, shuffle)
        self.epoch = 0

    def __len__(self):
        return -(-len(self.texts) // self.bs)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch]) if self.seed is not None else _random.generator()
        for idx in self.sampler.batches(rng):
            yield self.batch_of(self._part(idx))
        self.epoch += 1

    def batch_of(self, idx):
        """The padded batch of texts ``idx`` (and their labels)."""
        texts = [self.texts[i][-self.max_len:] if self.max_len else self.texts[i] for i in idx]
        width = max(len(t) for t in texts)
        x = np.full((len(texts), width), self.pad_id, dtype=np.int64)
        for row, t in enumerate(texts):
            x[row, width - len(t):] = t
        fields = [tensor(x, device=self.device)]
        if self.labels is not None:
            fields.append(tensor(self.labels[np.asarray(idx)], device=self.device))
        return tuple(fields)

    def one_batch(self):
        """The first ``bs`` texts, padded, as a batch."""
        return self.batch_of(np.arange(min(self.bs, len(self.texts))))


class TextDataLoaders(DataLoaders):
    """Training and validation loaders of texts, for a language model (``is_lm``) or a classifier;
    ``vocab`` (a Vocab) numbers the tokens, ``classes`` the labels (classification)."""

    def __init__(self, train, valid, vocab, classes=None, is_lm=False, device="cpu", backwards=False):
        super().__init__(train, valid, device=device)
        self.vocab, self.classes, self.is_lm, self.backwards = vocab, classes, is_lm, backwards

    def numericalize(self, tokens):
        """A text's token ids, last token first when ``backwards`` (a model that reads the text from its end)."""
        ids = self.vocab.numericalize(tokens)
        return ids[::-1] if self.backwards else ids

    @property
    def c(self):
        return len(self.classes) if self.classes is not None else len(self.vocab)

    @classmethod
    def from_texts(cls, texts, labels=None, splits=None, valid_pct=0.2, seed=None, is_lm=False, bs=64, seq_len=72,
                   min_freq=3, max_vocab=60000, vocab=None, cache=None, device="cpu", max_len=None, backwards=False):
        """The loaders of a list of texts (and labels), split by ``splits`` = (train, valid) indices or at
        random; the vocabulary comes from the training texts (or is given: a language model's).
        ``backwards``: every text read from its last token to its first (ULMFiT's second model)."""
        tokens = tokenize_texts(texts, cache)
        train_idx, valid_idx = splits if splits is not None else RandomSplitter(valid_pct, seed)(len(tokens))
        if vocab is None:
            vocab = Vocab.from_tokens([tokens[i] for i in train_idx], min_freq=min_freq, max_vocab=max_vocab)
        ids = [t[::-1] if backwards else t for t in (vocab.numericalize(t) for t in tokens)]
        pad = vocab.stoi[PAD]
        if is_lm:
            def make(idx, train):
                return LMDataLoader([ids[i] for i in idx], bs, seq_len, shuffle=train, seed=seed, device=device)
            return cls(make(train_idx, True), make(valid_idx, False) if len(valid_idx) else None, vocab,
                       is_lm=True, device=device, backwards=backwards)
        if labels is None:
            raise ValueError("TextDataLoaders: a classifier needs labels (or is_lm=True for a language model)")
        labels = list(labels)
        classes = sorted({labels[i] for i in train_idx}, key=str)
        index = {c: k for k, c in enumerate(classes)}
        unknown = [int(i) for i in valid_idx if labels[i] not in index]
        if unknown:
            raise ValueError(f"TextDataLoaders: validation labels {sorted({str(labels[i]) for i in unknown})[:5]} "
                             f"never occur in training (texts {unknown[:5]}; classes: {classes}); a classifier "
                             f"cannot learn them")
        y = [index.get(lab, -1) for lab in labels]

        def make(idx, train):
            return TextClassLoader([ids[i] for i in idx], [y[i] for i in idx], bs, shuffle=train, seed=seed,
                                   device=device, pad_id=pad, max_len=max_len)
        return cls(make(train_idx, True), make(valid_idx, False) if len(valid_idx) else None, vocab, classes,
                   device=device, backwards=backwards)

    def test_dl(self, texts, labels=None, cache=None):
        """A classifier's loader of new texts (and their labels, to score on: ``learn.validate(dl=...)``),
        numbered with this vocabulary and these classes, batched as the validation set is. A label the
        classifier does not know is an error naming the texts that carry it."""
        ids = [self.numericalize(t) for t in tokenize_texts(texts, cache, what="test text")]
        y = None
        if labels is not None:
            labels = list(labels)
            index = {c: k for k, c in enumerate(self.classes)}
            unknown = [i for i, lab in enumerate(labels) if lab not in index]
            if unknown:
                raise ValueError(f"test_dl: labels {sorted({str(labels[i]) for i in unknown})[:5]} are not among "
                                 f"the classes {self.classes} (test texts {unknown[:5]}, {len(unknown)} in all)")
            y = [index[lab] for lab in labels]
        return TextClassLoader(ids, y, self.train.bs, device=self.device, pad_id=self.vocab.stoi[PAD],
                               max_len=self.train.max_len)

    @classmethod
    def from_df(cls, df, text_col="text", label_col="label", valid_col=None, is_lm=False, **kwargs):
        """fastai's from_df: texts in ``text_col``, labels in ``label_col``, the validation rows marked True in
        ``valid_col`` (else a random ``valid_pct``). Empty texts are an error naming the row."""
        for col in [text_col] + ([label_col] if not is_lm else []) + ([valid_col] if valid_col else []):
            if col not in df.columns:
                raise KeyError(f"TextDataLoaders.from_df: no column {col!r}; the table has {list(df.columns)}")
        texts = df[text_col]
        empty = [str(i) for i, t in texts.items() if not isinstance(t, str) or not t.strip()]
        if empty:
            raise ValueError(f"TextDataLoaders.from_df: column {text_col!r} is empty at rows {empty[:5]} "
                             f"({len(empty)} in all); drop them (df[df[{text_col!r}].str.strip() != ''])")
        if not is_lm:
            unlabelled = [str(i) for i, lab in df[label_col].items() if pd.isna(lab) or str(lab).strip() == ""]
            if unlabelled:
                raise ValueError(f"TextDataLoaders.from_df: column {label_col!r} has no label at rows "
                                 f"{unlabelled[:5]} ({len(unlabelled)} in all); label them or drop them")
        if valid_col:
            valid = df[valid_col].astype(bool).to_numpy()
            kwargs["splits"] = (np.flatnonzero(~valid), np.flatnonzero(valid))
        return cls.from_texts(list(texts), None if is_lm else list(df[label_col]), is_lm=is_lm, **kwargs)

    @classmethod
    def from_csv(cls, csv, **kwargs):
        """from_df on a CSV file."""
        return cls.from_df(pd.read_csv(csv), **kwargs)

    @classmethod
    def from_folder(cls, path, train="train", valid="valid", is_lm=False, classes=None, **kwargs):
        """fastai's from_folder: ``path/train/<label>/*.txt`` and ``path/valid/<label>/*.txt`` (IMDb's layout,
        with ``valid='test'``). ``classes``: the label folders read; by default those of the validation
        folder, so IMDb's train/unsup (reviews with no label) stays out of a classifier's data."""
        path = Path(path)
        if classes is None and not is_lm and (path / valid).is_dir():
            classes = sorted(p.name for p in (path / valid).iterdir() if p.is_dir())
        texts, labels, is_valid, files = [], [], [], []
        for split, flag in ((train, False), (valid, True)):
            folder = path / split
            if not folder.is_dir():
                raise FileNotFoundError(f"TextDataLoaders.from_folder: {folder} is not a folder; give train= and "
                                        f"valid= the names of the folders holding <label>/*.txt")
            for label_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
                if classes is not None and label_dir.name not in classes:
                    continue
                for f in sorted(label_dir.glob("*.txt")):
                    texts.append(read_text_file(f))
                    labels.append(label_dir.name)
                    is_valid.append(flag)
                    files.append(f)
        if not texts:
            raise FileNotFoundError(f"TextDataLoaders.from_folder: no <label>/*.txt files under {path / train}")
        trained = {lab for lab, v in zip(labels, is_valid) if not v}
        unknown = [f for f, lab, v in zip(files, labels, is_valid) if v and lab not in trained]
        if unknown and not is_lm:
            raise ValueError(f"TextDataLoaders.from_folder: {unknown[0]} (and {len(unknown) - 1} more) is labelled "
                             f"{unknown[0].parent.name!r}, a folder {path / train} does not have (it has "
                             f"{sorted(trained)}); a classifier cannot learn a label it never sees")
        valid = np.array(is_valid)
        return cls.from_texts(texts, None if is_lm else labels, is_lm=is_lm,
                              splits=(np.flatnonzero(~valid), np.flatnonzero(valid)), **kwargs)

    def show_batch(self, max_n=5, width=80):
        """The first texts of a training batch, decoded, with their labels (printed and returned)."""
        x, y = self.train.one_batch()
        rows = []
        for k in range(min(max_n, len(x))):
            ids = [i for i in x.numpy()[k] if i != self.vocab.stoi[PAD]]
            text = self.vocab.decode(ids)
            label = self.vocab.decode(y.numpy()[k][-3:]) + " ..." if self.is_lm else self.classes[int(y.numpy()[k])]
            rows.append((text[:width], label))
        table = pd.DataFrame(rows, columns=["text", "next tokens" if self.is_lm else "label"])
        with pd.option_context("display.max_colwidth", width, "display.width", 200):
            print(table.to_string(index=False))
        return table
