"""Tabular: preprocessing fitted on training rows only, the Adult readers, the model, a short training."""
import math
import pathlib

import numpy as np
import pandas as pd
import pytest

import minidl
from minidl.learn import accuracy
from minidl.tabular import (Categorify, FillMissing, Normalize, TabularDataLoaders, TabularModel, TabularPandas,
                            emb_sz_rule, read_adult, synthetic_adult, tabular_learner)

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def frame():
    return pd.DataFrame({
        "color": ["red", "blue", "red", None, "green", "purple"],      # purple: only in validation
        "size": [1.0, np.nan, 3.0, 5.0, 100.0, np.nan],                  # 100 only in validation
        "label": ["a", "b", "a", "b", "a", "b"],
    })


def processed(procs=(Categorify, FillMissing, Normalize)):
    return TabularPandas(frame(), procs, cat_names=["color"], cont_names=["size"], y_names="label",
                         splits=(np.array([0, 1, 2, 3]), np.array([4, 5])))


def test_categorify_learns_training_levels_only():
    to = processed()
    assert to.proc["Categorify"].classes["color"] == ["#na#", "blue", "red"]    # green, purple: validation only
    assert to.items["color"].tolist() == [2, 1, 2, 0, 0, 0]                       # None and unseen -> #na#


def test_fill_missing_uses_the_training_median_and_flags_rows():
    to = processed()
    fill = to.proc["FillMissing"]
    assert fill.fill == {"size": 3.0}                      # median of 1, 3, 5: the validation 100 is ignored
    assert "size_na" in to.cat_names
    decoded = to.decode(to.items)
    assert decoded["size_na"].tolist() == [False, True, False, False, False, True]
    np.testing.assert_allclose(decoded["size"], [1, 3, 3, 5, 100, 3])


def test_normalize_uses_training_statistics():
    to = processed()
    train_sizes = np.array([1.0, 3.0, 3.0, 5.0])            # after filling the missing one with the median
    mean, std = train_sizes.mean(), train_sizes.std()
    norm = to.proc["Normalize"]
    assert norm.means["size"] == pytest.approx(mean) and norm.stds["size"] == pytest.approx(std, rel=1e-6)
    assert to.items["size"].iloc[4] == pytest.approx((100 - mean) / std, rel=1e-6)


def test_target_kind_follows_the_column():
    to = processed()
    assert to.y_block == "category" and to.vocab == ["a", "b"]
    df = frame().assign(price=[1.5, 2.0, 3.0, 4.0, 5.0, 6.0])
    reg = TabularPandas(df, [Categorify], cat_names=["color"], y_names="price")
    assert reg.y_block == "regression" and reg.vocab is None
    assert reg.arrays(reg.items)[2].dtype == np.float32
    counts = TabularPandas(df.assign(n=[1, 2, 3, 1, 2, 3]), [Categorify], cat_names=["color"], y_names="n",
                           y_block="category")
    assert counts.vocab == [1, 2, 3]


def test_missing_columns_are_named():
    with pytest.raises(KeyError, match=r"\['weight'\]"):
        TabularPandas(frame(), [Categorify], cat_names=["color"], cont_names=["weight"], y_names="label")


# ---------------------------------------------------------------- the readers

CSV = """age,workclass,fnlwgt,education,education-num,marital-status,occupation,relationship,race,sex,capital-gain,capital-loss,hours-per-week,native-country,salary
39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, United-States, <50k
50, ?, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, 0, 0, 13, United-States, >=50k
"""
DATA = """39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K
50, ?, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, 0, 0, 13, United-States, >50K
"""
TEST = "|1x3 Cross validator\n" + DATA.replace("<=50K", "<=50K.").replace(">50K", ">50K.") + "\n"


