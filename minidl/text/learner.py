"""ULMFiT's learners: a language model that learns the reviews' English, then a classifier on its encoder.

    lm = language_model_learner(dls_lm, AWD_LSTM, drop_mult=0.3, metrics=[accuracy, Perplexity()])
    lm.fit_one_cycle(1, 2e-2); lm.save_encoder("finetuned")
    learn = text_classifier_learner(dls_clas, AWD_LSTM, drop_mult=0.5, metrics=accuracy)
    learn.load_encoder("finetuned"); learn.fine_tune(4, 1e-2)
    learn.predict("I really liked that movie!")     # ('positive', 1, probabilities)

``ModelResetter`` forgets the hidden state at the start of every training and validation pass
(a language model's rows start again from the top of the stream). The classifier's parameter
groups are the embedding, each LSTM layer, and the head, so ``freeze_to(-2)`` unfreezes the
last LSTM layer too: ULMFiT's gradual unfreezing.
"""
import math

import numpy as np

from ..autograd import no_grad
from ..io import load_checkpoint, save_checkpoint
from ..learn import Learner, accuracy
from ..learn.callback import Callback
from ..learn.metrics import Metric
from ..nn import CrossEntropyLossFlat
from ..tensor import tensor
from .core import tokenize
from .models import AWD_LSTM, get_language_model, get_text_classifier

__all__ = ["ModelResetter", "Perplexity", "TextLearner", "language_model_learner", "text_classifier_learner",
           "awd_lstm_lm_split", "awd_lstm_clas_split"]


class ModelResetter(Callback):
    """Resets the model's hidden state before each training and validation pass, and after fitting."""

    def before_train(self):
        """A new pass over the stream: forget the state of the last one."""
        self.model.reset()

    def before_validate(self):
        """Validation reads its own stream: start from nothing."""
        self.model.reset()

    def after_fit(self):
        """Leave no state behind for predict."""
        self.model.reset()


class Perplexity(Metric):
    """exp(the mean cross-entropy per token) over the whole set: how many words the model hesitates between."""
    name = "perplexity"

    def reset(self):
        """total = count = 0."""
        self.total, self.count = 0.0, 0

    def accumulate(self, preds, targets):
        """Add this batch's summed per-token loss and its number of tokens."""
        n = targets.numel()
        self.total += float(CrossEntropyLossFlat()(preds, targets).item()) * n
        self.count += n

    @property
    def value(self):
        return math.exp(self.total / self.count) if self.count else None


def awd_lstm_lm_split(model):
    """Groups of a language model: each LSTM layer with its dropout, then the embedding and the decoder."""
    encoder = model[0]
    return [list(rnn.parameters()) for rnn in encoder.rnns] + [list(encoder.encoder.parameters())]


def awd_lstm_clas_split(model):
    """Groups of a classifier: the embedding, each LSTM layer, the head (ULMFiT's gradual unfreezing)."""
    encoder = model[0].module
    return ([list(encoder.encoder.parameters())] + [list(rnn.parameters()) for rnn in encoder.rnns]
            + [list(model[1].parameters())])


class TextLearner(Learner):
    def save_encoder(self, name):
        """Save the AWD-LSTM encoder's weights (the part a classifier reuses) to path/model_dir/name.ckpt."""
        encoder = self._encoder()
        return save_checkpoint(self.path / self.model_dir / f"{name}.ckpt",
                               {"encoder": {k: v.numpy() for k, v in encoder.state_dict().items()},
                                "vocab": list(self.dls.vocab.itos)})

    def load_encoder(self, name):
        """Load an encoder saved by a language model's save_encoder (its vocabulary must be this one's)."""
        tree = load_checkpoint(self.path / self.model_dir / f"{name}.ckpt")
        if tree.get("vocab") != list(self.dls.vocab.itos):
            raise ValueError(f"load_encoder: {name} was trained with another vocabulary; build the classifier's "
                             f"loaders with the language model's (TextDataLoaders.from_df(..., vocab=dls_lm.vocab))")
        self._encoder().load_state_dict(tree["encoder"])
        return self

    def _encoder(self):
        first = self.model[0]
        return first.module if hasattr(first, "module") else first

    def predict(self, text):
        """A classifier's answer for one text: (label, class index, probabilities); a language model's
        probabilities of the next token after ``text``."""
        ids = self.dls.vocab.numericalize(tokenize(text))
        x = tensor(np.array([ids], dtype=np.int64), device=self.dls.device)
        self.model.eval()
        self.model.reset()
        with no_grad():
            out = self.model(x)
        self.model.reset()
        if self.dls.is_lm:
            probs = self.loss_func.activation(out)[0, -1]
            index = int(probs.numpy().argmax())
            return self.dls.vocab.itos[index], index, probs
        probs = self.loss_func.activation(out)[0]
        index = int(probs.numpy().argmax())
        return self.dls.classes[index], index, probs


def _check_arch(arch, who):
    if arch is not AWD_LSTM:
        raise ValueError(f"{who}: the architecture minidl has is AWD_LSTM, got {getattr(arch, '__name__', arch)!r}")


def language_model_learner(dls, arch=AWD_LSTM, config=None, drop_mult=1.0, pretrained=False, metrics=None,
                           **kwargs):
    """fastai's language_model_learner: AWD-LSTM plus a decoder tied to its embedding, on language-model loaders.

    (``pretrained=True``, fastai's WikiText-103 weights, is not available yet: an error says so.)"""
    _check_arch(arch, "language_model_learner")
    if pretrained:
        raise NotImplementedError("language_model_learner: WikiText-103 weights are not in minidl yet; "
                                  "train from random weights with pretrained=False")
    if not dls.is_lm:
        raise ValueError("language_model_learner: the loaders are a classifier's; build them with is_lm=True")
    model = get_language_model(len(dls.vocab), config, drop_mult)
    metrics = [accuracy, Perplexity()] if metrics is None else metrics
    learn = TextLearner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=metrics, splitter=awd_lstm_lm_split,
                        **kwargs)
    learn.add_cbs(ModelResetter())
    return learn


def text_classifier_learner(dls, arch=AWD_LSTM, seq_len=72, config=None, drop_mult=1.0, pretrained=False,
                            metrics=None, max_len=72 * 20, lin_ftrs=(50,), ps=(0.1,), **kwargs):
    """fastai's text_classifier_learner: a SentenceEncoder (AWD-LSTM read in chunks of ``seq_len``) and a
    concat-pooling head. Load a fine-tuned language model's encoder with ``load_encoder``; the learner
    starts frozen to its head when an encoder is pretrained."""
    _check_arch(arch, "text_classifier_learner")
    if pretrained:
        raise NotImplementedError("text_classifier_learner: WikiText-103 weights are not in minidl yet; use "
                                  "pretrained=False and load_encoder() a language model you fine-tuned")
    if dls.is_lm:
        raise ValueError("text_classifier_learner: the loaders are a language model's; build them with labels")
    model = get_text_classifier(len(dls.vocab), len(dls.classes), seq_len, config, drop_mult, lin_ftrs, ps,
                                pad_idx=dls.vocab.stoi["xxpad"], max_len=max_len)
    return TextLearner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy if metrics is None else metrics,
                       splitter=awd_lstm_clas_split, **kwargs)
