"""Collaborative filtering: ratings -> codes, MovieLens readers, the models, training, interpretation."""
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import minidl
from minidl.collab import (CollabDataLoaders, CollabLearner, EmbeddingDotBias, EmbeddingNN, collab_learner,
                           read_movielens, synthetic_ratings)
from minidl.data import RandomSplitter

ROOT = Path(__file__).resolve().parents[1]
SHARED_MOVIELENS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def valid_mse(learn):
    preds, targets = learn.get_preds()
    return float(((preds.numpy() - targets.numpy()) ** 2).mean())


def baseline_mse(dls):
    """MSE of predicting the mean training rating for every validation rating."""
    to = dls.to_pandas
    mean = to.train[dls.rating_name].mean()
    return float(((to.valid[dls.rating_name] - mean) ** 2).mean())


@pytest.fixture(scope="module")
def trained():
    """A dot-product learner trained briefly on a synthetic ratings table (shared by several tests)."""
    minidl.set_seed(0)
    dls = CollabDataLoaders.from_df(synthetic_ratings(n_users=200, n_items=150, density=0.4, seed=1),
                                    valid_pct=0.2, seed=0, bs=64)
    learn = collab_learner(dls, n_factors=8, y_range=(0, 5.5))
    learn.show_progress = False
    learn.fit_one_cycle(4, 1e-2, wd=0.05)
    return learn


# ---------------------------------------------------------------- data

def test_from_df_codes_users_and_items_and_makes_batches():
    ratings = synthetic_ratings(n_users=30, n_items=20, density=0.5, seed=0)
    ratings = ratings[["user", "title", "rating"]]
    dls = CollabDataLoaders.from_df(ratings, valid_pct=0.2, seed=3, bs=16)
    assert (dls.user_name, dls.item_name, dls.rating_name) == ("user", "title", "rating")
    train_users = set(ratings["user"].iloc[RandomSplitter(0.2, seed=3)(len(ratings))[0]])
    assert dls.classes["user"] == ["#na#"] + sorted(train_users)
    assert dls.classes["title"][0] == "#na#" and set(dls.classes) == {"user", "title"}
    assert dls.n_inputs == 1
    x, y = dls.train.one_batch()
    assert x.shape == (16, 2) and x.dtype == minidl.int64
    assert y.shape == (16, 1) and y.dtype == minidl.float32
    first = ratings.iloc[dls.to_pandas.splits[0][0]]
    assert dls.classes["user"][int(x[0, 0].item())] == first["user"]
    assert dls.classes["title"][int(x[0, 1].item())] == first["title"]
    assert y[0, 0].item() == pytest.approx(first["rating"])
    assert len(dls.train.dataset) + len(dls.valid.dataset) == len(ratings)


def test_from_df_named_columns_and_unseen_users_are_na():
    ratings = synthetic_ratings(n_users=30, n_items=20, density=0.5, seed=0)
    ratings = ratings.rename(columns={"user": "who", "title": "movie", "rating": "stars"})[["stars", "movie", "who"]]
    ratings = ratings.astype({"who": object})
    valid = RandomSplitter(0.2, seed=5)(len(ratings))[1]
    ratings.iloc[valid[0], ratings.columns.get_loc("who")] = "ghost"  # a user seen only in validation
    dls = CollabDataLoaders.from_df(ratings, user_name="who", item_name="movie", rating_name="stars",
                                    valid_pct=0.2, seed=5, bs=8)
    assert (dls.user_name, dls.item_name, dls.rating_name) == ("who", "movie", "stars")
    assert "ghost" not in dls.classes["who"]
    assert dls.to_pandas.items["who"].iloc[valid[0]] == 0  # #na#
    x, _ = next(iter(dls.valid))
    assert x.numpy()[0, 0] == 0
    learn = collab_learner(dls, n_factors=4)
    assert learn.model.u_weight.weight.shape == (len(dls.classes["who"]), 4)


def test_from_df_rejects_text_ratings():
    with pytest.raises(TypeError, match="rating column"):
        CollabDataLoaders.from_df(pd.DataFrame({"u": [1, 2], "i": [1, 2], "r": ["good", "bad"]}))


def write_ml100k(folder, ratings):
    """ratings (user, item id, rating) -> u.data and a latin-1 u.item like GroupLens'."""
    folder.mkdir(parents=True, exist_ok=True)
    ratings.assign(ts=881250949).to_csv(folder / "u.data", sep="\t", header=False, index=False)
    titles = {i: f"Movie {i} (1995)" for i in sorted(ratings["item"].unique())}
    titles[2] = "Café au lait (Gazon maudit) (1993)"
    lines = [f"{i}|{t}|01-Jan-1995||http://us.imdb.com/M/title-exact?x|0|0|1\n" for i, t in titles.items()]
    (folder / "u.item").write_bytes("".join(lines).encode("latin-1"))
    return titles


