"""AWD-LSTM (Merity et al. 2017), the network ULMFiT reads text with, and its two heads.

An LSTM language model over-fits a few thousand reviews in minutes; AWD-LSTM is an LSTM
regularised five ways, each a dropout of a different thing (the *_p of the configs):

    embed_p   EmbeddingDropout: whole words of the embedding table dropped (a word is unknown for a batch)
    input_p   RNNDropout on the embeddings: one mask per sequence, the same at every time step
    weight_p  WeightDropout: the hidden-to-hidden matrices of the LSTMs (DropConnect)
    hidden_p  RNNDropout between the LSTM layers
    output_p  dropout before the decoder (language model) or in the classifier's head

``drop_mult`` scales them all at once (fastai's knob: 0.5 for a classifier on little data).
The language model's decoder shares its weight matrix with the embedding (tied weights):
a word's input vector is also what predicting it aims at, and half the parameters go.

For classification, ``SentenceEncoder`` reads a review in chunks of ``bptt`` tokens, its
hidden state carried from chunk to chunk, and ``PoolingLinearClassifier`` pools the
outputs three ways [last, max, mean] (the end of the review, its strongest signal, its
average), then batch norm, dropout and linear layers.
"""
from .. import nn
from ..nn import functional as F
from ..ops.shape import cat
from ..tensor import ones, zeros

__all__ = ["AWD_LSTM", "RNNDropout", "EmbeddingDropout", "WeightDropout", "LinearDecoder", "SequentialRNN",
           "SentenceEncoder", "PoolingLinearClassifier", "awd_lstm_lm_config", "awd_lstm_clas_config",
           "get_language_model", "get_text_classifier"]

awd_lstm_lm_config = dict(emb_sz=400, n_hid=1152, n_layers=3, pad_token=1, output_p=0.1, hidden_p=0.15,
                          input_p=0.25, embed_p=0.02, weight_p=0.2, tie_weights=True, out_bias=True)
awd_lstm_clas_config = dict(emb_sz=400, n_hid=1152, n_layers=3, pad_token=1, output_p=0.4, hidden_p=0.3,
                            input_p=0.4, embed_p=0.05, weight_p=0.5)


class RNNDropout(nn.Module):
    """Variational dropout on (batch, time, features): one mask per sequence, the same at every step."""

    def __init__(self, p=0.5):
        super().__init__()
        self.p = p

    def forward(self, x):
        """x * mask (batch, 1, features) in training, the mask 0 or 1/(1-p); x itself in eval."""
        if not self.training or self.p == 0:
            return x
        return x * F.dropout(ones(x.shape[0], 1, x.shape[2], dtype=x.dtype, device=x.device), self.p, True)


