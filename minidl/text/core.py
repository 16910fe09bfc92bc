"""Text -> tokens -> numbers: fastai's rules, a word tokenizer and a vocabulary.

A review reaches a network as a list of integers. Three steps get it there:

1. **rules** rewrite the raw text so that what matters survives lower-casing and splitting
   (``RULES``, applied in order): HTML left-overs are fixed (``<br />`` is a new line,
   ``&amp;`` is ``&``); a character repeated 4+ times becomes ``xxrep 5 !``, a word repeated
   3+ times ``xxwrep 3 very``; ``/`` and ``#`` get spaces around them; runs of spaces
   shrink to one; a word in capitals becomes ``xxup`` + the word, a capitalised word
   ``xxmaj`` + the word; everything is lower-cased, and the text starts with ``xxbos``;
2. the **word tokenizer** splits at spaces and punctuation, keeping the special tokens,
   numbers and contractions ("don't" -> "do", "n't");
3. the **vocabulary** (``Vocab``) gives each token that is frequent enough an integer, the
   special tokens first; every other token becomes ``xxunk`` (id 0).

So "I LOVED it!!!! <br />Really." becomes
``xxbos i xxup loved it xxrep 4 ! xxmaj really .`` before numbers are looked up.
"""
import html
import re
from collections import Counter

__all__ = ["UNK", "PAD", "BOS", "EOS", "FLD", "TK_REP", "TK_WREP", "TK_UP", "TK_MAJ", "SPECIAL_TOKENS", "RULES",
           "fix_html", "replace_rep", "replace_wrep", "spec_add_spaces", "rm_useless_spaces", "replace_all_caps",
           "replace_maj", "lowercase", "word_tokenize", "tokenize", "Vocab"]

UNK, PAD, BOS, EOS, FLD = "xxunk", "xxpad", "xxbos", "xxeos", "xxfld"
TK_REP, TK_WREP, TK_UP, TK_MAJ = "xxrep", "xxwrep", "xxup", "xxmaj"
SPECIAL_TOKENS = [UNK, PAD, BOS, EOS, FLD, TK_REP, TK_WREP, TK_UP, TK_MAJ]   # fastai's order: UNK is 0, PAD 1


def fix_html(text):
    """HTML left in scraped reviews: ``<br />`` is a new line, ``&amp;``-style entities become their characters."""
    text = text.replace("<br />", "\n").replace("<br/>", "\n").replace("<br>", "\n").replace("\\n", "\n")
    return html.unescape(text)


_REP = re.compile(r"(\S)(\1{3,})")                               # a character, then the same 3+ more times


def replace_rep(text):
    """"!!!!!" -> " xxrep 5 ! ": how many times counts (it says how excited), not which exact string."""
    return _REP.sub(lambda m: f" {TK_REP} {len(m.group(2)) + 1} {m.group(1)} ", text)


_WREP = re.compile(r"(?:\s|^)(\w+)((?:\s+\1){2,})(?=\s|\W|$)")  # a word, then the same word 2+ more times


def replace_wrep(text):
    """"very very very good" -> " xxwrep 3 very good"."""
    return _WREP.sub(lambda m: f" {TK_WREP} {len(m.group(2).split()) + 1} {m.group(1)}", text)


def spec_add_spaces(text):
    """Spaces around / and # (and \\): "5/10" -> "5 / 10", so the parts are words of their own."""
    return re.sub(r"([/#\\])", r" \1 ", text)


def rm_useless_spaces(text):
    """Runs of spaces -> one space."""
    return re.sub(" {2,}", " ", text)


def replace_all_caps(text):
    """A word in capitals (two letters or more) -> "xxup" + the word lower-cased: "LOVED" -> "xxup loved"."""
    return re.sub(r"(?<!\S)([A-Z][A-Z'\-]*[A-Z])(?=\s|[^\w\s]|$)", lambda m: f"{TK_UP} {m.group(1).lower()}", text)


def replace_maj(text):
    """A capitalised word -> "xxmaj" + the word lower-cased: "Really" -> "xxmaj really"; "I" stays "I"."""
    return re.sub(r"(?<!\S)([A-Z][a-z][\w'\-]*)", lambda m: f"{TK_MAJ} {m.group(1).lower()}", text)


def lowercase(text):
    """Everything lower-case, the text begun with xxbos (where a new text starts, in a stream of many)."""
    return f"{BOS} {text.lower().strip()}"


RULES = [fix_html, replace_rep, replace_wrep, spec_add_spaces, rm_useless_spaces, replace_all_caps, replace_maj,
         lowercase]

# The special tokens; contractions split as English grammar does (do|n't, it|'s, we|'ll); numbers with their
# decimal point; words; any other character on its own (punctuation, the … of fix_html).
_WORD = re.compile(r"xx[a-z]+|\w+(?=n't\b)|n't\b|'(?:s|re|ve|ll|d|m)\b|\d+(?:[.,]\d+)*|\w+|[^\w\s]")


def word_tokenize(text):
    """The words and punctuation of an already ruled text: "do n't stop ." -> ["do", "n't", "stop", "."]."""
    return _WORD.findall(text)


def tokenize(text, rules=RULES):
    """A raw text -> its tokens: the rules in order, then the word tokenizer."""
    if not isinstance(text, str):
        raise TypeError(f"tokenize: a text is a str, got {type(text).__name__} ({text!r:.40})")
    for rule in rules:
        text = rule(text)
    return word_tokenize(text)


class Vocab:
    """Token <-> id. ``itos[i]`` is the token of id i; ``stoi[token]`` its id, 0 (xxunk) for any token not kept.

    Built from the training texts' tokens (``Vocab.from_tokens``): the special tokens first, then every
    token seen at least ``min_freq`` times, the most frequent first, at most ``max_vocab`` in all;
    the list is padded to a multiple of 8 with ``xxfake`` (fastai's rule: embedding sizes that GPUs like).
    """

    def __init__(self, itos):
        self.itos = list(itos)
        self.stoi = {tok: i for i, tok in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("Vocab: a token appears twice in itos")

    @classmethod
    def from_tokens(cls, token_lists, min_freq=3, max_vocab=60000, special=SPECIAL_TOKENS):
        counts = Counter(tok for tokens in token_lists for tok in tokens)
        kept = [tok for tok, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                if n >= min_freq and tok not in special]
        itos = list(special) + kept[:max(max_vocab - len(special), 0)]
        itos += [f"xxfake{k}" if k else "xxfake" for k in range(-len(itos) % 8)]
        return cls(itos)

    def numericalize(self, tokens):
        """Tokens -> ids (xxunk's 0 for a token not in the vocabulary)."""
        return [self.stoi.get(tok, 0) for tok in tokens]

    def decode(self, ids):
        """Ids -> the text they stand for, tokens joined by spaces."""
        return " ".join(self.itos[int(i)] for i in ids)

    def __len__(self):
        return len(self.itos)

    def __repr__(self):
        return f"Vocab({len(self)} tokens: {self.itos[:12]}...)"
