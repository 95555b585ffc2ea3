"""Benchmark layouts as job inputs: per-language collections and mixed bitext.

Evaluation (`eval.collection` = miracl | mlqa | multi30k, over `eval.languages`):
each language's collection comes from its TFDS builder (prepared from
`eval.manual_dir` into `data.tfds_dir`), and they are merged into one
`EvalCollection` whose ids carry the language, `sw/q17`, `sw/d3`. The
evaluator searches each language's queries among that language's documents
only (`language_of`), and reports every metric overall (all queries) and per
language (`nDCG@10/sw`).

  miracl     queries and corpus in the language (MIRACL `eval.split`, dev)
  mlqa       questions in the language -> contexts in `eval.doc_language`
  multi30k   captions in the language -> captions in `eval.doc_language`

Distillation data (`data.source='mix'`): `data.mix_sources` names each
language's bitext, `lang:kind[:location]`:

  ny:bible                 a Bible aligned with the KJV (training books): ny (the
                           embedded Chichewa), sw, hi, bn, tl, fr, de, es
  sw:bitext:DIR            the TFDS bitext builder on DIR/{train}.{data.format}
  de:multi30k:DIR          Multi30k's train captions, de-en, from DIR

and `mixing.LanguageMixer` draws each example's language: by `data.mix_ratio`
('high:low' between `data.mix_high` and the other languages) or else by
`data.mix_temperature` over the languages' sizes.
"""
from __future__ import annotations

import logging
import os
import pathlib
from typing import Mapping

import ml_collections
import numpy as np

from optical_jax.data import bible
from optical_jax.data import collection as collection_lib
from optical_jax.data import mixing
from optical_jax.data.tfds_builders import _base
from optical_jax.data.tfds_builders import bitext as bitext_builder
from optical_jax.data.tfds_builders import loading
from optical_jax.data.tfds_builders import miracl
from optical_jax.data.tfds_builders import mlqa
from optical_jax.data.tfds_builders import multi30k

log = logging.getLogger(__name__)

LAYOUTS = ("miracl", "mlqa", "multi30k")
# Tiny files in the published layouts (MIRACL, MLQA, Multi30k, MTOP, bitext), shipped
# with the package: what the smoke experiments and the tests read.
SAMPLES = pathlib.Path(__file__).resolve().parent / "samples"
SOURCE_KINDS = ("bible", "bitext", "multi30k")
_SEP = "/"


def language_of(item_id: str) -> str:
  """'sw/q17' -> 'sw'."""
  return item_id.split(_SEP, 1)[0]


def merge(per_language: Mapping[str, collection_lib.EvalCollection]
          ) -> collection_lib.EvalCollection:
  """One collection with `lang/`-prefixed query and document ids."""
  queries, docs, qrels = {}, {}, {}
  for lang, col in per_language.items():
    queries.update({f"{lang}{_SEP}{q}": t for q, t in col.queries.items()})
    docs.update({f"{lang}{_SEP}{d}": t for d, t in col.docs.items()})
    qrels.update({f"{lang}{_SEP}{q}": {f"{lang}{_SEP}{d}": g for d, g in judged.items()}
                  for q, judged in col.qrels.items()})
  return collection_lib.EvalCollection(queries=queries, docs=docs, qrels=qrels)


def qrels_by_language(qrels: Mapping[str, Mapping[str, int]]
                      ) -> dict[str, dict[str, Mapping[str, int]]]:
  """{lang: the qrels of its queries}, sorted by language, when every query id is
  `lang/id` (as `merge` writes them) and there are two or more languages; else {}."""
  langs: dict[str, dict[str, Mapping[str, int]]] = {}
  for qid, rels in qrels.items():
    lang, sep, rest = qid.partition(_SEP)
    if not (sep and lang and rest):
      return {}
    langs.setdefault(lang, {})[qid] = rels
  return dict(sorted(langs.items())) if len(langs) > 1 else {}


def _dir(path: str) -> str | None:
  return os.path.expanduser(path) if path else None


def language_collection(e: ml_collections.ConfigDict, lang: str, tfds_dir: str = ""
                        ) -> collection_lib.EvalCollection:
  """`eval.collection`'s collection for one language (prepared if needed)."""
  kw = dict(data_dir=_dir(tfds_dir), manual_dir=_dir(e.manual_dir))
  if e.collection == "miracl":
    return miracl.miracl_collection(lang, e.split or "dev", **kw)
  if e.collection == "mlqa":
    return mlqa.mlqa_collection(lang, e.doc_language, e.split or "test", **kw)
  if e.collection == "multi30k":
    return multi30k.multi30k_collection(lang, e.doc_language, e.split or "test_2016_flickr", **kw)
  raise ValueError(f"eval.collection={e.collection!r} is not a benchmark layout {LAYOUTS}")


