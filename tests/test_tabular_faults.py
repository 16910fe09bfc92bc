"""Garbage into tabular and collab is refused (or filled) instead of ending in silent wrong numbers.

Each fault has a test for the way users met it and a variant of the same fault
arriving another way (its docstring says which).
"""
import numpy as np
import pandas as pd
import pytest

import minidl
from minidl.collab import CollabDataLoaders, read_movielens, synthetic_ratings
from minidl.learn import accuracy
from minidl.tabular import Categorify, Normalize, TabularDataLoaders, TabularPandas, synthetic_adult, tabular_learner

CATS = ["workclass", "education", "marital-status"]
CONTS = ["age", "fnlwgt", "education-num"]


@pytest.fixture(scope="module")
def learn():
    """A tabular learner trained one epoch on made-up census rows with no missing value."""
    df = synthetic_adult(800, seed=7)
    assert not df[CONTS].isna().any().any()
    minidl.set_seed(0)
    dls = TabularDataLoaders.from_df(df, y_names="salary", cat_names=CATS, cont_names=CONTS, seed=0, bs=64)
    learn = tabular_learner(dls, metrics=accuracy)
    learn.show_progress = False
    learn.fit_one_cycle(1, 1e-2)
    learn.df = df
    return learn


# ------------------------------------------- 1. NaN at predict time in a column complete in training

def test_nan_at_predict_in_a_column_complete_in_training_gets_the_training_median(learn):
    """learn.predict(row) with age = NaN: the training median fills it (probabilities were [nan, nan])."""
    row = learn.df.iloc[3].copy()
    row["age"] = np.nan
    label, _, probs = learn.predict(row)
    assert np.isfinite(probs.numpy()).all() and probs.numpy().sum() == pytest.approx(1, rel=1e-5)
    to = learn.dls.to_pandas
    fill = to.proc["FillMissing"]
    assert set(fill.fill) == set(CONTS)                     # a fill value for every continuous column
    assert not any(c.endswith("_na") for c in to.cat_names)  # but no indicator: the model's inputs are as before
    assert fill.fill["age"] == float(learn.df.iloc[to.splits[0]]["age"].median())
    row["age"] = fill.fill["age"]
    assert learn.predict(row)[0] == label
    np.testing.assert_allclose(learn.predict(row)[2].numpy(), probs.numpy(), rtol=1e-6)


def test_nan_in_a_test_set_column_complete_in_training_is_filled(learn):
    """Variant: the NaN arrives through dls.test_dl(df) (None and NaN in two columns) instead of predict."""
    to = learn.dls.to_pandas
    new = learn.df.iloc[:20].copy()
    new["fnlwgt"] = new["fnlwgt"].astype(float)
    new.loc[new.index[[2, 5]], "fnlwgt"] = np.nan
    new["age"] = new["age"].astype(object)
    new.loc[new.index[4], "age"] = None
    dl = learn.dls.test_dl(new)
    conts = dl.dataset.arrays[1]
    assert conts.shape == (20, len(CONTS)) and np.isfinite(conts).all()
    preds, _ = learn.get_preds(dl=dl)
    assert np.isfinite(preds.numpy()).all()
    filled = new.assign(fnlwgt=new["fnlwgt"].fillna(to.proc["FillMissing"].fill["fnlwgt"]))
    filled.loc[filled.index[4], "age"] = to.proc["FillMissing"].fill["age"]
    np.testing.assert_allclose(preds.numpy(), learn.get_preds(dl=learn.dls.test_dl(filled))[0].numpy(), rtol=1e-6)


# ------------------------------------------- 2. text or inf in a continuous column at predict time

def test_text_in_a_continuous_column_at_predict_is_refused(learn):
    """learn.predict(row) with age = 'abc': refused, naming column, row label and value (was: coerced to NaN)."""
    row = learn.df.iloc[7].copy()
    row["age"] = "abc"
    with pytest.raises(ValueError, match=r"predict: continuous column 'age' .*row 7: 'abc'.*number"):
        learn.predict(row)


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_inf_in_a_test_set_continuous_column_is_refused(learn, bad):
    """Variant: inf / -inf arriving through dls.test_dl(df) (rows labelled by strings) instead of predict."""
    new = learn.df.iloc[:10].copy()
    new.index = [f"person-{i}" for i in range(10)]
    new["fnlwgt"] = new["fnlwgt"].astype(float)
    new.loc["person-6", "fnlwgt"] = bad
    with pytest.raises(ValueError, match=rf"test_dl: continuous column 'fnlwgt' .*row 'person-6': {bad}"):
        learn.dls.test_dl(new)


# ------------------------------------------- 3. '?' or inf in a continuous column at training time

def adult_csv(tmp_path, age_at_row_5):
    df = synthetic_adult(200, seed=3)
    df["age"] = df["age"].astype(object)
    df.loc[5, "age"] = age_at_row_5
    df.to_csv(tmp_path / "adult.csv", index=False)
    return tmp_path / "adult.csv"


