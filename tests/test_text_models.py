"""AWD-LSTM's dropouts, its state kept from batch to batch, tied weights, concat pooling over padded reviews,
and ULMFiT's two learners on toy texts: a language model that learns a pattern, a classifier on its encoder."""
import numpy as np
import pandas as pd
import pytest

import minidl
from minidl import nn
from minidl.text.data import TextDataLoaders
from minidl.text.learner import language_model_learner, text_classifier_learner
from minidl.text.models import (AWD_LSTM, EmbeddingDropout, RNNDropout, WeightDropout, get_language_model,
                                masked_concat_pool)

SMALL = dict(emb_sz=16, n_hid=24, n_layers=2)


def test_rnn_dropout_uses_one_mask_for_every_time_step():
    minidl.set_seed(0)
    dp = RNNDropout(0.5)
    out = dp(minidl.ones(4, 7, 10)).numpy()
    assert set(np.unique(out)) <= {0.0, 2.0} and (out == out[:, :1]).all()
    dp.eval()
    assert (dp(minidl.ones(4, 7, 10)).numpy() == 1).all()


def test_embedding_dropout_drops_whole_words():
    minidl.set_seed(0)
    emb = nn.Embedding(50, 6)
    dp = EmbeddingDropout(emb, 0.5)
    ids = minidl.tensor(np.arange(50).reshape(5, 10))
    out = dp(ids).numpy().reshape(50, 6)
    dropped = (out == 0).all(1)
    assert 5 < dropped.sum() < 45
    np.testing.assert_allclose(out[~dropped], 2 * emb.weight.numpy()[~dropped], rtol=1e-6)


def test_weight_dropout_drops_the_hidden_matrix_in_training_only_and_trains_the_raw_copy():
    minidl.set_seed(0)
    wd = WeightDropout(nn.LSTM(3, 4), 0.5)
    assert "weight_hh_l0_raw" in dict(wd.named_parameters()) and "module.weight_hh_l0" not in wd.state_dict()
    x = minidl.randn(2, 5, 3)
    wd.eval()
    plain = nn.LSTM(3, 4)
    plain.load_state_dict({k.replace("module.", "").replace("_raw", ""): v for k, v in wd.state_dict().items()})
    np.testing.assert_allclose(wd(x)[0].numpy(), plain(x)[0].numpy(), rtol=1e-6)
    wd.train()
    out = wd(x)[0]
    assert not np.allclose(out.numpy(), plain(x)[0].numpy())
    out.sum().backward()
    assert np.abs(wd.weight_hh_l0_raw.grad.numpy()).sum() > 0


def test_awd_lstm_keeps_its_state_between_batches_until_reset():
    minidl.set_seed(0)
    enc = AWD_LSTM(30, **SMALL, hidden_p=0, input_p=0, embed_p=0, weight_p=0)
    enc.eval()
    ids = minidl.tensor(np.random.default_rng(0).integers(0, 30, (2, 12)))
    whole = enc(ids).numpy()
    enc.reset()
    halves = np.concatenate([enc(ids[:, :6]).numpy(), enc(ids[:, 6:]).numpy()], 1)
    np.testing.assert_allclose(halves, whole, rtol=1e-5, atol=1e-6)
    assert not enc.hidden[0][0].requires_grad                               # detached: gradients stop at a batch
    enc.reset()
    assert not np.allclose(enc(ids[:, 6:]).numpy(), whole[:, 6:], atol=1e-4)  # without the state, another reading


def test_the_language_model_ties_its_decoder_to_its_embedding():
    model = get_language_model(40, config=SMALL)
    assert model[1].decoder.weight is model[0].encoder.weight
    assert model(minidl.tensor(np.zeros((3, 5), np.int64))).shape == (3, 5, 40)


def test_concat_pooling_leaves_the_padding_out():
    out = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    mask = np.array([[True, True, False, False, False], [False] * 5])
    pooled = masked_concat_pool(minidl.tensor(out), minidl.tensor(mask)).numpy()
    for row, m in enumerate(mask):
        real = out[row][~m]
        np.testing.assert_allclose(pooled[row], np.concatenate([out[row, -1], real.max(0), real.mean(0)]), rtol=1e-5)


def toy_reviews(n=200, seed=0):
    """'good' reviews say great/fine/nice, 'bad' ones awful/dull/poor, among the same filler words."""
    rng = np.random.default_rng(seed)
    filler = "the film was a story of some people and it is".split()
    words = {"good": "great fine nice".split(), "bad": "awful dull poor".split()}
    rows = []
    for k in range(n):
        label = "good" if k % 2 else "bad"
        text = " ".join(rng.choice(filler, 6)) + " " + " ".join(rng.choice(words[label], 2)) + " " + \
            " ".join(rng.choice(filler, 4))
        rows.append((text, label, k >= 0.8 * n))
    return pd.DataFrame(rows, columns=["text", "label", "is_valid"])


