"""Tabular models (fastai's chapter 1: income from the census): preprocessing, model, learner."""
from .core import Categorify, FillMissing, Normalize, TabularDataLoaders, TabularPandas, TabularProc  # noqa: F401
from .model import (Embedding, SigmoidRange, TabularLearner, TabularModel, emb_sz_rule, get_emb_sz,  # noqa: F401
                    sigmoid_range, tabular_learner)
from .adult import read_adult, synthetic_adult  # noqa: F401
