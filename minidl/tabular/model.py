"""The tabular model: an embedding per categorical column, then a stack of Linear layers.

Why embeddings: a category's integer code is arbitrary (code 7 is not "more" than
code 6), so each level gets a learned vector instead, and similar levels can end up
with similar vectors. fastai's rule of thumb for a column with n levels:
min(600, round(1.6 * n ** 0.56)) numbers per vector.
"""
import numpy as np
import pandas as pd

from .. import nn
from ..autograd import no_grad
from ..learn import Learner
from ..nn import functional as F
from ..ops.shape import cat
from ..tensor import tensor


def emb_sz_rule(n_cat):
    """fastai's embedding size for a column with n_cat levels (#na# included)."""
    return min(600, round(1.6 * n_cat ** 0.56))


def get_emb_sz(to, sz_dict=None):
    """(levels, size) for each categorical column of a TabularPandas; sz_dict overrides sizes."""
    classes = to.proc["Categorify"].classes
    return [(len(classes[c]), (sz_dict or {}).get(c, emb_sz_rule(len(classes[c])))) for c in to.cat_names]


class Embedding(nn.Embedding):
    """nn.Embedding initialised as fastai does: normal with std 0.01, truncated at 2 std."""

    def __init__(self, num_embeddings, embedding_dim):
        super().__init__(num_embeddings, embedding_dim)
        nn.init.trunc_normal_(self.weight, std=0.01, a=-0.02, b=0.02)


class SigmoidRange(nn.Module):
    """Squash outputs into (low, high): low + (high - low) * sigmoid(x)."""

    def __init__(self, low, high):
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x):
        """low + (high - low) * sigmoid(x): values squashed into (low, high)."""
        return sigmoid_range(x, self.low, self.high)

    def extra_repr(self):
        return f"low={self.low}, high={self.high}"


def sigmoid_range(x, low, high):
    """low + (high - low) * sigmoid(x): values squashed into (low, high) (fastai puts ratings in (0, 5.5))."""
    return F.sigmoid(x) * (high - low) + low


def lin_bn_drop(n_in, n_out, bn=True, p=0.0, act=None):
    """fastai's LinBnDrop with lin_first=True: Linear (no bias before a BatchNorm), act, BatchNorm, Dropout."""
    layers = [nn.Linear(n_in, n_out, bias=not bn)]
    if act is not None:
        layers.append(act)
    if bn:
        layers.append(nn.BatchNorm1d(n_out))
    if p:
        layers.append(nn.Dropout(p))
    return layers


class TabularModel(nn.Module):
    """Embeddings for the categories + BatchNorm'd continuous columns -> Linear/ReLU/BatchNorm layers -> outputs."""

    def __init__(self, emb_szs, n_cont, out_sz, layers=(200, 100), ps=None, embed_p=0.0, y_range=None,
                 use_bn=True, bn_final=False, bn_cont=True):
        super().__init__()
        ps = ps if ps is not None else [0.0] * len(layers)
        ps = ps if isinstance(ps, (list, tuple)) else [ps] * len(layers)
        self.embeds = nn.ModuleList([Embedding(n, d) for n, d in emb_szs])
        self.emb_drop = nn.Dropout(embed_p)
        self.bn_cont = nn.BatchNorm1d(n_cont) if bn_cont and n_cont else None
        self.n_emb, self.n_cont = sum(d for _, d in emb_szs), n_cont
        sizes = [self.n_emb + n_cont] + list(layers)
        blocks = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            blocks += lin_bn_drop(n_in, n_out, bn=use_bn, p=ps[i], act=nn.ReLU())
        blocks += lin_bn_drop(sizes[-1], out_sz, bn=bn_final)
        if y_range is not None:
            blocks.append(SigmoidRange(*y_range))
        self.layers = nn.Sequential(*blocks)

    def forward(self, x_cat, x_cont=None):
        """x_cat int64 (N, n_cat) codes, x_cont float (N, n_cont) -> (N, out_sz):
        the embeddings and (batch-normed) continuous columns concatenated, then the layers.
        """
        parts = []
        if len(self.embeds):
            parts.append(self.emb_drop(cat([e(x_cat[:, i]) for i, e in enumerate(self.embeds)], dim=1)))
        if self.n_cont:
            parts.append(self.bn_cont(x_cont) if self.bn_cont is not None else x_cont)
        return self.layers(cat(parts, dim=1) if len(parts) > 1 else parts[0])


class TabularLearner(Learner):
    def predict(self, row):
        """Predict one row (a pandas Series or dict of raw values): (decoded class or value, index, probabilities).

        The row goes through the training procs: a missing continuous value gets the training
        median; text or inf where a number belongs is refused, naming the column and the row
        (a Series' name, the index label it had in its DataFrame).
        """
        to = self.dls.to_pandas
        label = row.name if isinstance(row, pd.Series) and row.name is not None else 0
        df = pd.DataFrame([dict(row)], index=[label]).drop(columns=to.y_names, errors="ignore")
        for c in to.cat_names + to.cont_names:
            if c not in df.columns and not c.endswith("_na"):
                raise KeyError(f"predict: the row has no column {c!r}; it needs {to.cat_names + to.cont_names}")
        cats, conts = to.arrays(to.process(df, "predict"))
        self.model.eval()
        with no_grad():
            out = self.model(tensor(cats, device=self.dls.device), tensor(conts, device=self.dls.device))
        probs = self.loss_func.activation(out)[0]
        decoded = self.loss_func.decodes(out)[0]
        if to.vocab is None:
            return float(decoded.reshape(-1)[0].item()), decoded, probs
        return to.vocab[int(decoded.item())], decoded, probs


def tabular_learner(dls, layers=None, emb_szs=None, config=None, n_out=None, y_range=None, **kwargs):
    """fastai's tabular_learner: a TabularModel sized from the data (layers [200, 100] by default)."""
    to = dls.to_pandas
    if n_out is None:
        n_out = len(to.vocab) if to.vocab is not None else len(to.y_names)
    model = TabularModel(emb_szs or get_emb_sz(to), len(to.cont_names), n_out, layers or [200, 100],
                         y_range=y_range, **(config or {}))
    return TabularLearner(dls, model, **kwargs)
