# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 — Collaborative filtering: a movie recommender
#
# Chapter 1's recommender on MovieLens: every user and every movie gets a vector of 50
# learned factors and a bias, and a rating is predicted as
# $\hat r_{um} = \sigma_{[0, 5.5]}(p_u \cdot q_m + b_u + b_m)$, where $\sigma_{[lo,hi]}$ is a
# sigmoid stretched to the rating range. Read alongside: `minidl/collab/model.py`
# (`EmbeddingDotBias`), `minidl/ops/` (the embedding gather and its scatter-add backward).
#
# Data: ml-latest-small from `$MINIDL_DATA` (or the cache); with none, a synthetic ratings
# table. `MINIDL_NOTEBOOK_QUICK=1` (set when the tests run this notebook) keeps 20,000 ratings.

# %%
import os

import minidl
from minidl.collab import CollabDataLoaders, collab_learner, read_movielens, synthetic_ratings
from minidl.data import DataNotFoundError, find_data

QUICK = os.environ.get("MINIDL_NOTEBOOK_QUICK") == "1"
minidl.set_seed(42)
try:
    ratings = read_movielens(find_data("ml-latest-small", download=False))
    print(f"MovieLens: {len(ratings):,} ratings")
except DataNotFoundError:
    ratings = synthetic_ratings(n_users=600, n_items=1000, density=0.1, seed=0)
    print("No MovieLens data found: a SYNTHETIC ratings table (its MSE says nothing about MovieLens)")
if QUICK:
    ratings = ratings.sample(20_000, random_state=0)
ratings.head()

# %%
dls = CollabDataLoaders.from_df(ratings, valid_pct=0.2, seed=42, bs=64)
dls.show_batch(5)

# %% [markdown]
# ## The model: a dot product and two biases
# The embeddings are lookups into tables of parameters. Their backward adds each row's
# gradient into the rows that were looked up (a scatter-add), so only the users and
# movies in the batch move.

# %%
learn = collab_learner(dls, n_factors=50, y_range=(0, 5.5))
learn.model

# %%
learn.fit_one_cycle(1 if QUICK else 5, 5e-3, wd=0.1)
preds, targets = learn.get_preds()
mse = float(((preds.numpy() - targets.numpy()) ** 2).mean())
print(f"valid MSE: {mse:.4f}  (the book's recipe on ml-latest-small: about 0.71 after 5 epochs)")
assert mse < 1.5

# %% [markdown]
# ## What the model learned
# A movie's bias says how much people like it beyond what its factors predict. The lowest
# and highest biases among often-rated movies, and a 2-D PCA map of the movie factors:

# %%
lowest, highest = learn.top_biases(5)
print(lowest.to_string(index=False), "\n")
print(highest.to_string(index=False))
learn.plot_item_pca("item_pca.png", n=40)

# %% [markdown]
# ![movie factors](item_pca.png)
