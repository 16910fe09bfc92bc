"""Everything the book's tabular cell uses, for ``from minidl.tabular.all import *`` (fastai's tabular.all).

    from minidl.tabular.all import *
    path = untar_data(URLs.ADULT_SAMPLE)
    dls = TabularDataLoaders.from_csv(path/'adult.csv', path=path, y_names="salary",
        cat_names=['workclass', 'education', 'marital-status', 'occupation', 'relationship', 'race'],
        cont_names=['age', 'fnlwgt', 'education-num'],
        procs=[Categorify, FillMissing, Normalize])
    learn = tabular_learner(dls, metrics=accuracy)
    learn.fit_one_cycle(3)
"""
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import RandomSplitter, URLs, untar_data
from ..learn import Learner, accuracy, error_rate, rmse
from .core import Categorify, FillMissing, Normalize, TabularDataLoaders, TabularPandas
from .model import TabularModel, tabular_learner

__all__ = [
    "np", "pd", "Path",
    "untar_data", "URLs", "RandomSplitter",
    "TabularDataLoaders", "TabularPandas", "Categorify", "FillMissing", "Normalize",
    "TabularModel", "tabular_learner", "Learner", "accuracy", "error_rate", "rmse",
]