class EmbeddingDropout(nn.Module):
    """Drops whole rows of ``emb``'s table (words) with probability ``embed_p`` in training, scaling the others."""

    def __init__(self, emb, embed_p):
        super().__init__()
        self.emb, self.embed_p = emb, embed_p

    def forward(self, ids):
        """The embeddings of ``ids`` from the table with some rows zeroed (training) or all kept (eval)."""
        weight = self.emb.weight
        if self.training and self.embed_p:
            rows = ones(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
            weight = weight * F.dropout(rows, self.embed_p, True)
        return F.embedding(ids, weight)


class WeightDropout(nn.Module):
    """DropConnect on ``module``'s ``layer_names`` weights: each forward in training drops entries of the
    matrix itself (the same for every step of the sequence), from a raw copy kept as ``<name>_raw``."""

    def __init__(self, module, weight_p, layer_names=("weight_hh_l0",)):
        super().__init__()
        self.module, self.weight_p, self.layer_names = module, weight_p, list(layer_names)
        for name in self.layer_names:
            raw = module._parameters.pop(name)              # the trained copy lives here now
            setattr(self, f"{name}_raw", nn.Parameter(raw))
            object.__setattr__(module, name, raw)

    def forward(self, *args):
        """The wrapped module's forward, with its weights dropped afresh (or the raw weights in eval)."""
        for name in self.layer_names:
            raw = getattr(self, f"{name}_raw")
            object.__setattr__(self.module, name, F.dropout(raw, self.weight_p, self.training))
        return self.module(*args)


class AWD_LSTM(nn.Module):
    """The encoder: embedding (EmbeddingDropout) -> RNNDropout -> n_layers LSTMs with WeightDropout and RNNDropout
    between them; (batch, time) ids -> (batch, time, emb_sz). The hidden state is kept between calls
    (detached: gradients stop at the batch boundary) until ``reset()``, so a stream reads on."""

    def __init__(self, vocab_sz, emb_sz=400, n_hid=1152, n_layers=3, pad_token=1, hidden_p=0.3, input_p=0.4,
                 embed_p=0.05, weight_p=0.5):
        super().__init__()
        self.emb_sz, self.n_hid, self.n_layers, self.pad_token = emb_sz, n_hid, n_layers, pad_token
        self.encoder = nn.Embedding(vocab_sz, emb_sz)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        self.encoder_dp = EmbeddingDropout(self.encoder, embed_p)
        sizes = [emb_sz] + [n_hid] * (n_layers - 1) + [emb_sz]
        self.rnns = nn.ModuleList([WeightDropout(nn.LSTM(a, b), weight_p) for a, b in zip(sizes, sizes[1:])])
        self.input_dp = RNNDropout(input_p)
        self.hidden_dps = nn.ModuleList([RNNDropout(hidden_p) for _ in range(n_layers)])
        self.reset()

    def reset(self):
        """Forget the hidden state (a new text, or a new epoch)."""
        self.hidden = None

    def forward(self, ids):
        """ids (batch, time) -> the last layer's outputs (batch, time, emb_sz)."""
        if self.hidden is not None and self.hidden[0][0].shape[1] != ids.shape[0]:
            self.reset()            # a batch of another size (the last one of an epoch): start afresh
        x = self.input_dp(self.encoder_dp(ids))
        new_hidden = []
        for k, (rnn, dp) in enumerate(zip(self.rnns, self.hidden_dps)):
            x, (h, c) = rnn(x, None if self.hidden is None else self.hidden[k])
            new_hidden.append((h.detach(), c.detach()))
            if k < self.n_layers - 1:
                x = dp(x)
        self.hidden = new_hidden
        return x


class LinearDecoder(nn.Module):
    """Dropout, then a linear layer from the encoder's outputs to a score per word of the vocabulary;
    its weight is the embedding's own (``tie_encoder``) when given."""

    def __init__(self, n_out, n_hid, output_p=0.1, tie_encoder=None, bias=True):
        super().__init__()
        self.decoder = nn.Linear(n_hid, n_out, bias=bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        if bias:
            nn.init.zeros_(self.decoder.bias)
        if tie_encoder is not None:
            self.decoder.weight = tie_encoder.weight
        self.output_dp = RNNDropout(output_p)

    def forward(self, x):
        """(batch, time, n_hid) -> (batch, time, n_out) scores. In training, keeps (x, its dropped-out copy) as
        ``rnn_outputs`` for the RNNRegularizer (fastai's decoder returns them beside the scores)."""
        dropped = self.output_dp(x)
        self.rnn_outputs = (x, dropped) if self.training else None
        return self.decoder(dropped)


class SequentialRNN(nn.Sequential):
    """A Sequential whose ``reset()`` resets every part that has one (the encoder's hidden state)."""

    def reset(self):
        """Forget the hidden state of every part that keeps one."""
        for m in self.modules():
            if m is not self and hasattr(m, "reset"):
                m.reset()


def get_language_model(vocab_sz, config=None, drop_mult=1.0):
    """AWD-LSTM and a LinearDecoder tied to its embedding: (batch, time) ids -> (batch, time, vocab_sz) scores."""
    config = dict(awd_lstm_lm_config, **(config or {}))
    for k in [k for k in config if k.endswith("_p")]:
        config[k] *= drop_mult
    tie, bias, output_p = config.pop("tie_weights"), config.pop("out_bias"), config.pop("output_p")
    encoder = AWD_LSTM(vocab_sz, **config)
    decoder = LinearDecoder(vocab_sz, config["emb_sz"], output_p, tie_encoder=encoder.encoder if tie else None,
                            bias=bias)
    return SequentialRNN(encoder, decoder)


class SentenceEncoder(nn.Module):
    """Reads a batch of (start-padded) reviews in chunks of ``bptt`` tokens with ``module`` (an AWD_LSTM),
    the hidden state carried from chunk to chunk; returns the outputs of the last ``max_len`` tokens
    and their padding mask (True where padding)."""

    def __init__(self, bptt, module, pad_idx=1, max_len=None):
        super().__init__()
        self.bptt, self.module, self.pad_idx, self.max_len = bptt, module, pad_idx, max_len

    def reset(self):
        """Forget the encoder's hidden state."""
        self.module.reset()

    def forward(self, ids):
        """ids (batch, time) -> (outputs (batch, kept time, emb_sz), mask (batch, kept time) of padding)."""
        self.module.reset()
        length = ids.shape[1]
        outputs = []
        for start in range(0, length, self.bptt):
            out = self.module(ids[:, start:start + self.bptt])
            if self.max_len is None or start + self.bptt > length - self.max_len:
                outputs.append(out)
        out = cat(outputs, 1)
        mask = (ids[:, -out.shape[1]:] == self.pad_idx)
        return out, mask


def masked_concat_pool(output, mask):
    """[last, max, mean] over time of (batch, time, features), padding (mask True) left out of max and mean.
    Reviews are padded at the start, so the last step is each review's last token."""
    keep = 1 - mask.to(output.dtype).unsqueeze(-1)          # (batch, time, 1): 1 for a token, 0 for padding
    mean = (output * keep).sum(1) / keep.sum(1)
    maximum = (output - (1 - keep) * 1e9).amax(1)         # padding far below any real output
    return cat([output[:, -1], maximum, mean], 1)


class PoolingLinearClassifier(nn.Module):
    """Concat pooling [last, max, mean] of the encoder's outputs, then for each layer: BatchNorm1d, Dropout,
    Linear (and ReLU but for the last): ``dims`` = [3 * emb_sz, hidden..., n_classes], ``ps`` a dropout per layer."""

    def __init__(self, dims, ps):
        super().__init__()
        if len(ps) != len(dims) - 1:
            raise ValueError(f"PoolingLinearClassifier: {len(ps)} dropouts for {len(dims) - 1} layers")
        layers = []
        for k, (a, b, p) in enumerate(zip(dims[:-1], dims[1:], ps)):
            layers += [nn.BatchNorm1d(a), nn.Dropout(p), nn.Linear(a, b)]
            if k < len(ps) - 1:
                layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)

    def forward(self, encoded):
        """(outputs, mask) of the SentenceEncoder -> class scores (batch, n_classes). In training, keeps the
        encoder's outputs as ``rnn_outputs`` for the RNNRegularizer (both its raw and its dropped-out ones)."""
        output, mask = encoded
        self.rnn_outputs = (output, output) if self.training else None
        return self.layers(masked_concat_pool(output, mask))


def get_text_classifier(vocab_sz, n_class, seq_len=72, config=None, drop_mult=1.0, lin_ftrs=(50,), ps=(0.1,),
                        pad_idx=1, max_len=72 * 20):
    """SentenceEncoder(AWD-LSTM) and PoolingLinearClassifier: (batch, time) ids -> (batch, n_class) scores."""
    config = dict(awd_lstm_clas_config, **(config or {}))
    for k in [k for k in config if k.endswith("_p")]:
        config[k] *= drop_mult
    output_p = config.pop("output_p")
    encoder = SentenceEncoder(seq_len, AWD_LSTM(vocab_sz, **config), pad_idx=pad_idx, max_len=max_len)
    dims = [config["emb_sz"] * 3] + list(lin_ftrs) + [n_class]
    head = PoolingLinearClassifier(dims, [output_p] + list(ps))  # (fastai scales output_p by drop_mult, not ps)
    return SequentialRNN(encoder, head)
