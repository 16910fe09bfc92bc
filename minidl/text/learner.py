"""ULMFiT's learners: a language model that learns the reviews' English, then a classifier on its encoder.

    lm = language_model_learner(dls_lm, AWD_LSTM, drop_mult=0.3, metrics=[accuracy, Perplexity()])
    lm.fit_one_cycle(1, 2e-2); lm.save_encoder("finetuned")
    learn = text_classifier_learner(dls_clas, AWD_LSTM, drop_mult=0.5, metrics=accuracy)
    learn.load_encoder("finetuned"); learn.fine_tune(4, 1e-2)
    learn.predict("I really liked that movie!")     # ('positive', 1, probabilities)

``pretrained=True`` (fastai's default) starts either model from fastai's AWD-LSTM trained on
WikiText-103 (pretrained.py: found in ~/.minidl/models/wt103-fwd or downloaded; offline, a loud
warning and random weights), with the body frozen: first the new words' embeddings (language
model) or the head (classifier) learn, then ``unfreeze``/``fine_tune`` trains the rest.

``ModelResetter`` forgets the hidden state at the start of every training and validation pass
(a language model's rows start again from the top of the stream). The classifier's parameter
groups are the embedding, each LSTM layer, and the head, so ``freeze_to(-2)`` unfreezes the
last LSTM layer too: ULMFiT's gradual unfreezing.
"""
import math
import re

import numpy as np

from .. import distributed
from ..autograd import no_grad
from ..io import load_checkpoint, save_checkpoint
from ..learn import Learner, accuracy
from ..learn.callback import Callback
from ..learn.metrics import Metric
from ..nn import CrossEntropyLossFlat
from ..tensor import tensor
from .core import tokenize
from .models import AWD_LSTM, get_language_model, get_text_classifier
from .pretrained import pretrained_state

