"""Collaborative filtering (fastai's chapter 1 recommender and chapter 8): ratings data, models, learner.

Read core.py (ratings -> user/item codes, reusing the tabular Categorify), then model.py.
``from minidl.collab import *`` gives what the book's cell uses (as ``from fastai.collab import *``):

    path = untar_data(URLs.ML_SAMPLE)
    dls = CollabDataLoaders.from_csv(path/'ratings.csv')
    learn = collab_learner(dls, y_range=(0.5, 5.5))
    learn.fine_tune(10)
"""
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import URLs, untar_data
from ..learn import Learner, mae, rmse
from .core import CollabDataLoaders, read_movielens, synthetic_ratings
from .model import CollabLearner, EmbeddingDotBias, EmbeddingNN, collab_learner

__all__ = [
    "np", "pd", "Path", "untar_data", "URLs",
    "CollabDataLoaders", "read_movielens", "synthetic_ratings",
    "CollabLearner", "EmbeddingDotBias", "EmbeddingNN", "collab_learner", "Learner", "rmse", "mae",
]
