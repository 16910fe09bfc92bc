"""Reading the UCI Adult census data in either layout, into one shape of DataFrame.

Layouts:
  * fastai's adult.csv: a header row, the target column `salary` holding " >=50k" / " <50k";
  * UCI's adult.data / adult.test: no header, "?" for missing values, the target ">50K" /
    "<=50K" (adult.test adds a trailing dot, "<=50K.", and starts with a comment line).
Both become: fastai's column names, missing values as NaN, stripped strings, and
`salary` in fastai's spelling (">=50k" / "<50k").
"""
import os

import pandas as pd

COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
           "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
           "salary"]
UCI_TARGET = {">50K": ">=50k", "<=50K": "<50k"}


def read_adult(path):
    """A DataFrame from adult.csv (fastai), adult.data or adult.test (UCI)."""
    path = os.fspath(path)
    with open(path) as f:
        first = f.readline()
    if first.startswith("age,"):                       # fastai's csv has a header
        df = pd.read_csv(path, skipinitialspace=True, na_values=["?"])
    else:
        comment = first.startswith("|")                # adult.test: "|1x3 Cross validator"
        df = pd.read_csv(path, header=None, names=COLUMNS, skipinitialspace=True, na_values=["?"],
                         skiprows=1 if comment else 0, skip_blank_lines=True)
        df["salary"] = df["salary"].str.rstrip(".").map(UCI_TARGET)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"read_adult: {path} lacks the columns {missing}; is it an Adult census file?")
    if df["salary"].isna().any():
        raise ValueError(f"read_adult: {path} has salary values other than >50K/<=50K (fastai: >=50k/<50k)")
    df["salary"] = df["salary"].str.strip().str.lower()
    return df.dropna(how="all")


def synthetic_adult(n=4000, seed=0):
    """A made-up table with Adult's columns, for running the example with no data at hand.

    Income depends on age, education, hours and marital status through a fixed logistic
    rule, so a model can learn it; the numbers it gives say nothing about the real census.
    """
    import numpy as np
    rng = np.random.default_rng(seed)
    education = ["HS-grad", "Some-college", "Bachelors", "Masters", "Doctorate", "11th"]
    edu_num = {"11th": 7, "HS-grad": 9, "Some-college": 10, "Bachelors": 13, "Masters": 14, "Doctorate": 16}
    df = pd.DataFrame({
        "age": rng.integers(17, 80, n),
        "workclass": rng.choice(["Private", "Self-emp-not-inc", "Local-gov", "State-gov"], n),
        "fnlwgt": rng.integers(20_000, 500_000, n),
        "education": rng.choice(education, n, p=[0.32, 0.22, 0.2, 0.1, 0.03, 0.13]),
        "marital-status": rng.choice(["Married-civ-spouse", "Never-married", "Divorced"], n, p=[0.45, 0.35, 0.2]),
        "occupation": rng.choice(["Exec-managerial", "Craft-repair", "Sales", "Adm-clerical", "Prof-specialty"], n),
        "relationship": rng.choice(["Husband", "Wife", "Not-in-family", "Own-child"], n),
        "race": rng.choice(["White", "Black", "Asian-Pac-Islander"], n, p=[0.85, 0.1, 0.05]),
        "sex": rng.choice(["Male", "Female"], n),
        "capital-gain": np.where(rng.random(n) < 0.08, rng.integers(1000, 20000, n), 0),
        "capital-loss": np.where(rng.random(n) < 0.05, rng.integers(500, 3000, n), 0),
        "hours-per-week": rng.integers(10, 70, n),
        "native-country": rng.choice(["United-States", "Mexico", "India"], n, p=[0.9, 0.06, 0.04]),
    })
    df["education-num"] = df["education"].map(edu_num)
    logit = (0.05 * (df["age"] - 40) + 0.45 * (df["education-num"] - 10) + 0.04 * (df["hours-per-week"] - 40)
             + 1.5 * (df["marital-status"] == "Married-civ-spouse") + 0.0002 * df["capital-gain"] - 1.6)
    df["salary"] = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), ">=50k", "<50k")
    return df[COLUMNS]