def test_read_movielens_ml100k(tmp_path):
    ratings = pd.DataFrame({"user": [196, 186, 22, 196], "item": [242, 2, 377, 2], "rating": [3, 3, 1, 5]})
    write_ml100k(tmp_path, ratings)
    df = read_movielens(tmp_path)
    assert list(df.columns) == ["user", "title", "rating"]
    assert df["user"].tolist() == [196, 186, 22, 196]
    assert df["title"].tolist() == ["Movie 242 (1995)", "Café au lait (Gazon maudit) (1993)",
                                    "Movie 377 (1995)", "Café au lait (Gazon maudit) (1993)"]
    assert df["rating"].dtype == np.float32 and df["rating"].tolist() == [3, 3, 1, 5]


def test_read_movielens_latest_small(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n"
                                          "1,3,4.5,964981247\n2,1,2.5,964982224\n")
    (tmp_path / "movies.csv").write_text('movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n'
                                         '3,"American President, The (1995)",Comedy|Drama|Romance\n'
                                         '4,Unrated (2000),Drama\n')
    df = read_movielens(tmp_path)
    assert list(df.columns) == ["user", "title", "rating"]
    assert df.values.tolist() == [[1, "Toy Story (1995)", 4.0], [1, "American President, The (1995)", 4.5],
                                  [2, "Toy Story (1995)", 2.5]]
    dls = CollabDataLoaders.from_movielens(tmp_path, valid_pct=0.0, bs=2)
    assert dls.classes["title"] == ["#na#", "American President, The (1995)", "Toy Story (1995)"]


def test_read_movielens_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither MovieLens layout.*ratings.csv \\+ movies.csv"):
        read_movielens(tmp_path)
    (tmp_path / "ml-100k").mkdir()
    with pytest.raises(FileNotFoundError, match="did you mean .*ml-100k"):
        read_movielens(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        read_movielens(tmp_path / "nowhere")
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,7,4.0,0\n")
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n1,A (1995),Drama\n")
    with pytest.raises(ValueError, match="item ids not in"):
        read_movielens(tmp_path)


# ---------------------------------------------------------------- models

def test_embedding_dot_bias_forward_matches_numpy():
    minidl.set_seed(0)
    model = EmbeddingDotBias(5, n_users=7, n_items=9)
    for table in (model.u_weight, model.i_weight, model.u_bias, model.i_bias):
        w = table.weight.detach().numpy()
        assert 0.005 < w.std() < 0.015  # fastai's init: (truncated) normal, std 0.01
        w[...] = np.random.default_rng(w.size).normal(0, 1, w.shape)
    x = np.array([[0, 0], [3, 8], [6, 2], [3, 2]], dtype=np.int64)
    uw, iw = model.u_weight.weight.numpy(), model.i_weight.weight.numpy()
    ub, ib = model.u_bias.weight.numpy(), model.i_bias.weight.numpy()
    expected = (uw[x[:, 0]] * iw[x[:, 1]]).sum(1, keepdims=True) + ub[x[:, 0]] + ib[x[:, 1]]
    out = model(minidl.tensor(x))
    assert out.shape == (4, 1)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)

    model.y_range = (0.5, 5.0)
    np.testing.assert_allclose(model(minidl.tensor(x)).numpy(), 0.5 + 4.5 * sigmoid(expected), rtol=1e-5)
    model.i_bias.weight.detach().numpy()[[0, 8]] = [[-1e4], [1e4]]  # huge scores are squashed into the range
    out = model(minidl.tensor(x)).numpy()
    assert (out >= 0.5).all() and (out <= 5.0).all()
    assert out[:2, 0] == pytest.approx([0.5, 5.0])

    with pytest.raises(ValueError, match=r"\(batch, 2\)"):
        model(minidl.tensor(np.zeros((4, 3), dtype=np.int64)))


def test_embedding_dot_bias_gradients_reach_the_rows_used():
    model = EmbeddingDotBias(3, n_users=4, n_items=5, y_range=(0, 5.5))
    model(minidl.tensor(np.array([[1, 2], [1, 4]]))).sum().backward()
    grad = model.i_bias.weight.grad.numpy()[:, 0]
    assert (grad[[2, 4]] != 0).all() and (grad[[0, 1, 3]] == 0).all()


def test_collab_learner_dot_product_beats_the_mean(trained):
    assert isinstance(trained, CollabLearner) and isinstance(trained.model, EmbeddingDotBias)
    assert type(trained.loss_func).__name__ == "MSELossFlat"
    mse, baseline = valid_mse(trained), baseline_mse(trained.dls)
    assert mse < 0.6 * baseline, (mse, baseline)
    preds, targets = trained.get_preds()
    assert preds.shape == targets.shape == (len(trained.dls.valid.dataset), 1)
    assert trained.recorder.values[-1][1] == pytest.approx(mse, rel=1e-4)


