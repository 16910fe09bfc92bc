"""Text (fastai's chapter 1: did the reviewer like the film?): tokens, a vocabulary, AWD-LSTM and ULMFiT.

Read core.py (rules, tokenizer, vocabulary), data.py (language-model streams and padded batches),
models.py (AWD-LSTM and its two heads), learner.py (the language model and classifier learners),
pretrained.py (fastai's WikiText-103 weights); all.py is what the book's cell imports.
"""
from .core import (BOS, EOS, PAD, RULES, SPECIAL_TOKENS, TK_MAJ, TK_REP, TK_UP, TK_WREP, UNK, Vocab,  # noqa: F401
                   tokenize, word_tokenize)
