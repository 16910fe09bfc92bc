"""vision_learner: a pretrained body, a new head, and a split that lets the body stay frozen.

Transfer learning in three steps (fastai's ``vision_learner``):

1. **body**: an ImageNet-trained network (``resnet34``, ``efficientnet_lite0``, ...) cut
   just before its global pooling: it turns an image into C feature maps, each 1/32 of
   the image's size (``models.create_body``);
2. **head**: a new, randomly initialised classifier for *our* classes (``create_head``):

       AdaptiveConcatPool2d -> Flatten -> BatchNorm1d(2C) -> Dropout(p/2) -> Linear(2C, 512)
       -> ReLU -> BatchNorm1d(512) -> Dropout(p) -> Linear(512, n_classes)

   Concat pooling keeps both the average and the maximum of each feature map (2C
   numbers): "how much cat fur overall" and "the strongest whisker anywhere";
3. **parameter groups** (``model_meta[arch]["split"]``): [body, head], or for ResNets
   [stem + layer1-2, layer3-4, head]. ``learn.freeze()`` trains only the
   head (and every BatchNorm, see ``Learner(train_bn=True)``), so the random head does
   not wreck the pretrained features with large early gradients; ``fine_tune`` then
   unfreezes and trains everything, the body at lower rates than the head.

Why BatchNorm stays trainable when frozen (fastai's ``train_bn``): the body's batch norm
layers were fitted to ImageNet's statistics; letting their scale and shift (a few
thousand numbers) adapt to the new photos costs little and helps, while the convolution
weights (millions) stay as ImageNet taught them. The catch, measured on 800 cat/dog
photos: in train mode a batch norm normalises with the *batch's* statistics, which on a
narrow data set differ a lot from ImageNet's, so the head learns on other features than
it is validated on. ``train_bn=False`` with ``BnFreeze`` (fastai's) or
``FreezeBodyBnStats`` (which also holds after unfreezing) keeps the body on its ImageNet
statistics; examples/pets.py uses the latter.
"""
import numpy as np

from .. import nn
from ..autograd import no_grad
from ..learn import Learner, error_rate
from ..learn.callback import Callback
from . import models
from .data import ImageBatcher
from .image import image_to_array, load_image
from .transforms import Normalize


def _bn1d(n):
    """fastai's BatchNorm for heads: weight 1, bias 1e-3 (a small positive shift so the ReLU after
    it starts with most units alive)."""
    bn = nn.BatchNorm1d(n)
    nn.init.constant_(bn.bias, 1e-3)
    return bn


