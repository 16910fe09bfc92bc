"""Collaborative-filtering models, their learner, and what their embeddings say (fastai's chapter 8).

The dot-product model: each user and each item gets a vector of ``n_factors`` latent
factors and a bias; the predicted rating is

    rating(u, i) = sigmoid_range(u_weight[u] . i_weight[i] + u_bias[u] + i_bias[i], *y_range)

Nobody tells the model what the factors mean; training on the ratings alone makes
similar movies end up with similar vectors, which a PCA of the item factors shows.
An item's bias is how much it is liked whatever the user's taste: a low bias marks a
movie that even the people who like its kind rate badly.
"""
import os

import numpy as np
import pandas as pd

from .. import nn
from ..learn import Learner
from ..tabular.model import Embedding, TabularModel, get_emb_sz, sigmoid_range


class EmbeddingDotBias(nn.Module):
    """fastai's dot-product model: factors and biases for users and items (init: trunc normal, std 0.01).

    ``forward(x)``: x int64 (bs, 2) of [user, item] codes -> predicted ratings, float (bs, 1)
    (the shape of the targets; fastai returns (bs,), which its flattened loss accepts too).
    """

    def __init__(self, n_factors, n_users, n_items, y_range=None):
        super().__init__()
        self.u_weight, self.i_weight = Embedding(n_users, n_factors), Embedding(n_items, n_factors)
        self.u_bias, self.i_bias = Embedding(n_users, 1), Embedding(n_items, 1)
        self.y_range = y_range
        self.classes, self.user_name, self.item_name = None, None, None

    @classmethod
    def from_classes(cls, n_factors, classes, user=None, item=None, y_range=None):
        """Sized from ``dls.classes`` ({user name: vocab, item name: vocab}; the first two unless
        named); the model keeps the vocabularies, so ``bias`` and ``weight`` take names."""
        user = list(classes)[0] if user is None else user
        item = list(classes)[1] if item is None else item
        model = cls(n_factors, len(classes[user]), len(classes[item]), y_range=y_range)
        model.classes, model.user_name, model.item_name = classes, user, item
        return model

    def forward(self, x):
        """x (N, 2) [user, item] codes -> (N, 1): u_weight[u] . i_weight[i] + u_bias[u] + i_bias[i],
        through sigmoid_range(., *y_range) when y_range is given.
        """
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"EmbeddingDotBias: the input must be (batch, 2) [user, item] codes, got shape "
                             f"{tuple(x.shape)}")
        users, items = x[:, 0], x[:, 1]
        dot = (self.u_weight(users) * self.i_weight(items)).sum(1, keepdim=True)
        res = dot + self.u_bias(users) + self.i_bias(items)
        return res if self.y_range is None else sigmoid_range(res, *self.y_range)

    def _codes(self, names, is_item):
        if self.classes is None:
            raise ValueError("EmbeddingDotBias: this model was not built with from_classes, so it does not know "
                             "the names; index u_weight/i_weight/u_bias/i_bias with codes instead")
        column = self.item_name if is_item else self.user_name
        lookup = {v: i for i, v in enumerate(self.classes[column])}
        unknown = [n for n in names if n not in lookup]
        if unknown:
            raise KeyError(f"EmbeddingDotBias: {unknown[:5]} are not in the {column!r} vocabulary "
                           f"({len(lookup)} names, e.g. {list(lookup)[1:4]})")
        return np.array([lookup[n] for n in names], dtype=np.int64)

    def bias(self, names, is_item=True):
        """The learned biases (numpy, one per name) of items (or users) given by name."""
        table = self.i_bias if is_item else self.u_bias
        return table.weight.numpy()[self._codes(names, is_item), 0].copy()

    def weight(self, names, is_item=True):
        """The learned factor vectors (numpy, (len(names), n_factors)) of items (or users) given by name."""
        table = self.i_weight if is_item else self.u_weight
        return table.weight.numpy()[self._codes(names, is_item)].copy()

    def extra_repr(self):
        return f"y_range={self.y_range}" if self.y_range is not None else ""


class EmbeddingNN(TabularModel):
    """fastai's neural collaborative filter: a TabularModel on the user and item embeddings only
    (no continuous columns, one output). forward(x): x int64 (bs, 2) -> (bs, 1)."""

    def __init__(self, emb_szs, layers, **kwargs):
        super().__init__(emb_szs, n_cont=0, out_sz=1, layers=layers, **kwargs)

    def forward(self, x_cat, x_cont=None):
        return super().forward(x_cat)