__all__ = ["ModelResetter", "Perplexity", "RNNRegularizer", "TextLearner", "language_model_learner", "text_classifier_learner",
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
        """Add this batch's summed per-token loss (kept where the loss is: a GPU copies nothing to the host
        per batch) and its number of tokens."""
        n = targets.numel()
        self.total = self.total + CrossEntropyLossFlat()(preds, targets).detach() * n
        self.count += n

    @property
    def value(self):
        return math.exp(float(self.total) / self.count) if self.count else None


class RNNRegularizer(Callback):
    """AR and TAR (Merity et al. 2017), as fastai's TextLearner adds them: in training, the loss that backward
    differentiates (``loss_grad``; the recorded loss stays the plain one) gets

        alpha * mean(out ** 2)                       activation regularisation: small outputs
        beta * mean((raw[:, t+1] - raw[:, t]) ** 2)  temporal activation regularisation: slowly changing ones

    ``out`` the last LSTM layer's outputs after the decoder's dropout, ``raw`` before it (a classifier's head
    has no dropout there: both are the encoder's outputs); the model's last part keeps them (``rnn_outputs``)."""
    def __init__(self, alpha=2.0, beta=1.0):
        self.alpha, self.beta = alpha, beta

    def after_loss(self):
        """Add the penalties to loss_grad."""
        outputs = getattr(self.model[-1], "rnn_outputs", None)
        if not self.training or outputs is None:
            return
        raw, out = outputs
        if self.alpha:
            self.learn.loss_grad = self.learn.loss_grad + self.alpha * (out * out).mean()
        if self.beta and raw.shape[1] > 1:
            step = raw[:, 1:] - raw[:, :-1]
            self.learn.loss_grad = self.learn.loss_grad + self.beta * (step * step).mean()


def awd_lstm_lm_split(model):
    """Groups of a language model: each LSTM layer, then the embedding with the decoder (its weight is the
    embedding's own, so it is listed once, with the decoder's bias)."""
    encoder = model[0]
    last = {id(p): p for p in [*encoder.encoder.parameters(), *model[1].parameters()]}
    return [list(rnn.parameters()) for rnn in encoder.rnns] + [list(last.values())]


def awd_lstm_clas_split(model):
    """Groups of a classifier: the embedding, each LSTM layer, the head (ULMFiT's gradual unfreezing)."""
    encoder = model[0].module
    return ([list(encoder.encoder.parameters())] + [list(rnn.parameters()) for rnn in encoder.rnns]
            + [list(model[1].parameters())])


class TextLearner(Learner):
    """A Learner for AWD-LSTMs: fastai's lower momentum for them (0.8 -> 0.7 -> 0.8 over a cycle, where
    other models get 0.95 -> 0.85 -> 0.95), AR and TAR (RNNRegularizer(alpha, beta); 0 turns one off), the
    encoder saved and loaded apart, and predict on a text."""

    def __init__(self, dls, model, alpha=2.0, beta=1.0, moms=(0.8, 0.7, 0.8), **kwargs):
        super().__init__(dls, model, moms=moms, **kwargs)
        if alpha or beta:
            self.add_cbs(RNNRegularizer(alpha, beta))

    def save_encoder(self, name):
        """Save the AWD-LSTM encoder's weights (the part a classifier reuses) to path/model_dir/name.ckpt."""
        path = self.path / self.model_dir / f"{name}.ckpt"
        if distributed.is_main_process():  # data parallel: rank 0 writes, the others wait until it has
            encoder = self._encoder()
            path = save_checkpoint(path, {"encoder": {k: v.numpy() for k, v in encoder.state_dict().items()},
                                          "vocab": list(self.dls.vocab.itos)})
        if distributed.is_initialized():
            distributed.barrier()
        return path

    def load_encoder(self, name):
        """Load an encoder saved by a language model's save_encoder (its vocabulary must be this one's), and
        freeze all but the head, as fastai does: the new head learns first."""
        tree = load_checkpoint(self.path / self.model_dir / f"{name}.ckpt")
        if tree.get("vocab") != list(self.dls.vocab.itos):
            raise ValueError(f"load_encoder: {name} was trained with another vocabulary; build the classifier's "
                             f"loaders with the language model's (TextDataLoaders.from_df(..., vocab=dls_lm.vocab))")
        self._encoder().load_state_dict(tree["encoder"])
        self.freeze()
        return self

    def _encoder(self):
        first = self.model[0]
        return first.module if hasattr(first, "module") else first

    def predict(self, text):
        """A classifier's answer for one text: (label, class index, probabilities); a language model's
        probabilities of the next token after ``text``."""
        ids = self.dls.numericalize(tokenize(text))
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


def _load_pretrained(module, state, file, prefix=""):
    """Load the WikiText-103 language model's ``state`` (its keys that start with ``prefix``, that taken off) into
    ``module``, or say that ``file`` was trained at other sizes."""
    try:
        module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    except RuntimeError as e:
        layers = {m.group(1) for k in state if (m := re.match(r"0\.rnns\.(\d+)\.", k))}
        hidden = state.get("0.rnns.0.weight_hh_l0_raw")
        sizes = (f"emb_sz={state['0.encoder.weight'].shape[1]}, n_hid={hidden.shape[1] if hidden is not None else '?'}"
                 f", n_layers={len(layers)}")
        raise ValueError(f"{file} does not fit this AWD_LSTM: its weights were trained with {sizes}; keep those "
                         f"sizes in config, or pass pretrained=False to train other sizes from random weights.\n"
                         f"{e}") from None


def language_model_learner(dls, arch=AWD_LSTM, config=None, drop_mult=1.0, pretrained=True, metrics=None,
                           **kwargs):
    """fastai's language_model_learner: AWD-LSTM plus a decoder tied to its embedding, on language-model loaders.

    ``pretrained``: start from the WikiText-103 language model, frozen but for the embedding and decoder
    (offline without its files: a loud warning, and random weights)."""
    _check_arch(arch, "language_model_learner")
    if not dls.is_lm:
        raise ValueError("language_model_learner: the loaders are a classifier's; build them with is_lm=True")
    model = get_language_model(len(dls.vocab), config, drop_mult)
    metrics = [accuracy, Perplexity()] if metrics is None else metrics
    learn = TextLearner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=metrics, splitter=awd_lstm_lm_split,
                        **kwargs)
    learn.add_cbs(ModelResetter())
    if pretrained:
        state, file = pretrained_state(dls.vocab.itos, "language_model_learner")
        if state is not None:
            _load_pretrained(model, state, file)
            learn.freeze()
    return learn


def text_classifier_learner(dls, arch=AWD_LSTM, seq_len=72, config=None, drop_mult=1.0, pretrained=True,
                            metrics=None, max_len=72 * 20, lin_ftrs=(50,), ps=(0.1,), **kwargs):
    """fastai's text_classifier_learner: a SentenceEncoder (AWD-LSTM read in chunks of ``seq_len``) and a
    concat-pooling head. ``pretrained``: the encoder starts as the WikiText-103 language model's, frozen
    (offline without its files: a loud warning, and random weights); ULMFiT's better start is a language
    model fine-tuned on your own texts: ``load_encoder`` it (that freezes the encoder too)."""
    _check_arch(arch, "text_classifier_learner")
    if dls.is_lm:
        raise ValueError("text_classifier_learner: the loaders are a language model's; build them with labels")
    model = get_text_classifier(len(dls.vocab), len(dls.classes), seq_len, config, drop_mult, lin_ftrs, ps,
                                pad_idx=dls.vocab.stoi["xxpad"], max_len=max_len)
    learn = TextLearner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy if metrics is None else metrics,
                        splitter=awd_lstm_clas_split, **kwargs)
    if pretrained:
        state, file = pretrained_state(dls.vocab.itos, "text_classifier_learner")
        if state is not None:
            _load_pretrained(model[0].module, state, file, prefix="0.")   # the encoder: the decoder stays out
            learn.freeze()
    return learn