@pytest.mark.parametrize("name, text", [("adult.csv", CSV), ("adult.data", DATA), ("adult.test", TEST)])
def test_read_adult_gives_one_layout(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    df = read_adult(path)
    assert len(df) == 2
    assert df["salary"].tolist() == ["<50k", ">=50k"]
    assert df["workclass"].tolist()[0] == "State-gov" and pd.isna(df["workclass"].iloc[1])
    assert df["age"].tolist() == [39, 50] and df["hours-per-week"].tolist() == [40, 13]


def test_read_adult_rejects_other_files(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("age,height\n1,2\n")
    with pytest.raises(ValueError, match="lacks the columns"):
        read_adult(path)


# ---------------------------------------------------------------- the model and the learner

def test_embedding_sizes_follow_fastai():
    assert [emb_sz_rule(n) for n in (2, 10, 17, 100, 10_000_000)] == [2, 6, 8, 21, 600]


def test_tabular_model_layout_and_shapes():
    model = TabularModel([(5, 3), (7, 4)], n_cont=2, out_sz=2, layers=[8, 6], ps=0.1, embed_p=0.2)
    layers = [type(m).__name__ for m in model.layers]
    assert layers == ["Linear", "ReLU", "BatchNorm1d", "Dropout", "Linear", "ReLU", "BatchNorm1d", "Dropout", "Linear"]
    assert model.layers[0].in_features == 3 + 4 + 2 and model.layers[0].bias is None  # no bias before BatchNorm
    x_cat = minidl.tensor([[1, 2], [4, 6], [0, 0]])
    out = model(x_cat, minidl.randn(3, 2))
    assert out.shape == (3, 2)


def columns():
    return dict(cat_names=["workclass", "education", "marital-status", "occupation", "relationship", "race"],
                cont_names=["age", "fnlwgt", "education-num"])


def test_short_training_beats_the_majority_baseline(capsys):
    df = synthetic_adult(3000, seed=1)
    minidl.set_seed(0)
    dls = TabularDataLoaders.from_df(df, y_names="salary", valid_pct=0.2, seed=0, bs=64, **columns())
    learn = tabular_learner(dls, metrics=accuracy)
    learn.fit_one_cycle(3, 1e-2)
    valid_y = dls.valid.dataset.arrays[2]
    majority = max(np.mean(valid_y), 1 - np.mean(valid_y))
    acc = learn.validate()[1]
    assert acc > majority + 0.05
    assert "accuracy" in capsys.readouterr().out


def test_predict_decodes_a_raw_row_and_test_dl_processes_new_rows():
    df = synthetic_adult(1500, seed=2)
    minidl.set_seed(0)
    dls = TabularDataLoaders.from_df(df, y_names="salary", valid_pct=0.2, seed=0, bs=64, **columns())
    learn = tabular_learner(dls, metrics=accuracy)
    learn.show_progress = False
    learn.fit_one_cycle(1, 1e-2)
    label, index, probs = learn.predict(df.iloc[0])
    assert label in ("<50k", ">=50k") and label == dls.vocab[int(index.item())]
    assert probs.shape == (2,) and math.isclose(probs.numpy().sum(), 1, rel_tol=1e-5)
    new = df.iloc[:50].copy()
    new.loc[new.index[0], "workclass"] = "Never-seen-before"
    preds, targets = learn.get_preds(dl=dls.test_dl(new))
    assert preds.shape == (50, 2) and targets.shape == (50,)
    np.testing.assert_allclose(preds.numpy()[1], learn.predict(new.iloc[1])[2].numpy(), rtol=1e-5)


def test_show_batch_shows_readable_values(capsys):
    df = synthetic_adult(500, seed=3)
    dls = TabularDataLoaders.from_df(df, y_names="salary", valid_pct=0.2, seed=0, bs=64, **columns())
    table = dls.show_batch(4)
    rows = df.iloc[dls.to_pandas.splits[0][:4]]
    assert table["education"].tolist() == rows["education"].tolist()
    np.testing.assert_allclose(table["age"], rows["age"], rtol=1e-6)
    assert table["salary"].tolist() == rows["salary"].tolist()
    assert "education" in capsys.readouterr().out


@pytest.mark.skipif(not (SHARED / "adult" / "adult.data").exists(), reason="../shared/data/adult is not here")
def test_the_real_adult_files_read_alike():
    csv, data = read_adult(SHARED / "adult" / "adult.csv"), read_adult(SHARED / "adult" / "adult.data")
    assert len(csv) == len(data) == 32561
    pd.testing.assert_frame_equal(csv.reset_index(drop=True), data.reset_index(drop=True), check_dtype=False)
    assert set(csv["salary"]) == {"<50k", ">=50k"}
