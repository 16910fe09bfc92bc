# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 — Chapter 1, as the book writes it
#
# The code cells of fastbook's first chapter ("Your Deep Learning Journey"), in the book's
# order, each with one change: `fastai` becomes `minidl` in its import line. Where minidl
# differs otherwise, a one-line note (**minidl:**) says so. What trains here is minidl's own
# tensor, autograd and kernels; the notebooks 01–05 open each piece up.
#
# **Data.** `untar_data(URLs.X)` returns the folder fastai names (`oxford-iiit-pet`,
# `adult_sample`, `movie_lens_sample`, ...), looked for in `$MINIDL_DATA/<name>`, then
# `~/.minidl/data/<name>`, else downloaded from fastai's archive (checked against its md5).
# When the tests run this notebook, `$MINIDL_DATA` holds small copies (64 photos, 16 street scenes,
# 16 film reviews, 6,000 census rows, 2,000 ratings), so the numbers below are not the book's: `make demo`'s
# examples reproduce those (README, "Reproduced results").

# %% [markdown]
# ## A first model: cats or dogs?
# **minidl:** `efficientnet_lite0` where the book has `resnet34`: its ImageNet weights install with
# pip, resnet34's are downloaded from PyTorch's site (with a network, `resnet34` works as in the book).

# %%
from minidl.vision.all import *
path = untar_data(URLs.PETS)/'images'

def is_cat(x): return x[0].isupper()
dls = ImageDataLoaders.from_name_func(
    path, get_image_files(path), valid_pct=0.2, seed=42,
    label_func=is_cat, item_tfms=Resize(224))

learn = vision_learner(dls, efficientnet_lite0, metrics=error_rate)
learn.fine_tune(1)

# %% [markdown]
# The book uploads a photo of your own with a widget (`uploader = widgets.FileUpload()`); like the
# book's own test run, we hand it a file instead. **minidl:** a photo of the data set, where the book
# has `images/chapter1_cat_example.jpg`.

# %%
uploader = SimpleNamespace(data = [get_image_files(path)[0]])

# %%
img = PILImage.create(uploader.data[0])
is_cat,_,probs = learn.predict(img)
print(f"Is this a cat?: {is_cat}.")
print(f"Probability it's a cat: {probs[1].item():.6f}")

# %% [markdown]
# ## Deep learning is not just for image classification
# Segmentation: a class for every pixel of a street scene. **minidl:** `efficientnet_lite0` where
# the book has `resnet34`, as above.

# %%
path = untar_data(URLs.CAMVID_TINY)
dls = SegmentationDataLoaders.from_label_func(
    path, bs=8, fnames = get_image_files(path/"images"),
    label_func = lambda o: path/'labels'/f'{o.stem}_P{o.suffix}',
    codes = np.loadtxt(path/'codes.txt', dtype=str)
)

learn = unet_learner(dls, efficientnet_lite0)
learn.fine_tune(8)

# %%
learn.show_results(max_n=6, figsize=(7,8))

# %% [markdown]
# ![results](results.png)
#
# Text: did the reviewer like the film? An AWD-LSTM reads IMDb's reviews (`train/` and `test/`, each with
# `pos/` and `neg/` folders of `.txt` files). **minidl:** the same; `text_classifier_learner` starts, as
# fastai's does, from the AWD-LSTM fastai trained on Wikipedia (WikiText-103), downloaded once into
# `~/.minidl/models/wt103-fwd`; offline without those files it says so loudly and trains from random
# weights, which learn little from a few reviews. `examples/imdb.py` adds the rest of ULMFiT: a
# language model fine-tuned on the reviews first.

# %%
from minidl.text.all import *

dls = TextDataLoaders.from_folder(untar_data(URLs.IMDB), valid='test')
learn = text_classifier_learner(dls, AWD_LSTM, drop_mult=0.5, metrics=accuracy)
learn.fine_tune(4, 1e-2)

# %%
learn.predict("I really liked that movie!")

# %% [markdown]
# Tabular data: will this person earn more than $50,000 a year?

# %%
from minidl.tabular.all import *
path = untar_data(URLs.ADULT_SAMPLE)

dls = TabularDataLoaders.from_csv(path/'adult.csv', path=path, y_names="salary",
    cat_names = ['workclass', 'education', 'marital-status', 'occupation',
                 'relationship', 'race'],
    cont_names = ['age', 'fnlwgt', 'education-num'],
    procs = [Categorify, FillMissing, Normalize])

learn = tabular_learner(dls, metrics=accuracy)

# %%
learn.fit_one_cycle(3)

# %% [markdown]
# A recommender: which rating would this user give this movie?

# %%
from minidl.collab import *
path = untar_data(URLs.ML_SAMPLE)
dls = CollabDataLoaders.from_csv(path/'ratings.csv')
learn = collab_learner(dls, y_range=(0.5,5.5))
learn.fine_tune(10)

# %%
learn.show_results()
