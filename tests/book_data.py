"""Small copies of the data sets the book's chapter-1 cells open, in fastai's folders.

``make_book_data(root)`` lays out what ``untar_data`` looks for under ``$MINIDL_DATA``:
``oxford-iiit-pet/images/*.jpg``, ``camvid_tiny/{images,labels,codes.txt}``, ``imdb/{train,test}/{pos,neg}/*.txt``,
``adult_sample/adult.csv`` and ``movie_lens_sample/ratings.csv``,
made from ``../shared/data`` when it is there (real photos, reviews, census rows and ratings) and made up
otherwise (a user's fresh clone), so the chapter's code runs in seconds either way.
"""
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from minidl.collab import synthetic_ratings
from minidl.tabular import synthetic_adult

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_book_data(root, shared=SHARED_DATA, n_photos=64):
    root = Path(root)
    _pets(root / "oxford-iiit-pet" / "images", shared, n_photos)
    _camvid_tiny(root / "camvid_tiny", shared)
    _imdb(root / "imdb", shared)
    _adult(root / "adult_sample", shared)
    _ratings(root / "movie_lens_sample", shared)
    return root


def _pets(folder, shared, n):
    """Oxford-IIIT Pet's naming (a capitalised breed is a cat): the real sample, topped up with cat.N /
    dog.N photos renamed Cat_N / dog_N; without shared data, striped discs (see examples/pets.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    oxford, cats_dogs = shared / "oxford_pets_sample", shared / "cats_dogs"
    if oxford.is_dir() and cats_dogs.is_dir():
        photos = sorted(oxford.glob("*.jpg"))
        for p in photos:
            shutil.copy(p, folder / p.name)
        k = (n - len(photos) + 1) // 2
        for label in ("cat", "dog"):
            for p in sorted(cats_dogs.glob(f"{label}.*.jpg"))[:k]:
                shutil.copy(p, folder / p.name.replace(".", "_", 1).replace("cat", "Cat"))
        return
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:96]
    for k in range(n // 2):
        for name, colour, across in ((f"Cat_{k}", (235, 120, 30), yy), (f"dog_{k}", (40, 80, 230), xx)):
            disc = ((yy - 48) ** 2 + (xx - 48) ** 2 < 30 ** 2) & ((across // 8) % 2 == 0)
            pixels = rng.normal(128, 20, (96, 96, 3))
            pixels[disc] = colour
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{name}.jpg")


def _camvid_tiny(folder, shared, n=16, size=(64, 48)):
    """fastai's camvid_tiny layout, small: images/X.png, labels/X_P.png (32 class ids), codes.txt; the shared
    scenes shrunk to ``size`` (masks by nearest), else made-up scenes (a sky, a road, a car)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(exist_ok=True)
    source = shared / "camvid_tiny"
    if source.is_dir():
        shutil.copy(source / "codes.txt", folder / "codes.txt")
        for image in sorted((source / "images").glob("*.png"))[:n]:
            Image.open(image).resize(size, Image.BILINEAR).save(folder / "images" / image.name)
            label = source / "labels" / f"{image.stem}_P.png"
            Image.open(label).resize(size, Image.NEAREST).save(folder / "labels" / label.name)
        return
    (folder / "codes.txt").write_text("".join(f"class{k}\n" for k in range(32)))
    rng = np.random.default_rng(1)
    w, h = size
    colours = rng.uniform(0, 255, (32, 3))
    for k in range(n):
        ids = np.full((h, w), 21, np.uint8)                      # sky
        ids[h // 2:] = 17                                        # road
        top, left = rng.integers(h // 3, h // 2), rng.integers(0, w - 16)
        ids[top:top + 10, left:left + 16] = 5                    # a car
        pixels = colours[ids] + rng.normal(0, 10, (h, w, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / "images" / f"scene{k}.png")
        Image.fromarray(ids).save(folder / "labels" / f"scene{k}_P.png")


def _imdb(folder, shared, n=4):
    """fastai's IMDb layout, small: {train,test}/{pos,neg}/<k>.txt, ``n`` reviews in each folder: the shortest
    of the shared reviews.csv (review,sentiment), so that the book's full-size AWD-LSTM reads them in
    seconds; without it, made-up reviews."""
    source = shared / "imdb_reviews" / "reviews.csv"
    if source.is_file():
        df = pd.read_csv(source)
        df = df.loc[df.review.str.len().sort_values(kind="stable").index]
        reviews = {label: list(df.review[df.sentiment == sentiment][:2 * n])
                   for label, sentiment in (("pos", "positive"), ("neg", "negative"))}
    else:
        rng = np.random.default_rng(2)
        filler = "the film was a story about some people and its ending with the cast".split()
        words = {"pos": "wonderful great superb moving brilliant".split(),
                 "neg": "awful boring dull poor terrible".split()}
        reviews = {label: [" ".join(rng.choice(filler, 8)) + " " + " ".join(rng.choice(words[label], 3)) + "."
                           for _ in range(2 * n)] for label in words}
    for label, texts in reviews.items():
        for split, part in (("train", texts[0::2]), ("test", texts[1::2])):
            (folder / split / label).mkdir(parents=True, exist_ok=True)
            for k, text in enumerate(part):
                (folder / split / label / f"{k}.txt").write_text(text, encoding="utf-8")


def _adult(folder, shared, n=6000):
    """fastai's adult.csv: a header, ", " between fields, salary as " >=50k" / " <50k"."""
    folder.mkdir(parents=True, exist_ok=True)
    source = shared / "adult" / "adult.csv"
    if source.is_file():
        with open(source) as f:
            lines = [next(f) for _ in range(n + 1)]
        (folder / "adult.csv").write_text("".join(lines))
        return
    df = synthetic_adult(n)
    rows = [", ".join(map(str, row)) for row in df.itertuples(index=False)]
    (folder / "adult.csv").write_text(",".join(df.columns) + "\n" + "\n".join(rows) + "\n")


def _ratings(folder, shared, n_users=60, n_items=60):
    """fastai's movie_lens_sample: userId, movieId, rating, timestamp of the most active users and movies."""
    folder.mkdir(parents=True, exist_ok=True)
    source = shared / "ml-latest-small" / "ratings.csv"
    if source.is_file():
        r = pd.read_csv(source)
        r = r[r.userId.isin(r.userId.value_counts().index[:n_users]) &
              r.movieId.isin(r.movieId.value_counts().index[:n_items])]
    else:
        s = synthetic_ratings(n_users, n_items, density=0.6)
        r = pd.DataFrame({"userId": s.user, "movieId": s.title.str.split().str[1].astype(int),
                          "rating": s.rating, "timestamp": 964982703})
    r.to_csv(folder / "ratings.csv", index=False)