class CollabLearner(Learner):
    """A Learner that can say what its item embeddings learned (chapter 8's interpretation)."""

    def _item_column(self):
        dls = self.dls
        return dls.to_pandas.train[dls.item_name].to_numpy(), dls.classes[dls.item_name]

    def most_rated(self, n=1000):
        """Codes of the ``n`` items with the most training ratings, most rated first (`#na#` left out)."""
        codes, vocab = self._item_column()
        counts = np.bincount(codes, minlength=len(vocab))
        counts[0] = 0
        order = np.argsort(-counts, kind="stable")[:n]
        return order[counts[order] > 0]

    def _item_factors(self):
        model = self.model
        if isinstance(model, EmbeddingDotBias):
            return model.i_weight.weight.numpy()
        return model.embeds[1].weight.numpy()  # EmbeddingNN: the item column's embedding

    def top_biases(self, n=5, n_top=1000):
        """(lowest, highest): the ``n`` items with the lowest and the highest learned bias among the
        ``n_top`` most rated, as DataFrames of title, bias, mean training rating and number of ratings."""
        if not isinstance(self.model, EmbeddingDotBias):
            raise TypeError(f"top_biases: a {type(self.model).__name__} has no item biases; "
                            f"use collab_learner(dls, use_nn=False)")
        dls = self.dls
        codes, vocab = self._item_column()
        ratings = dls.to_pandas.train[dls.rating_name].to_numpy(np.float64)
        counts = np.bincount(codes, minlength=len(vocab))
        means = np.bincount(codes, weights=ratings, minlength=len(vocab)) / np.maximum(counts, 1)
        top = self.most_rated(n_top)
        bias = self.model.i_bias.weight.numpy()[top, 0]
        table = pd.DataFrame({dls.item_name: [vocab[i] for i in top], "bias": bias,
                              "mean_rating": means[top], "n_ratings": counts[top]})
        table = table.sort_values("bias", kind="stable").reset_index(drop=True)
        return table.head(n), table.tail(n).iloc[::-1].reset_index(drop=True)

    def item_pca(self, n_top=1000, k=3):
        """(titles, coordinates (n_top, k)): the item factors of the ``n_top`` most rated items,
        centred and projected on their ``k`` principal directions (numpy SVD), most rated first."""
        top = self.most_rated(n_top)
        factors = self._item_factors()[top].astype(np.float64)
        centred = factors - factors.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)  # rows of vt: the principal directions
        vocab = self.dls.classes[self.dls.item_name]
        return [vocab[i] for i in top], centred @ vt[:k].T

    def plot_item_pca(self, path="item_pca.png", n=50, n_top=1000, axes=(0, 1)):
        """A scatter of the ``n`` most rated items on two principal components of the item factors
        (the PCA is fitted on the ``n_top`` most rated), labelled with titles, saved as a PNG."""
        from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
        titles, coords = self.item_pca(n_top, k=max(axes) + 1)
        titles, x, y = titles[:n], coords[:n, axes[0]], coords[:n, axes[1]]
        fig = Figure(figsize=(12, 12), tight_layout=True)
        ax = fig.subplots()
        ax.scatter(x, y, s=12)
        colours = np.random.default_rng(0).random((len(titles), 3)) * 0.7
        for title, xi, yi, colour in zip(titles, x, y, colours):
            ax.text(xi, yi, title, color=colour, fontsize=9)
        ax.set_xlabel(f"principal component {axes[0]}")
        ax.set_ylabel(f"principal component {axes[1]}")
        ax.set_title(f"Item factors of the {len(titles)} most rated items")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, dpi=100)
        return path


def collab_learner(dls, n_factors=50, use_nn=False, emb_szs=None, layers=None, config=None, y_range=None,
                   loss_func=None, **kwargs):
    """fastai's collab_learner: EmbeddingDotBias with ``n_factors`` factors, or with ``use_nn`` an
    EmbeddingNN (embedding sizes by fastai's rule unless ``emb_szs`` = {name: size}, hidden
    ``layers`` [n_factors] by default). Loss: MSELossFlat. Returns a CollabLearner."""
    if use_nn:
        config = dict(config or {})
        if y_range is not None:
            config["y_range"] = y_range
        model = EmbeddingNN(get_emb_sz(dls.to_pandas, emb_szs), layers or [n_factors], **config)
    else:
        model = EmbeddingDotBias.from_classes(n_factors, dls.classes, dls.user_name, dls.item_name, y_range=y_range)
    return CollabLearner(dls, model, loss_func=loss_func if loss_func is not None else nn.MSELossFlat(), **kwargs)
