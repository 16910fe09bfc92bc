"""Collaborative filtering (fastai's chapter 1 recommender and chapter 8): ratings data, models, learner.

Read core.py (ratings -> user/item codes, reusing the tabular Categorify), then model.py.
"""
from .core import CollabDataLoaders, read_movielens, synthetic_ratings  # noqa: F401
from .model import CollabLearner, EmbeddingDotBias, EmbeddingNN, collab_learner  # noqa: F401
