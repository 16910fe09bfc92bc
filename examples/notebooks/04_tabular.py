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
# # 04 — Tabular: who earns more than $50k?
#
# Chapter 1's tabular model on the UCI Adult census: each categorical column gets a learned
# embedding, the continuous columns are normalised, and a two-layer network reads them
# all. Read alongside: `minidl/tabular/core.py` (the preprocessing), `minidl/tabular/model.py`
# (the network) and `minidl/learn/learner.py` (the training loop).
#
# The data comes from `$MINIDL_DATA` (or the cache, or UCI's archive); with none, a
# synthetic table with the same columns stands in, and the numbers then mean nothing.
# `MINIDL_NOTEBOOK_QUICK=1` (set when the tests run this notebook) trains on 3,000 rows.

# %%
import os

import minidl
from minidl.data import DataNotFoundError, find_data
from minidl.learn import accuracy
from minidl.tabular import (Categorify, FillMissing, Normalize, TabularDataLoaders, read_adult, synthetic_adult,
                            tabular_learner)

QUICK = os.environ.get("MINIDL_NOTEBOOK_QUICK") == "1"
minidl.set_seed(42)
try:
    folder = find_data("adult", download=False)
    df = read_adult(folder / ("adult.csv" if (folder / "adult.csv").exists() else "adult.data"))
    print(f"Adult census from {folder}: {len(df):,} rows")
except DataNotFoundError:
    df = synthetic_adult(4000)
    print("No Adult data found: a SYNTHETIC stand-in (its accuracy says nothing about the census)")
if QUICK:
    df = df.sample(3000, random_state=0)
df.head()

# %% [markdown]
# ## Preprocessing, fitted on the training rows only
# `Categorify` turns each category into an integer code (0 is `#na#`: missing or unseen),
# `FillMissing` puts the training median in empty cells and adds a `<col>_na` column,
# `Normalize` subtracts the training mean and divides by the training standard deviation.

# %%
dls = TabularDataLoaders.from_df(
    df, y_names="salary",
    cat_names=["workclass", "education", "marital-status", "occupation", "relationship", "race"],
    cont_names=["age", "fnlwgt", "education-num"],
    procs=[Categorify, FillMissing, Normalize], valid_pct=0.2, seed=42, bs=64)
dls.show_batch(3)

# %% [markdown]
# ## The model
# One embedding per categorical column, sized by fastai's rule
# $\min(600, \mathrm{round}(1.6\, n^{0.56}))$ for $n$ levels, then Linear+ReLU+BatchNorm layers of 200 and 100.

# %%
learn = tabular_learner(dls, metrics=accuracy)
learn.model

# %%
learn.fit_one_cycle(1 if QUICK else 3)
loss, acc = learn.validate()
print(f"valid accuracy: {acc:.4f}  (fastai's chapter 1: about 0.83)")
assert acc > 0.6

# %% [markdown]
# ## A prediction, decoded
# `predict` runs one row through the same preprocessing and returns the class and its probabilities.

# %%
row = df.iloc[0]
label, code, probs = learn.predict(row)
print(f"{row['age']} years, {row['education']}, {row['occupation']} -> {label!r}, p = {probs.numpy().round(3)}")