def create_head(n_features, n_out, lin_ftrs=None, ps=0.5, concat_pool=True, first_bn=True, bn_final=False):
    """fastai's classifier head for a body with ``n_features`` output channels.

    ``lin_ftrs``: the hidden sizes ([512] by default); ``ps``: the dropout of the last
    hidden layer (the earlier ones get half of it, as in fastai), or one per layer.
    Each block is BatchNorm -> Dropout -> Linear (no bias: the next BatchNorm adds one)
    -> ReLU, except the last, which has no ReLU. Linear weights are drawn with Kaiming
    normal init (std = sqrt(2 / fan_in), right for ReLU), as fastai's apply_init does.
    """
    n_in = n_features * 2 if concat_pool else n_features
    sizes = [n_in] + list(lin_ftrs if lin_ftrs is not None else [512]) + [n_out]
    n_blocks = len(sizes) - 1
    if isinstance(ps, (list, tuple)):
        if len(ps) != n_blocks:
            raise ValueError(f"create_head: {len(ps)} dropout rates for {n_blocks} linear layers")
        ps = list(ps)
    else:
        ps = [ps / 2] * (n_blocks - 1) + [ps]
    layers = [nn.AdaptiveConcatPool2d(1) if concat_pool else nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if k > 0 or first_bn:
            layers.append(_bn1d(a))
        if ps[k]:
            layers.append(nn.Dropout(ps[k]))
        linear = nn.Linear(a, b, bias=not (k > 0 or first_bn))
        nn.init.kaiming_normal_(linear.weight)
        if linear.bias is not None:
            nn.init.zeros_(linear.bias)
        layers.append(linear)
        if k < n_blocks - 1:
            layers.append(nn.ReLU())
    if bn_final:
        layers.append(nn.BatchNorm1d(n_out, momentum=0.01))
    return nn.Sequential(*layers)


class BnFreeze(Callback):
    """fastai's BnFreeze: while training, batch norm layers whose parameters are frozen run in eval mode.

    Use with ``train_bn=False``: a frozen body then normalises with its pretrained running
    statistics, exactly as it will at validation, and they are not updated. Without it a
    frozen body in train mode normalises each batch with the batch's own statistics, and
    on a narrow data set (all photos are cats or dogs) that subtracts out much of what the
    pretrained features say: the head then learns on other features than it is validated on.
    """
    order = -5  # after TrainEvalCallback (-10) has put the whole model in train mode

    def before_train(self):
        """Put every batch norm layer whose parameters are all frozen in eval mode (running statistics)."""
        for m in self.learn.model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and not any(
                    p.requires_grad for p in m.parameters(recurse=False)):
                m.eval()


class FreezeBodyBnStats(Callback):
    """Keep the body's (``model[0]``) batch norm layers in eval mode in training, frozen or not.

    They normalise with their pretrained running statistics all along (and leave them
    unchanged); when unfrozen their scale and shift still train. This goes further than
    BnFreeze, for the phase after ``unfreeze()``: measured on the 800 cat/dog photos with
    EfficientNet-Lite0 at 128 px, letting the body's batch norms switch to batch statistics
    when unfrozen took the error rate from 2.5% after the frozen epoch up to 5.6%; the
    features the head had learned on moved under it.
    """
    order = -5

    def before_train(self):
        """Put every batch norm layer of the body (``model[0]``) in eval mode, frozen or not."""
        for m in self.learn.model[0].modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.eval()


def _arch_meta(arch):
    meta = models.model_meta.get(arch)
    if meta is None:
        raise KeyError(f"vision_learner: no model_meta for {getattr(arch, '__name__', arch)!r}; known archs: "
                       f"{', '.join(getattr(a, '__name__', str(a)) for a in models.model_meta)}")
    return meta


def create_vision_model(arch, n_out, pretrained=True, lin_ftrs=None, ps=0.5, concat_pool=True):
    """``Sequential(body, head)``: the arch's body (pretrained or not) and a new head for ``n_out`` classes.

    (fastai initialises only the head: a pretrained body keeps its weights, an untrained
    one its architecture's own initialisation.)"""
    body = models.create_body(arch, pretrained=pretrained)
    head = create_head(models.num_features_model(body), n_out, lin_ftrs=lin_ftrs, ps=ps, concat_pool=concat_pool)
    return nn.Sequential(body, head)


class VisionLearner(Learner):
    def predict(self, item):
        """Classify one image as the validation set is processed: returns (label, class index, probabilities).

        ``item``: a path or a PIL image (decoded and given the validation item transforms), or a
        uint8 (H, W, 3) array, taken as it is (already the size the model was trained at)."""
        ref = self.dls.valid or self.dls.train
        image = load_image(item) if not isinstance(item, np.ndarray) else None
        if image is not None:
            for tfm in ref.dataset.item_tfms:
                image = tfm(image, False)
            item = image_to_array(image)
        x, = ImageBatcher(ref.collate_fn.batch_tfms, train=False)([(item,)], self.dls.device)
        self.model.eval()
        with no_grad():
            probs = self.loss_func.activation(self.model(x))[0]
        index = int(probs.numpy().argmax())
        return self.dls.vocab[index], index, probs


def vision_learner(dls, arch, metrics=error_rate, pretrained=True, normalize=True, n_out=None, lin_ftrs=None,
                   ps=0.5, concat_pool=True, splitter=None, bn_momentum=0.1, **kwargs):
    """fastai's vision_learner: a Learner for ``Sequential(body of arch, new head)``.

    ``arch``: a model function known to ``minidl.vision.models.model_meta`` (resnet18,
    resnet34, efficientnet_lite0, ...). With ``pretrained`` the body starts from ImageNet
    weights, the learner starts frozen (only the head and BatchNorm train), and, when
    ``normalize`` and the loaders do not normalise yet, the arch's ImageNet statistics are
    added to them as a Normalize batch transform (a pretrained body expects its inputs
    scaled like ImageNet's). ``splitter`` defaults to the arch's split from model_meta,
    else [body, head].

    ``bn_momentum``: the body's BatchNorm layers average their running statistics with this
    momentum (None: keep the arch's). EfficientNet was trained with TensorFlow's 0.01; in a
    fine-tune of a few dozen steps its running averages would stay ~70% ImageNet's while
    training normalises with each batch's statistics, and validation (which uses the running
    ones) would see other activations than training did (measured here: pooled features
    in train and eval mode correlate at 0.25 on cat/dog photos at 128 px). At 0.1
    (PyTorch's default) they follow the new photos within ~20 steps. (Keeping the body on
    its ImageNet statistics instead, ``train_bn=False, cbs=[FreezeBodyBnStats()]``, did
    better still on the pets; see examples/pets.py.)

    Other ``kwargs`` (lr, loss_func, opt_func, cbs, path, wd, train_bn, ...) go to the Learner.
    """
    meta = _arch_meta(arch)
    n_out = n_out if n_out is not None else dls.c
    if pretrained and normalize:
        for dl in dls.loaders:
            if isinstance(dl.collate_fn, ImageBatcher) and dl.collate_fn.normalize is None:
                dl.collate_fn.add(Normalize.from_stats(*meta["stats"]))
    model = create_vision_model(arch, n_out, pretrained=pretrained, lin_ftrs=lin_ftrs, ps=ps,
                                concat_pool=concat_pool)
    if bn_momentum is not None:
        for m in model[0].modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = bn_momentum
    learn = VisionLearner(dls, model, metrics=metrics, splitter=splitter or meta.get("split", models.default_split),
                          **kwargs)
    if pretrained:
        learn.freeze()
    return learn



# ---------------------------------------------------------------- segmentation: unet_learner

def unet_split(model):
    """Two parameter groups of a DynamicUnet: the pretrained body, then the new decoder."""
    return [list(model[0].parameters()), list(model[1].parameters())]


class SegmentationLearner(VisionLearner):
    def predict(self, item):
        """Segment one photo as the validation set is processed: returns (class ids (H, W) as a numpy array,
        the same as a tensor, per-class probabilities (C, H, W))."""
        ref = self.dls.valid or self.dls.train
        image = load_image(item) if not isinstance(item, np.ndarray) else None
        if image is not None:
            for tfm in ref.dataset.item_tfms:
                image = tfm(image, False)
            item = image_to_array(image)
        x, = ImageBatcher(ref.collate_fn.batch_tfms, train=False)([(item,)], self.dls.device)
        self.model.eval()
        with no_grad():
            probs = self.loss_func.activation(self.model(x))[0]
        mask = probs.argmax(dim=0)
        return mask.numpy(), mask, probs


def unet_learner(dls, arch, pretrained=True, n_out=None, widths=(256, 128, 96, 64, 32), last_cross=True, cut=None,
                 normalize=True, loss_func=None, metrics=None, splitter=None, **kwargs):
    """fastai's unet_learner: a DynamicUnet (models/unet.py) over the body of ``arch``, for per-pixel classes.

    ``n_out`` defaults to the number of codes. The loss is cross-entropy over the class axis of
    (N, C, H, W) scores (``CrossEntropyLossFlat(axis=1)``; give ``ignore_index`` there for a void
    class). As with vision_learner: a pretrained body gets ImageNet's Normalize added to the
    loaders, and the learner starts frozen (the decoder and BatchNorm layers train). ``cut`` trims the
    body (``create_body``'s), by default ``model_meta[arch]["unet_cut"]`` where there is one."""
    from .models.unet import DynamicUnet
    meta = _arch_meta(arch)
    n_out = n_out if n_out is not None else dls.c
    if pretrained and normalize:
        for dl in dls.loaders:
            if isinstance(dl.collate_fn, ImageBatcher) and dl.collate_fn.normalize is None:
                dl.collate_fn.add(Normalize.from_stats(*meta["stats"]))
    body = models.create_body(arch, pretrained=pretrained, cut=cut if cut is not None else meta.get("unet_cut"))
    model = DynamicUnet(body, n_out, widths=widths, last_cross=last_cross)
    learn = SegmentationLearner(dls, model, loss_func=loss_func if loss_func is not None else
                                nn.CrossEntropyLossFlat(axis=1), metrics=metrics, splitter=splitter or unet_split,
                                **kwargs)
    if pretrained:
        learn.freeze()
    return learn
