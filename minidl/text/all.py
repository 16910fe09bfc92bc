"""Everything the book's text cell uses, for ``from minidl.text.all import *`` (fastai's text.all).

    from minidl.text.all import *
    dls = TextDataLoaders.from_folder(untar_data(URLs.IMDB), valid='test')
    learn = text_classifier_learner(dls, AWD_LSTM, drop_mult=0.5, metrics=accuracy)
    learn.fine_tune(4, 1e-2)
    learn.predict("I really liked that movie!")      # ('pos', 1, probabilities)

and what ULMFiT adds (a language model fine-tuned on the reviews first: examples/imdb.py).
The list below is the whole of it: read it to see where each name comes from.
"""
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import RandomSplitter, URLs, untar_data
from ..learn import Learner, accuracy, error_rate
from .core import Vocab, tokenize
from .data import TextDataLoaders
from .learner import Perplexity, RNNRegularizer, TextLearner, language_model_learner, text_classifier_learner
from .models import AWD_LSTM

__all__ = [
    "np", "pd", "Path",                                                   # what the cells use from Python
    "untar_data", "URLs", "RandomSplitter",                               # data
    "TextDataLoaders", "Vocab", "tokenize",
    "AWD_LSTM", "text_classifier_learner", "language_model_learner",     # the model and its learners
    "TextLearner", "RNNRegularizer", "Learner", "accuracy", "error_rate", "Perplexity",
]