def eval_collection(e: ml_collections.ConfigDict, subsample, tfds_dir: str = ""
                    ) -> collection_lib.EvalCollection:
  """The merged collection of `eval.languages`, each subsampled by `subsample`."""
  if not e.languages:
    raise ValueError(f"config.eval.languages is empty: eval.collection={e.collection!r} "
                     "evaluates per language")
  per_language = {}
  for lang in e.languages:
    col = subsample(language_collection(e, lang, tfds_dir), e.max_queries, e.max_docs)
    log.info("eval %s %s: %d queries x %d documents", e.collection, lang, len(col.queries),
             len(col.docs))
    per_language[lang] = col
  return merge(per_language)


def _parse_source(spec: str) -> tuple[str, str, str]:
  parts = spec.split(":", 2)
  if len(parts) < 2 or parts[1] not in SOURCE_KINDS or (parts[1] != "bible") != (len(parts) == 3):
    raise ValueError(f"config.data.mix_sources entry {spec!r}: expected 'lang:bible', "
                     "'lang:bitext:DIR' or 'lang:multi30k:DIR'")
  return parts[0], parts[1], parts[2] if len(parts) == 3 else ""


def _pairs(config: ml_collections.ConfigDict, lang: str, kind: str, location: str
           ) -> tuple[list[str], list[str]]:
  d = config.data
  if kind == "bible":
    # The language's Bible (data/bible.py LANGUAGES), its training books.
    train, _ = bible.split_bible(bible.load_bible_pairs(lang), tuple(d.heldout_books), lang)
    return [p.src for p in train], [p.en for p in train]
  data_dir = _dir(d.tfds_dir)
  if kind == "bitext":
    builder_config = bitext_builder.BitextConfig(
        name=f"{d.format}-{lang}", format=d.format, src_column=d.src_column,
        tgt_column=d.tgt_column, has_header=d.has_header, src_key=d.src_key,
        tgt_key=d.tgt_key, on_bad_line=d.on_bad_line)
    source = loading.load("bitext", builder_config, data_dir,
                                os.path.expanduser(location), "train")
  else:
    source = loading.load("multi30k", f"{lang}-en", data_dir,
                                os.path.expanduser(location), "train")
  src, tgt = [], []
  for ex in source:
    src.append(_base.text(ex["src"]))
    tgt.append(_base.text(ex["tgt"]))
  return src, tgt


class MixedOrder:
  """`batching.BatchOrder`'s interface over a `LanguageMixer`: indices into the
  languages' pairs concatenated in `langs` order.

  Attributes:
    report: the realised mix over the run (`LanguageMixer.realised_mix`).
  """

  def __init__(self, mixer: mixing.LanguageMixer, sizes: Mapping[str, int], batch_size: int,
               report: mixing.MixReport):
    self.mixer, self.batch_size, self.report = mixer, batch_size, report
    starts = np.cumsum([0] + [sizes[l] for l in mixer.langs])
    self.offset = dict(zip(mixer.langs, starts[:-1].tolist()))

  def indices(self, step: int, process_index: int = 0, process_count: int = 1) -> np.ndarray:
    return np.asarray([self.offset[l] + i for l, i in self.mixer.indices(
        step, self.batch_size, process_index, process_count)], np.int64)

  def position(self, step: int) -> dict:
    return self.mixer.position(step, self.batch_size)


def mixed_bitext(config: ml_collections.ConfigDict
                 ) -> tuple[list[str], list[str], dict[str, int], mixing.LanguageMixer,
                            mixing.MixReport]:
  """(source texts, English texts, {lang: pairs}, the mixer, its realised mix over
  the run) of `data.mix_sources`, concatenated in the order they are listed."""
  d = config.data
  if not d.mix_sources:
    raise ValueError("config.data.source='mix' needs config.data.mix_sources")
  src, tgt, sizes = [], [], {}
  for spec in d.mix_sources:
    lang, kind, location = _parse_source(spec)
    if lang in sizes:
      raise ValueError(f"config.data.mix_sources names {lang!r} twice")
    s, t = _pairs(config, lang, kind, location)
    if d.max_pairs:
      s, t = s[:d.max_pairs], t[:d.max_pairs]
    sizes[lang] = len(s)
    src += s
    tgt += t
  langs = list(sizes)
  unknown = [l for l in d.mix_high if l not in sizes]
  if unknown:
    raise ValueError(f"config.data.mix_high names {unknown}, not in data.mix_sources {langs}")
  try:
    if d.mix_ratio:
      mixer = mixing.LanguageMixer(sizes, high_low=mixing.HighLow(
          high=tuple(d.mix_high), low=tuple(l for l in langs if l not in d.mix_high),
          ratio=d.mix_ratio), seed=config.seed, block_size=d.mix_block)
    else:
      mixer = mixing.LanguageMixer(sizes, temperature=d.mix_temperature, seed=config.seed,
                                   block_size=d.mix_block)
  except ValueError as e:
    raise ValueError(f"config.data.mix_*: {e}") from None
  report = mixer.realised_mix(config.train.steps, config.train.batch_size)
  return src, tgt, sizes, mixer, report
