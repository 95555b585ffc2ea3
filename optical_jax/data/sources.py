"""What a job trains and evaluates on, as the config names it.

`load(config)` returns the bitext (source-language texts, English texts) and
the evaluation collection (queries, documents, qrels), from the embedded Bible
(`data.source='bible'`) or from the user's files (`data.source='files'`).
"""
from __future__ import annotations

import logging

import ml_collections

from optical_jax import config as config_lib
from optical_jax.data import batching
from optical_jax.data import bible
from optical_jax.data import bible_triples
from optical_jax.data import bitext
from optical_jax.data import codeswitch
from optical_jax.data import collection as collection_lib
from optical_jax.data import layouts
from optical_jax.data import triples as triples_lib
from optical_jax.data import wordalign

log = logging.getLogger(__name__)

Collection = collection_lib.EvalCollection


def subsample(col: Collection, max_queries: int, max_docs: int) -> Collection:
  """The first `max_queries` queries; their judged documents plus other
  documents up to `max_docs` (0 = no limit). For quick runs and tests."""
  queries = list(col.queries)[:max_queries or None]
  qrels = {q: col.qrels[q] for q in queries if q in col.qrels}
  docs = list(col.docs)
  if max_docs and max_docs < len(docs):
    judged = {d for rels in qrels.values() for d in rels if d in col.docs}
    others = set([d for d in docs if d not in judged][:max(max_docs - len(judged), 0)])
    docs = [d for d in docs if d in judged or d in others]
  return collection_lib.EvalCollection(
      queries={q: col.queries[q] for q in queries}, docs={d: col.docs[d] for d in docs},
      qrels=qrels)


def load(config: ml_collections.ConfigDict, *, need_train_data: bool = True,
         with_order: bool = False, report: dict | None = None):
  """(source texts, English texts, evaluation collection or None), and with
  `with_order` the training order: a `BatchOrder`, or for `data.source='mix'`
  a `layouts.MixedOrder` (whose realised mix is its `report`).

  `report`, when given, receives what the job's results should show beside its
  metrics: 'train' ({pairs, skipped lines per reason, duplicate pairs}) and
  'eval' (`collection.check_collection`'s counts).

  Raises:
    ConfigError: a batch larger than the training pairs (a pair would be its
      own in-batch negative).
    ValueError: no training pairs, or an evaluation collection whose metrics
      cannot mean anything (see `collection.check_collection`).
  """
  report = {} if report is None else report
  d, e = config.data, config.eval
  src: list[str] = []
  tgt: list[str] = []
  col = None
  order = None
  if d.source == "bible" or (e.collection == "bible" and not e.languages):
    pairs = bible.load_bible_pairs(d.language)
    train_pairs, bible_col = bible.split_bible(pairs, tuple(d.heldout_books), d.language)
    if d.source == "bible":
      src, tgt = [p.src for p in train_pairs], [p.en for p in train_pairs]
    if e.collection == "bible":
      col = bible_col
  if d.source == "files" and need_train_data:
    pairs = bitext.read_bitext(bitext.BitextSpec(
        format=d.format, path=d.path, src_path=d.src_path, tgt_path=d.tgt_path,
        src_column=d.src_column, tgt_column=d.tgt_column, num_columns=d.num_columns or None,
        src_key=d.src_key,
        tgt_key=d.tgt_key, has_header=d.has_header, on_bad_line=d.on_bad_line))
    src, tgt = [p.src for p in pairs], [p.tgt for p in pairs]
    report["train"] = {"skipped": dict(pairs.skipped)}
  if d.source == "mix" and need_train_data:
    src, tgt, sizes, mixer, mix_report = layouts.mixed_bitext(config)
    order = layouts.MixedOrder(mixer, sizes, config.train.batch_size, mix_report)
  elif d.max_pairs:
    src, tgt = src[:d.max_pairs], tgt[:d.max_pairs]
  if e.collection == "files":
    col = collection_lib.read_collection(e.queries, e.corpus, e.qrels)
  if col is not None:
    col = subsample(col, e.max_queries, e.max_docs)
  if e.collection == "bible" and e.languages:   # several Bibles against one English corpus
    col = bible.multilingual_collection(
        e.languages, tuple(d.heldout_books),
        subsample=lambda c: subsample(c, e.max_queries, 0))
    col = subsample(col, 0, e.max_docs)
  if e.collection in layouts.LAYOUTS:
    col = layouts.eval_collection(e, subsample, d.tfds_dir)
  if col is not None:
    report["eval"] = collection_lib.check_collection(col)
  if need_train_data:
    if not src:
      raise ValueError("no training pairs: check config.data")
    if config.train.batch_size > len(src):
      raise config_lib.ConfigError(
          f"config.train.batch_size={config.train.batch_size} is more than the {len(src)} "
          "training pairs: a batch would hold a pair twice, its own in-batch negative")
    duplicates = len(src) - len(set(zip(src, tgt)))
    if duplicates:
      log.warning("%d of %d training pairs are exact duplicates of another (a batch that "
                  "holds both makes one the other's negative)", duplicates, len(src))
    report.setdefault("train", {}).update(pairs=len(src), duplicate_pairs=duplicates)
    log.info("%d training pairs; evaluation: %s", len(src),
             f"{len(col.queries)} queries x {len(col.docs)} documents" if col else "none")
    if order is None:
      order = batching.BatchOrder(len(src), config.train.batch_size, config.seed)
  return (src, tgt, col, order) if with_order else (src, tgt, col)