def test_ulmfit_a_language_model_then_a_classifier_on_its_encoder(tmp_path):
    minidl.set_seed(0)
    df = toy_reviews(400)
    dls_lm = TextDataLoaders.from_df(df, is_lm=True, valid_col="is_valid", bs=8, seq_len=12, min_freq=1, seed=0)
    lm = language_model_learner(dls_lm, AWD_LSTM, config=SMALL, drop_mult=0.1, pretrained=False, path=tmp_path)
    groups = [id(p) for g in lm.splitter(lm.model) for p in g]
    assert sorted(groups) == sorted(id(p) for p in lm.model.parameters())   # each parameter in one group, the bias too
    lm.fit_one_cycle(2, 2e-2)
    loss, acc, perplexity = lm.validate()
    assert perplexity == pytest.approx(np.exp(loss), rel=0.02) and perplexity < 20     # uniform over ~25 words: 25
    # (valid_loss weights batches by rows, perplexity by tokens: the last window is shorter)
    lm.save_encoder("enc")
    dls = TextDataLoaders.from_df(df, valid_col="is_valid", bs=16, vocab=dls_lm.vocab, seed=0)
    learn = text_classifier_learner(dls, AWD_LSTM, config=SMALL, drop_mult=0.1, pretrained=False, path=tmp_path)
    learn.load_encoder("enc")                                             # frozen: ULMFiT trains the head first,
    np.testing.assert_array_equal(learn.model[0].module.encoder.weight.numpy(), lm.model[0].encoder.weight.numpy())
    assert not learn.model[0].module.encoder.weight.requires_grad and learn.model[1].layers[-1].weight.requires_grad
    learn.fit_one_cycle(1, 2e-2)
    learn.freeze_to(-2)                                                   # then the last LSTM layer too,
    learn.fit_one_cycle(1, 2e-2)
    learn.unfreeze()                                                      # then everything
    learn.fit_one_cycle(4, 3e-2)
    assert learn.validate()[1] >= 0.9
    label, index, probs = learn.predict("the film was great and nice")
    assert label == "good" and dls.classes[index] == "good" and probs.shape == (2,)
    other = TextDataLoaders.from_df(df.assign(text=df.text + " encore"), valid_col="is_valid", bs=16, min_freq=1)
    stranger = text_classifier_learner(other, AWD_LSTM, config=SMALL, pretrained=False, path=tmp_path)
    with pytest.raises(ValueError, match="enc was trained with another vocabulary"):
        stranger.load_encoder("enc")


@pytest.mark.parametrize("is_lm", [True, False])
def test_rnn_regularizer_adds_ar_and_tar_to_the_gradient_not_to_the_recorded_loss(tmp_path, is_lm):
    """fastai's TextLearner defaults (alpha 2, beta 1): the loss backward sees is the recorded loss plus
    2 * mean(out^2) + 1 * mean((raw[:, t+1] - raw[:, t])^2), computed here from the outputs the head kept."""
    from minidl.learn import Callback
    from minidl.text.learner import RNNRegularizer
    df = toy_reviews(64)
    kw = dict(is_lm=True, seq_len=12) if is_lm else {}
    dls = TextDataLoaders.from_df(df, valid_col="is_valid", bs=8, min_freq=1, seed=0, **kw)
    make = language_model_learner if is_lm else text_classifier_learner
    seen = []

    class Look(Callback):
        order = 5  # after the regularizer (0) in after_loss

        def after_loss(self):
            if self.training:
                raw, out = self.model[-1].rnn_outputs
                raw, out = raw.detach().numpy(), out.detach().numpy()
                want = 2 * (out ** 2).mean() + ((raw[:, 1:] - raw[:, :-1]) ** 2).mean()
                seen.append((float(self.loss_grad.item()) - float(self.loss.item()), want))
                raise minidl.learn.CancelFitException
    learn = make(dls, AWD_LSTM, config=SMALL, pretrained=False, path=tmp_path, cbs=[Look()])
    assert any(isinstance(cb, RNNRegularizer) for cb in learn.cbs)
    learn.fit(1)
    (extra, want), = seen
    assert want > 1e-4 and extra == pytest.approx(want, rel=1e-4)
    plain = make(dls, AWD_LSTM, config=SMALL, pretrained=False, path=tmp_path, alpha=0, beta=0)
    assert not any(isinstance(cb, RNNRegularizer) for cb in plain.cbs)