def test_collab_learner_with_a_neural_net_trains():
    minidl.set_seed(0)
    dls = CollabDataLoaders.from_df(synthetic_ratings(n_users=200, n_items=150, density=0.4, seed=1),
                                    valid_pct=0.2, seed=0, bs=64)
    learn = collab_learner(dls, use_nn=True, layers=[32], y_range=(0, 5.5))
    assert isinstance(learn.model, EmbeddingNN)
    assert [e.weight.shape for e in learn.model.embeds] == [(201, 31), (151, 27)]  # fastai's size rule
    learn.show_progress = False
    learn.fit_one_cycle(3, 5e-3, wd=0.1)
    assert valid_mse(learn) < 0.85 * baseline_mse(dls)
    with pytest.raises(TypeError, match="no item biases"):
        learn.top_biases()
    titles, coords = learn.item_pca(n_top=50, k=2)  # the item embeddings of the net have a PCA too
    assert len(titles) == 50 and coords.shape == (50, 2)


# ---------------------------------------------------------------- interpretation

def test_top_biases(trained):
    dls = trained.dls
    lowest, highest = trained.top_biases(3, n_top=100)
    assert list(lowest.columns) == ["title", "bias", "mean_rating", "n_ratings"]
    assert len(lowest) == len(highest) == 3
    assert lowest["bias"].is_monotonic_increasing and highest["bias"].is_monotonic_decreasing
    assert lowest["bias"].max() < highest["bias"].min()
    assert lowest["mean_rating"].mean() < highest["mean_rating"].mean()  # bias tracks how liked an item is
    top = set(trained.most_rated(100).tolist())
    codes = {t: i for i, t in enumerate(dls.classes["title"])}
    assert {codes[t] for t in list(lowest["title"]) + list(highest["title"])} <= top
    np.testing.assert_allclose(trained.model.bias(list(lowest["title"])), lowest["bias"], rtol=1e-6)
    assert trained.model.weight(list(highest["title"])).shape == (3, 8)
    assert trained.model.bias([dls.classes["user"][1]], is_item=False).shape == (1,)
    with pytest.raises(KeyError, match="not in the 'title' vocabulary"):
        trained.model.bias(["No Such Movie"])


def test_most_rated_counts_training_ratings(trained):
    dls = trained.dls
    counts = dls.to_pandas.train[dls.item_name].value_counts()
    order = trained.most_rated(10)
    assert 0 not in order.tolist()
    assert [counts[i] for i in order] == sorted(counts.drop(0, errors="ignore").values, reverse=True)[:10]


def test_item_pca_and_plot(trained, tmp_path):
    titles, coords = trained.item_pca(n_top=100, k=3)
    assert len(titles) == 100 and coords.shape == (100, 3)
    np.testing.assert_allclose(coords.mean(0), 0, atol=1e-6)
    variances = coords.var(0)
    assert variances[0] >= variances[1] >= variances[2]  # principal components by decreasing variance
    path = trained.plot_item_pca(str(tmp_path / "pca" / "items.png"), n=20, n_top=100)
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- the example and the real data

def load_example():
    spec = importlib.util.spec_from_file_location("collab_example", ROOT / "examples" / "collab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_runs_on_an_ml100k_folder(tmp_path, capsys):
    ratings = synthetic_ratings(n_users=60, n_items=40, density=0.3, seed=2)
    ratings["item"] = ratings["title"].str.split().str[1].astype(int)
    write_ml100k(tmp_path / "ml-100k", ratings[["user", "item", "rating"]])
    mse = load_example().main(["--data", str(tmp_path / "ml-100k"), "--epochs", "1", "--bs", "32",
                               "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "train_loss  valid_loss" in out and "Lowest item bias" in out
    assert out.rstrip().splitlines()[-1] == f"valid mse: {mse:.4f}"
    assert (tmp_path / "out" / "item_pca.png").exists()


def test_example_falls_back_to_synthetic_data(tmp_path, capsys, monkeypatch):
    import minidl.data

    def not_found(name, data=None, download=True):
        raise minidl.data.DataNotFoundError(f"data set {name!r} not found (test)")

    monkeypatch.setattr(minidl.data, "find_data", not_found)
    load_example().main(["--epochs", "1", "--bs", "1024", "--factors", "4", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert "not found (test)" in captured.err and "SYNTHETIC" in captured.err
    assert captured.out.rstrip().splitlines()[-1].startswith("valid mse: ")


@pytest.mark.skipif(not SHARED_MOVIELENS.is_dir(), reason=f"no ml-latest-small at {SHARED_MOVIELENS}")
def test_read_ml_latest_small():
    df = read_movielens(SHARED_MOVIELENS)
    assert len(df) == 100_836 and df["user"].nunique() == 610
    assert df["rating"].between(0.5, 5.0).all()
    assert "Toy Story (1995)" in set(df["title"])
