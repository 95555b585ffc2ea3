"""A model's retrieval run on a collection, scored: the evaluators jobs call.

`RetrievalEvaluator` is distillation's: documents are encoded once by the
frozen teacher (the matching knowledge the student reuses), queries by
whichever query encoder is evaluated. `ModelEvaluator` is the teacher job's:
the evaluated model encodes both sides, dense or late-interaction scored.
Both write `eval/NAME.run` (TREC) and `eval/NAME.json` (metrics) on process 0.
"""
from __future__ import annotations

import functools
import os
import pathlib

import jax
import ml_collections
import numpy as np

from optical_jax.data import layouts
from optical_jax.data import trec
from optical_jax.data.collection import EvalCollection
from optical_jax.evaluation import metrics as metrics_lib
from optical_jax.models import heads as heads_lib
from optical_jax.models import tokenizer as tokenizer_lib
from optical_jax.search import encode as encode_lib
from optical_jax.search import late_interaction
from optical_jax.search import topk as topk_lib


# The per-language columns that are means of language means, not of queries:
# 'nDCG@10/high', '/low' and their difference '/gap' (see `RetrievalEvaluator`).
LANGUAGE_AGGREGATES = ("high", "low", "gap")


def _spread(vecs: np.ndarray) -> float:
  """The collapse diagnostic: mean cosine between the vectors of different
  queries (the first 1000), NaN for fewer than two."""
  sample = vecs[:1000]
  if len(sample) < 2:
    return float("nan")
  sims = sample @ sample.T
  return float(sims[~np.eye(len(sample), dtype=bool)].mean())


class RetrievalEvaluator:
  """Scores query encoders on one collection; the document side is encoded once.

  Documents are encoded by the frozen teacher (the matching knowledge the
  student reuses), queries by whichever model is evaluated.
  """

  def __init__(self, config: ml_collections.ConfigDict, collection: EvalCollection,
               teacher: heads_lib.TextModel, tokenizer: tokenizer_lib.Tokenizer,
               workdir: pathlib.Path):
    """Encodes the documents of `collection` with `teacher` (or reads them from
    `eval.cache_dir`); results go to `workdir/eval`."""
    cfg = config
    self.cfg, self.collection, self.tokenizer = cfg, collection, tokenizer
    self.out = workdir / "eval"
    self.out.mkdir(parents=True, exist_ok=True)
    self.docids = list(self.collection.docs)
    self.qids = list(self.collection.queries)
    # Benchmark layouts: each language's queries search its own documents.
    self.groups = None
    if cfg.eval.collection in layouts.LAYOUTS:
      q_lang = np.asarray([layouts.language_of(q) for q in self.qids])
      d_lang = np.asarray([layouts.language_of(d) for d in self.docids])
      self.groups = {lang: (np.flatnonzero(q_lang == lang), np.flatnonzero(d_lang == lang))
                     for lang in cfg.eval.languages}
    encode = (functools.partial(encode_lib.encode_texts_cached,
                                os.path.expanduser(cfg.eval.cache_dir))
              if cfg.eval.cache_dir else encode_lib.encode_texts)
    self.doc_vecs = encode(
        teacher, self.tokenizer, [self.collection.docs[d] for d in self.docids],
        prefix=cfg.text.doc_prefix, batch_size=cfg.eval.batch_size,
        max_length=cfg.eval.max_length, desc="documents", progress=cfg.train.progress)

  def __call__(self, query_model: heads_lib.TextModel, name: str, *,
               queries: dict[str, str] | None = None) -> dict[str, float]:
    """Metrics of `query_model` on the collection's queries (or on `queries`,
    the same qids with other texts: their translations); writes eval/NAME.*"""
    cfg = self.cfg
    queries = queries or self.collection.queries
    q_vecs = encode_lib.encode_texts(
        query_model, self.tokenizer, [queries[q] for q in self.qids],
        prefix=cfg.text.query_prefix, batch_size=cfg.eval.batch_size,
        max_length=cfg.eval.max_length, desc=f"queries ({name})", progress=cfg.train.progress)
    groups = self.groups or {"": (np.arange(len(self.qids)), np.arange(len(self.docids)))}
    run = {}
    for qi, di in groups.values():
      k = min(cfg.eval.k, len(di))
      scores, idx = topk_lib.topk(q_vecs[qi], self.doc_vecs[di], k, similarity="dot")
      run.update(topk_lib.to_run(scores, idx, [self.qids[i] for i in qi],
                                  [self.docids[j] for j in di]))
    result = metrics_lib.evaluate(self.collection.qrels, run, cfg.eval.metrics)
    if jax.process_index() == 0:   # every host computes the same; one writes
      trec.write_run(self.out / f"{name}.run", run, tag=name)
      metrics_lib.write_metrics(self.out / f"{name}.json", result)
    metrics = dict(result.aggregate, query_spread_cos=_spread(q_vecs))
    # Per language (benchmark layouts, or several Bibles against one corpus):
    # the mean over its judged queries, and its queries' spread.
    languages = tuple(cfg.eval.languages) if (self.groups or "/" in self.qids[0]) else ()
    for lang in languages:
      mine = np.asarray([layouts.language_of(q) == lang for q in self.qids])
      metrics[f"query_spread_cos/{lang}"] = _spread(q_vecs[mine])
      for m in cfg.eval.metrics:
        values = [v for q, v in result.per_query[m].items() if layouts.language_of(q) == lang]
        metrics[f"{m}/{lang}"] = float(np.mean(values)) if values else float("nan")
    high = [l for l in cfg.eval.languages if l in cfg.eval.high_languages]
    low = [l for l in cfg.eval.languages if l not in cfg.eval.high_languages and (
        not cfg.eval.low_languages or l in cfg.eval.low_languages)]
    if languages and high and low:   # the high- vs low-resource gap, by language means
      for m in cfg.eval.metrics:
        metrics[f"{m}/high"] = float(np.mean([metrics[f"{m}/{l}"] for l in high]))
        metrics[f"{m}/low"] = float(np.mean([metrics[f"{m}/{l}"] for l in low]))
        metrics[f"{m}/gap"] = metrics[f"{m}/high"] - metrics[f"{m}/low"]
    return metrics