def test_question_mark_in_a_training_continuous_column_names_column_row_and_fix(tmp_path):
    """from_csv on a file with '?' in the age column: an error naming age, row 5, '?' and the fix
    (was: a pandas TypeError naming no column); the fix given, na_values=['?'], then works."""
    csv = adult_csv(tmp_path, "?")
    kwargs = dict(y_names="salary", cat_names=CATS, cont_names=CONTS, valid_idx=range(150, 200))
    with pytest.raises(ValueError, match=r"TabularPandas: continuous column 'age' .*row 5: '\?'.*na_values=\['\?'\]"):
        TabularDataLoaders.from_csv(csv, **kwargs)
    dls = TabularDataLoaders.from_csv(csv, na_values=["?"], **kwargs)  # read_csv's keyword reaches pandas
    to = dls.to_pandas
    assert "age_na" in to.cat_names
    assert to.decode(to.items)["age_na"].tolist() == [i == 5 for i in range(200)]


def test_inf_in_a_training_continuous_column_is_refused():
    """Variant: inf arriving through from_df's DataFrame (was: Normalize's mean became inf, every input nan)."""
    df = synthetic_adult(200, seed=3)
    df["fnlwgt"] = df["fnlwgt"].astype(float)
    df.loc[17, "fnlwgt"] = np.inf
    with pytest.raises(ValueError, match=r"TabularPandas: continuous column 'fnlwgt' .*row 17: inf"):
        TabularDataLoaders.from_df(df, y_names="salary", cat_names=CATS, cont_names=CONTS, seed=0)


# ------------------------------------------- 4. non-finite or missing targets

def test_a_nan_rating_is_refused_by_collab_dataloaders():
    """One NaN rating in CollabDataLoaders.from_df: refused naming column and row (was: valid_loss nan)."""
    ratings = synthetic_ratings(n_users=30, n_items=20, density=0.5, seed=0)
    ratings.loc[11, "rating"] = np.nan
    with pytest.raises(ValueError, match=r"TabularPandas: target column 'rating' .*row 11: nan"):
        CollabDataLoaders.from_df(ratings, seed=0)


@pytest.mark.parametrize("target, value, block", [("price", np.inf, "regression"), ("salary", None, "category")])
def test_non_finite_or_missing_tabular_targets_are_refused(target, value, block):
    """Variant: through TabularDataLoaders.from_df, an inf regression target (was: loss inf/nan) and a
    missing class label (was: "target values ['nan'] were not in the training targets", no row)."""
    df = synthetic_adult(200, seed=3)
    df["price"] = df["age"] * 1.5
    df[target] = df[target].astype(object if value is None else float)
    df.loc[9, target] = value
    with pytest.raises(ValueError, match=rf"TabularPandas: target column '{target}' .*row 9: {value}"):
        TabularDataLoaders.from_df(df, y_names=target, cat_names=CATS, cont_names=CONTS, y_block=block,
                                   valid_idx=[0, 1, 2])


# ------------------------------------------- 5. read_movielens with text where numbers belong

def write_latest_small(folder, ratings_lines):
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + ratings_lines)
    (folder / "movies.csv").write_text("movieId,title,genres\n1,A (1995),Drama\n3,B (1996),Comedy\n")


def test_read_movielens_names_file_column_and_row_of_a_text_rating(tmp_path):
    """ratings.csv with the rating 'four': an error naming the file, the rating column, row 1 and the value
    (was: numpy's "could not convert string to float", naming neither file nor column)."""
    write_latest_small(tmp_path, "1,1,4.0,0\n1,3,four,0\n2,1,2.5,0\n")
    with pytest.raises(ValueError, match=r"read_movielens: column 'rating' of .*ratings.csv .*row 1: 'four'"):
        read_movielens(tmp_path)


@pytest.mark.parametrize("layout", ["ml-latest-small", "ml-100k"])
def test_read_movielens_refuses_text_ids(tmp_path, layout):
    """Variant: text in an id column, which both layouts number: a user id 'u2' in ratings.csv (was: read
    silently, every user id turned into a string) and an item id 'x3' in u.data (was: "item ids not in
    u.item; the files do not belong together")."""
    if layout == "ml-latest-small":
        write_latest_small(tmp_path, "1,1,4.0,0\nu2,3,4.5,0\n")
        pattern = r"column 'userId' of .*ratings.csv .*row 1: 'u2'"
    else:
        (tmp_path / "u.data").write_text("1\t1\t4\t0\n2\tx3\t5\t0\n")
        (tmp_path / "u.item").write_bytes(b"1|A (1995)|x\n3|B (1996)|x\n")
        pattern = r"column 2 \(item id\) of .*u.data .*row 1: 'x3'"
    with pytest.raises(ValueError, match="read_movielens: " + pattern):
        read_movielens(tmp_path)


def test_nan_with_no_fillmissing_among_the_procs_is_refused():
    """Fault 1 arriving a third way: procs without FillMissing, so nothing fills a NaN (was: a nan input)."""
    df = synthetic_adult(200, seed=3)
    df["age"] = df["age"].astype(float)
    df.loc[[3, 8], "age"] = np.nan
    to = TabularPandas(df, [Categorify, Normalize], cat_names=CATS, cont_names=["fnlwgt"], y_names="salary")
    assert to.items["fnlwgt"].notna().all()
    with pytest.raises(ValueError, match=r"continuous column 'age' .*row 3: nan.*FillMissing"):
        TabularPandas(df, [Categorify, Normalize], cat_names=CATS, cont_names=["age"], y_names="salary")