def codeswitcher(config: ml_collections.ConfigDict, src: list[str],
                 tgt: list[str]) -> codeswitch.CodeSwitcher | None:
  """The configured code-switching, or None when `data.codeswitch_rate` is 0.

  The dictionary is `data.codeswitch_dictionary`, or induced from (the first
  `data.codeswitch_induce_pairs` of) the training bitext with the Dice aligner.
  """
  d = config.data
  if not d.codeswitch_rate:
    return None
  if d.codeswitch_dictionary:
    dictionary = codeswitch.read_dictionary(d.codeswitch_dictionary,
                                            on_bad_line=d.on_bad_line)
  else:
    n = d.codeswitch_induce_pairs or len(src)
    pairs = [bitext.Pair(s, t, f"train:{i}") for i, (s, t) in enumerate(zip(src[:n], tgt[:n]))]
    dictionary = wordalign.induce_dictionary(pairs, wordalign.DiceAligner())
    log.info("induced a %d-word dictionary from %d pairs", len(dictionary), len(pairs))
  switcher = codeswitch.CodeSwitcher(dictionary, d.codeswitch_rate, seed=config.seed)
  stats = switcher.corpus_stats(src[:2000])
  log.info("code-switching: rate %.3f of eligible words (%.3f of all words) on a sample",
           stats.rate, stats.word_rate)
  return switcher


def load_triples(config: ml_collections.ConfigDict, *, need_train_data: bool = True
                 ) -> tuple[list[triples_lib.Triple], collection_lib.EvalCollection | None]:
  """The training triples (none without `need_train_data`) and the evaluation
  collection (or None) the config names.

  Raises:
    bitext.BitextError: a bad triples line (`file:line: why`) with
      `teacher.on_bad_line='error'`.
  """
  tc, e = config.teacher, config.eval
  train, col = [], None
  if tc.source == "bible" or e.collection == "bible":
    bible_train, bible_col = bible_triples.load(tuple(config.data.heldout_books),
                                                tc.query_words)
    train = bible_train if tc.source == "bible" else train
    col = bible_col if e.collection == "bible" else None
  if tc.source == "files" and need_train_data:
    train = (triples_lib.read_text_triples(tc.triples, on_bad_line=tc.on_bad_line)
             if tc.format == "text" else
             triples_lib.read_id_triples(tc.triples, tc.queries, tc.corpus,
                                         on_bad_line=tc.on_bad_line))
  if e.collection == "files":
    col = collection_lib.read_collection(e.queries, e.corpus, e.qrels)
  train = train[:tc.max_pairs or None] if need_train_data else []
  if need_train_data and not train:
    raise ValueError("no training triples: check config.teacher")
  if col is not None:
    col = subsample(col, e.max_queries, e.max_docs)
  log.info("%d training triples; evaluation: %s", len(train),
           f"{len(col.queries)} queries x {len(col.docs)} documents" if col else "none")
  return train, col
