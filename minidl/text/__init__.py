"""Text (fastai's chapter 1: did the reviewer like the film?): tokens, a vocabulary, and (to come) the LSTM.

Read core.py (rules, tokenizer, vocabulary), then data.py (language-model streams and padded batches).
"""
from .core import (BOS, EOS, PAD, RULES, SPECIAL_TOKENS, TK_MAJ, TK_REP, TK_UP, TK_WREP, UNK, Vocab,  # noqa: F401
                   tokenize, word_tokenize)