class ModelEvaluator:
  """Retrieval metrics of a model on a collection, both sides encoded by the model."""

  def __init__(self, config: ml_collections.ConfigDict, col: EvalCollection,
               tokenizer: tokenizer_lib.Tokenizer, workdir: pathlib.Path):
    self.cfg, self.col, self.tokenizer = config, col, tokenizer
    self.scoring = config.teacher.scoring
    self.qids, self.docids = list(col.queries), list(col.docs)
    self.out = workdir / "eval"
    self.out.mkdir(parents=True, exist_ok=True)

  def _encode(self, model, texts, prefix):
    e = self.cfg.eval
    if self.scoring == "dense":
      return encode_lib.encode_texts(model, self.tokenizer, texts, prefix=prefix,
                                    batch_size=e.batch_size, max_length=e.max_length,
                                    progress=False)
    return encode_lib.encode_tokens(model, self.tokenizer, texts, prefix=prefix,
                                    batch_size=e.batch_size,
                         max_length=e.max_length)

  def __call__(self, model: heads_lib.TextModel, name: str) -> dict[str, float]:
    t = self.cfg.text
    q = self._encode(model, [self.col.queries[i] for i in self.qids], t.query_prefix)
    d = self._encode(model, [self.col.docs[i] for i in self.docids], t.doc_prefix)
    k = min(self.cfg.eval.k, len(self.docids))
    if self.scoring == "dense":
      scores, idx = topk_lib.topk(q, d, k, similarity="dot")
    else:   # MaxSim against every document: the collection is small
      # Docs per step so its [Q, chunk, Lq, Ld] similarities stay near 256 MB.
      chunk = max(8, 2**26 // (q[0].shape[0] * q[0].shape[1] * d[0].shape[1]))
      scores, idx = jax.lax.top_k(late_interaction.maxsim(*q, *d, doc_chunk_size=chunk), k)
      scores, idx = np.asarray(scores), np.asarray(idx)
    run = topk_lib.to_run(scores, idx, self.qids, self.docids)
    result = metrics_lib.evaluate(self.col.qrels, run, self.cfg.eval.metrics)
    if jax.process_index() == 0:
      trec.write_run(self.out / f"{name}.run", run, tag=name)
      metrics_lib.write_metrics(self.out / f"{name}.json", result)
    return dict(result.aggregate)
