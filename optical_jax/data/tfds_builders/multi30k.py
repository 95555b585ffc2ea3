"""`optical_multi30k`: Multi30k caption bitext and caption -> caption retrieval.

The multi30k-dataset repository (github.com/multi30k/dataset) has the raw
captions of task 1 (translations of the English captions) one per line, line i
of every language describing the same image:

    data/task1/raw/{split}.{lang}.gz     e.g. train.en.gz, val.de.gz, test_2016_flickr.cs.gz

for split in train, val, test_2016_flickr, test_2017_flickr, test_2017_mscoco,
test_2018_flickr and lang in en, de, fr, cs (not every split has every
language). Gunzipped files (`train.en`) are read the same way.

One `BuilderConfig` per ordered language pair, `{a}-{b}` (query language a,
document language b, e.g. `en-de`); a split is made for each split whose two
files are there (a split with only one side is logged and left out; none at
all is an error). Features: `src` (language a), `tgt` (language b), `origin`
(`file:line` of the a side) and `line` (0-based line index, the image).

`multi30k_collection(a, b, split)`: queries `{a}-{line}` (captions in a),
documents `{b}-{line}` (the captions in b of the same split), relevant = the
same line. Identical captions of different images stay separate documents.
"""
from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import tensorflow_datasets as tfds

from optical_jax.data import collection as collection_lib
from optical_jax.data.tfds_builders import _base
from optical_jax.data.tfds_builders import loading

log = logging.getLogger(__name__)

LANGUAGES = ("en", "de", "fr", "cs")
SPLITS = ("train", "val", "test_2016_flickr", "test_2017_flickr", "test_2017_mscoco",
          "test_2018_flickr")
RAW_DIR = "data/task1/raw"


@dataclasses.dataclass(eq=False)
class Multi30kConfig(tfds.core.BuilderConfig):
  query_lang: str = "en"
  doc_lang: str = "de"


class OpticalMulti30k(_base.OpticalBuilder):
  """Line-aligned Multi30k captions in two languages."""

  name = "optical_multi30k"
  VERSION = tfds.core.Version("1.0.0")
  HOMEPAGE = "https://github.com/multi30k/dataset"
  BUILDER_CONFIGS = [
      Multi30kConfig(name=f"{a}-{b}", query_lang=a, doc_lang=b,
                     description=f"captions in {a} -> captions in {b}")
      for a in LANGUAGES for b in LANGUAGES if a != b
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Put the raw task-1 captions of the multi30k-dataset repository in manual_dir,
keeping the repository's layout (gzipped or not):
  <manual_dir>/{RAW_DIR}/{{split}}.{{lang}}.gz    e.g. train.en.gz, train.de.gz, val.en.gz
for both languages of the config '{{a}}-{{b}}', split in {', '.join(SPLITS)}.
A manual_dir holding the files directly (<manual_dir>/train.en) works too.
"""

  def _features(self):
    return {"src": tfds.features.Text(), "tgt": tfds.features.Text(),
            "origin": tfds.features.Text(), "line": tfds.features.Scalar(dtype=np.int32)}

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    root = self.manual_root(dl_manager)
    roots = [root / RAW_DIR, root]
    splits = {}
    for split in SPLITS:
      files = [_base.find_file(roots, f"{split}.{lang}.gz")
               for lang in (cfg.query_lang, cfg.doc_lang)]
      if all(files):
        splits[split] = files
      elif any(files):
        lang = cfg.doc_lang if files[0] else cfg.query_lang
        log.warning("multi30k %s: %s is there but not %s.%s: split left out", cfg.name,
                    files[0] or files[1], split, lang)
    if not splits:  # name what is missing of the splits every language has
      missing = [f"{RAW_DIR}/{s}.{lang}.gz" for s in SPLITS[:3]
                 for lang in (cfg.query_lang, cfg.doc_lang)
                 if not _base.find_file(roots, f"{s}.{lang}.gz")]
      raise self.missing_files_error(root, missing, "(no split has the files of both "
                                                    "languages)\n")
    return {split: self._generate_examples(*files) for split, files in splits.items()}

  def _generate_examples(self, src_path, tgt_path):
    src, tgt = _base.read_lines(src_path), _base.read_lines(tgt_path)
    if len(src) != len(tgt):
      raise _base.DataError(f"caption files differ in length: {os.fspath(src_path)} has "
                            f"{len(src)} lines, {os.fspath(tgt_path)} has {len(tgt)}")
    if not src:
      raise _base.DataError(f"no captions in {os.fspath(src_path)}")
    for i, (a, b) in enumerate(zip(src, tgt)):
      a, b = a.strip(), b.strip()
      if not a or not b:
        raise _base.DataError(f"{os.fspath(src_path if not a else tgt_path)}:{i + 1}: "
                              f"empty caption")
      yield i, {"src": a, "tgt": b, "origin": f"{os.fspath(src_path)}:{i + 1}", "line": i}


def multi30k_collection(query_lang: str, doc_lang: str, split: str = "test_2016_flickr",
                        data_dir=None, manual_dir=None) -> collection_lib.EvalCollection:
  """Captions in `query_lang` -> the captions in `doc_lang` of the same split."""
  source = loading.load("multi30k", f"{query_lang}-{doc_lang}", data_dir, manual_dir,
                              split)
  queries, docs, qrels = {}, {}, {}
  for ex in source:
    line = int(ex["line"])
    qid, docid = f"{query_lang}-{line:05d}", f"{doc_lang}-{line:05d}"
    queries[qid], docs[docid] = _base.text(ex["src"]), _base.text(ex["tgt"])
    qrels[qid] = {docid: 1}
  return collection_lib.EvalCollection(queries=queries, docs=docs, qrels=qrels)
