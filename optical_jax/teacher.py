"""Training a retrieval teacher, for users who do not have one.

OPTICAL distils a teacher that already retrieves English passages well. A user
without one trains it here on English (query, positive, hard negative)
triples, starting from any BERT-family Hugging Face checkpoint (or the
embedded multilingual-e5-small), then points a distillation config at the
export: `--config.model.teacher=WORKDIR/export`.

One encoder reads both sides, queries with `text.query_prefix`, passages with
`text.doc_prefix`. The objective is InfoNCE over in-batch candidates: query i
against every positive and every hard negative of the batch (`[B, 2B]`
scores), its own positive the label (`triple_loss`). Scores are

  dense             cosine of the pooled, L2-normalised vectors / temperature
  late_interaction  ColBERT MaxSim over L2-normalised last-layer token vectors
                    (the sum over query tokens of the best passage token) /
                    temperature; it sums Lq cosines, so ColBERT trains it at
                    temperature 1, not the dense 0.05.

`run(config, workdir)` is the job (`optical-jax --mode=teacher`). The workdir
holds what the distill job's does (checkpoints/, metrics.jsonl, tensorboard/,
eval/, results.json, results.md, config.json) plus export/, the trained model
as a Hugging Face directory. The data order is a function of (seed, step), so a
resumed run sees the batches an uninterrupted one would. On a mesh the step is
jit with sharded inputs (batch over `data`, parameters by `parallel.rules`);
`parallel.step='pmap'` does not apply.

The `teacher` config block (`config_block()`): triples from `source='files'`
(MS MARCO layouts, `data/triples.py`) or `source='bible'`, keyword queries
built by code from the embedded KJV (`data/bible_triples.py`). Evaluation uses
the `eval` block: `eval.collection='bible'` is then the English keyword-search
collection of the held-out books (`data.heldout_books`), 'files' the user's
queries, corpus and qrels (e.g. MS MARCO dev), 'none' skips it.
"""
from __future__ import annotations

import functools
import json
import logging
import pathlib
from typing import Any, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from optical_jax import checkpoint as checkpoint_lib
from optical_jax import config as config_lib
from optical_jax import distill
from optical_jax import evaluate as evaluate_lib
from optical_jax import inference
from optical_jax import late_interaction
from optical_jax import loop as loop_lib
from optical_jax import metrics_log
from optical_jax import models
from optical_jax import retrieval
from optical_jax import sharding
from optical_jax import text
from optical_jax import train as train_lib
from optical_jax.data import batching
from optical_jax.data import bible_triples
from optical_jax.data import collection as collection_lib
from optical_jax.data import sources
from optical_jax.data import triples as triples_lib
from optical_jax.models import heads as heads_lib
from optical_jax.models import weights

log = logging.getLogger(__name__)

SCORINGS = ("dense", "late_interaction")
_CHOICES = {"source": ("bible", "files"), "format": ("text", "ids"),
            "on_bad_line": ("error", "skip"), "scoring": SCORINGS}
# Masked similarities: finite, so no -inf reaches a gradient.
_NEG = -1e9


# ----------------------------------------------------------------------------
# Config.

def config_block() -> ml_collections.ConfigDict:
  """The `teacher` config block with its defaults (add it to `config.default()`)."""
  b = ml_collections.ConfigDict()
  b.source = "files"              # files (MS MARCO layouts) | bible (embedded KJV)
  b.format = "text"               # text: query<TAB>pos<TAB>neg | ids: qid<TAB>pid<TAB>pid
  b.triples = ""                  # triples.train.small.tsv | qidpidtriples.train.full.tsv
  b.queries = ""                  # ids: queries.train.tsv (id<TAB>text)
  b.corpus = ""                   # ids: collection.tsv (id<TAB>text)
  b.on_bad_line = "error"         # error (file:line) | skip (counted, reported)
  b.max_pairs = 0                 # triples used (the first ones); 0 = all
  b.scoring = "dense"             # dense | late_interaction
  b.temperature = 0.05            # dense: 0.01-0.05; late_interaction: ~1
  b.query_max_length = 32         # query tokens; passages get train.max_length
  b.query_words = 3               # bible: a query is this many rare words of a verse
  return b


def check_block(block: ml_collections.ConfigDict) -> None:
  """Validates the `teacher` block; raises ConfigError naming the key."""
  expected = config_block()
  for key in block.keys():
    if key not in expected:
      raise config_lib.ConfigError(f"config.teacher.{key}: unknown key; expected one of "
                                   f"{tuple(expected.keys())}")
  for key in expected.keys():
    if key not in block:
      raise config_lib.ConfigError(f"config.teacher.{key} is missing; start from "
                                   "teacher.config_block()")
  for key, allowed in _CHOICES.items():
    if block[key] not in allowed:
      raise config_lib.ConfigError(f"config.teacher.{key}={block[key]!r}: expected one of "
                                   f"{allowed}")
  if not float(block.temperature) > 0:
    raise config_lib.ConfigError(f"config.teacher.temperature={block.temperature!r}: "
                                 "must be > 0")
  for key, low in (("max_pairs", 0), ("query_max_length", 1), ("query_words", 1)):
    if not isinstance(block[key], int) or block[key] < low:
      raise config_lib.ConfigError(f"config.teacher.{key}={block[key]!r}: expected an int "
                                   f">= {low}")
  if block.source == "files":
    needed = ("triples",) + (("queries", "corpus") if block.format == "ids" else ())
    for key in needed:
      if not block[key]:
        raise config_lib.ConfigError(
            f"config.teacher.{key} is empty: teacher.source='files' with "
            f"format={block.format!r} reads it")


def check(config: ml_collections.ConfigDict) -> None:
  """The shared checks (`config.check`) and the `teacher` block's."""
  if "teacher" not in config:
    raise config_lib.ConfigError("config.teacher is missing: start from configs/teacher.py "
                                 "(or add teacher.config_block())")
  config_lib.check(config)
  check_block(config.teacher)


# ----------------------------------------------------------------------------
# The objective.

def _unit(x: jax.Array) -> jax.Array:
  return heads_lib.l2_normalize(x.astype(jnp.float32))


def in_batch_scores(queries: jax.Array, query_mask: jax.Array | None, docs: jax.Array,
                    doc_mask: jax.Array | None, scoring: str) -> jax.Array:
  """Similarity of every query to every candidate passage, float32 `[B, N]`.

  Args:
    queries: dense: `[B, D]` pooled vectors; late_interaction: `[B, Lq, D]`
      token vectors. L2-normalised here (any norm in).
    query_mask: late_interaction: `[B, Lq]`, 1 on real tokens (dense: unused).
    docs, doc_mask: `[N, D]`, or `[N, Ld, D]` and `[N, Ld]`, likewise.
    scoring: 'dense' (cosine) or 'late_interaction' (MaxSim: the sum over real
      query tokens of the best cosine over real passage tokens, as
      `late_interaction.maxsim` scores at evaluation).
  """
  q, d = _unit(queries), _unit(docs)
  if scoring == "dense":
    return q @ d.T
  if scoring != "late_interaction":
    raise ValueError(f"scoring={scoring!r}: expected one of {SCORINGS}")
  sim = jnp.einsum("bid,njd->bnij", q, d)                            # [B, N, Lq, Ld]
  best = jnp.max(jnp.where(doc_mask[None, :, None, :].astype(bool), sim, _NEG), axis=-1)
  return jnp.sum(jnp.where(query_mask[:, None, :].astype(bool), best, 0.0), axis=-1)


def triple_loss(queries: jax.Array, positives: jax.Array, negatives: jax.Array, *,
                scoring: str, temperature: float, query_mask: jax.Array | None = None,
                positive_mask: jax.Array | None = None, negative_mask: jax.Array | None = None,
                valid: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """InfoNCE over in-batch positives and hard negatives.

  Query i's candidates are all B positives then all B hard negatives; the
  label is its own positive (column i):

    loss = mean_i [ logsumexp_j s[i, j] / T  -  s[i, i] / T ],  s = scores [B, 2B].

  Args:
    queries: `[B, D]` (dense) or `[B, Lq, D]` (late_interaction).
    positives, negatives: `[B, D]` or `[B, Ld, D]`; row i belongs to query i.
    scoring: 'dense' or 'late_interaction' (see `in_batch_scores`).
    temperature: scores are divided by it.
    query_mask, positive_mask, negative_mask: late_interaction: `[B, L]` real
      tokens.
    valid: `[B]` bool; an invalid row (batch padding) is neither a query nor
      a candidate (its positive and negative columns are dropped).

  Returns:
    (mean cross-entropy over valid queries, metrics: 'accuracy' (own positive
    scored first), 'pos_score', 'hard_neg_score' (own, unscaled means)), all
    float32 scalars.
  """
  b = queries.shape[0]
  valid = jnp.ones((b,), bool) if valid is None else valid.astype(bool)
  docs = jnp.concatenate([positives, negatives])
  doc_mask = None if positive_mask is None else jnp.concatenate([positive_mask, negative_mask])
  s = in_batch_scores(queries, query_mask, docs, doc_mask, scoring)          # [B, 2B]
  cols = jnp.concatenate([valid, valid])
  logits = jnp.where(cols[None, :], s / temperature, _NEG)
  labels = jnp.arange(b)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  n = jnp.maximum(jnp.sum(valid), 1)

  def mean(x):
    return jnp.sum(jnp.where(valid, x, 0.0)) / n
  metrics = {"accuracy": mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)),
             "pos_score": mean(s[labels, labels]), "hard_neg_score": mean(s[labels, labels + b])}
  return mean(ce), jax.lax.stop_gradient(metrics)


def encode(model: heads_lib.TextModel, ids: jax.Array, mask: jax.Array, scoring: str
           ) -> jax.Array:
  """`[B, L]` ids -> pooled `[B, D]` (dense) or head token vectors `[B, L, D]`."""
  tokens = model.encoder(ids, mask)
  return model.head.pool(tokens, mask) if scoring == "dense" else model.head.tokens(tokens)


def train_step(state: train_lib.TrainState, frozen: train_lib.Params,
               batch: dict[str, jax.Array], *, parts: train_lib.ModelParts,
               tx: optax.GradientTransformation, scoring: str, temperature: float
               ) -> tuple[train_lib.TrainState, dict[str, jax.Array]]:
  """One step on a batch of triples (pure; jit it with the keywords bound).

  Args:
    state: the trainable parameters and their optimizer state.
    frozen: the parameters that do not train (`train.trainable`).
    batch: 'q_ids', 'q_mask' `[B, Lq]`; 'p_ids', 'p_mask', 'n_ids', 'n_mask'
      `[B, Ld]` (positives, hard negatives).
    parts: the model's graph.
    tx: the optimizer.
    scoring, temperature: see `triple_loss`.

  Returns:
    (new state, float32 scalar metrics: loss, accuracy, pos_score,
    hard_neg_score, grad_norm).
  """
  b = batch["q_ids"].shape[0]
  valid = jnp.all(jnp.stack([jnp.sum(batch[k], -1) > 0
                             for k in ("q_mask", "p_mask", "n_mask")]), axis=0)
  d_ids = jnp.concatenate([batch["p_ids"], batch["n_ids"]])
  d_mask = jnp.concatenate([batch["p_mask"], batch["n_mask"]])

  def loss_fn(params):
    model = parts.merge(frozen, params)
    q = encode(model, batch["q_ids"], batch["q_mask"], scoring)
    d = encode(model, d_ids, d_mask, scoring)    # positives and negatives in one pass
    return triple_loss(q, d[:b], d[b:], scoring=scoring, temperature=temperature,
                       query_mask=batch["q_mask"], positive_mask=batch["p_mask"],
                       negative_mask=batch["n_mask"], valid=valid)

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                       rng=jax.random.split(state.rng)[0]), metrics


# ----------------------------------------------------------------------------
# Data.

def _padded(tokenizer: text.Tokenizer, texts: Sequence[str], prefix: str,
             length: int) -> tuple[np.ndarray, np.ndarray]:
  """`[B, length]` ids and mask: one shape every step, so the step compiles once."""
  length = min(length, tokenizer.max_length)    # never past the position table
  enc = tokenizer.encode(list(texts), prefix=prefix, max_length=length)
  pad = length - enc.ids.shape[1]
  return (np.pad(enc.ids, ((0, 0), (0, pad)), constant_values=tokenizer.pad_id),
          np.pad(enc.mask, ((0, 0), (0, pad))))


def make_batch(tokenizer: text.Tokenizer, batch: Sequence[triples_lib.Triple], *,
               query_prefix: str, doc_prefix: str, query_max_length: int,
               max_length: int) -> dict[str, np.ndarray]:
  """Token arrays of a batch of triples, the keys `train_step` reads."""
  out = {}
  for side, texts, prefix, length in (
      ("q", [t.query for t in batch], query_prefix, query_max_length),
      ("p", [t.positive for t in batch], doc_prefix, max_length),
      ("n", [t.negative for t in batch], doc_prefix, max_length)):
    out[f"{side}_ids"], out[f"{side}_mask"] = _padded(tokenizer, texts, prefix, length)
  return out


def load_data(config: ml_collections.ConfigDict
              ) -> tuple[list[triples_lib.Triple], collection_lib.EvalCollection | None]:
  """The training triples and the evaluation collection (or None) the config names.

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
  if tc.source == "files":
    train = (triples_lib.read_text_triples(tc.triples, on_bad_line=tc.on_bad_line)
             if tc.format == "text" else
             triples_lib.read_id_triples(tc.triples, tc.queries, tc.corpus,
                                         on_bad_line=tc.on_bad_line))
  if e.collection == "files":
    col = collection_lib.read_collection(e.queries, e.corpus, e.qrels)
  train = train[:tc.max_pairs or None]
  if not train:
    raise ValueError("no training triples: check config.teacher")
  if col is not None:
    col = sources.subsample(col, e.max_queries, e.max_docs)
  log.info("%d training triples; evaluation: %s", len(train),
           f"{len(col.queries)} queries x {len(col.docs)} documents" if col else "none")
  return train, col


# ----------------------------------------------------------------------------
# Evaluation.

@nnx.jit
def _token_vectors(model: heads_lib.TextModel, ids: jax.Array, mask: jax.Array) -> jax.Array:
  return _unit(encode(model, ids, mask, "late_interaction"))


def encode_tokens(model: heads_lib.TextModel, tokenizer: text.Tokenizer,
                  texts: Sequence[str], *, prefix: str = "", batch_size: int = 64,
                  max_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """L2-normalised token vectors of `texts` for MaxSim.

  Returns:
    `(tokens [N, L, D] float32, mask [N, L] int32)`, L the longest length
    bucket used: N * L * D * 4 bytes, for small collections.
  """
  parts = []
  for start in range(0, len(texts), batch_size):
    enc = tokenizer.encode(list(texts[start:start + batch_size]), prefix=prefix,
                           max_length=max_length, batch_size=batch_size)
    vecs = np.asarray(_token_vectors(model, jnp.asarray(enc.ids), jnp.asarray(enc.mask)))
    parts.append((vecs[:enc.num_texts], enc.mask[:enc.num_texts]))
  length = max(m.shape[1] for _, m in parts)
  tokens = np.concatenate([np.pad(v, ((0, 0), (0, length - v.shape[1]), (0, 0)))
                           for v, _ in parts])
  mask = np.concatenate([np.pad(m, ((0, 0), (0, length - m.shape[1]))) for _, m in parts])
  return tokens, mask


class Evaluator:
  """Retrieval metrics of a model on a collection, both sides encoded by the model."""

  def __init__(self, config: ml_collections.ConfigDict, col: collection_lib.EvalCollection,
               tokenizer: text.Tokenizer, workdir: pathlib.Path):
    self.cfg, self.col, self.tokenizer = config, col, tokenizer
    self.scoring = config.teacher.scoring
    self.qids, self.docids = list(col.queries), list(col.docs)
    self.out = workdir / "eval"
    self.out.mkdir(parents=True, exist_ok=True)

  def _encode(self, model, texts, prefix):
    e = self.cfg.eval
    if self.scoring == "dense":
      return inference.encode_texts(model, self.tokenizer, texts, prefix=prefix,
                                    batch_size=e.batch_size, max_length=e.max_length,
                                    progress=False)
    return encode_tokens(model, self.tokenizer, texts, prefix=prefix, batch_size=e.batch_size,
                         max_length=e.max_length)

  def __call__(self, model: heads_lib.TextModel, name: str) -> dict[str, float]:
    t = self.cfg.text
    q = self._encode(model, [self.col.queries[i] for i in self.qids], t.query_prefix)
    d = self._encode(model, [self.col.docs[i] for i in self.docids], t.doc_prefix)
    k = min(self.cfg.eval.k, len(self.docids))
    if self.scoring == "dense":
      scores, idx = retrieval.topk(q, d, k, similarity="dot")
    else:   # MaxSim against every document: the collection is small
      # Docs per step so its [Q, chunk, Lq, Ld] similarities stay near 256 MB.
      chunk = max(8, 2**26 // (q[0].shape[0] * q[0].shape[1] * d[0].shape[1]))
      scores, idx = jax.lax.top_k(late_interaction.maxsim(*q, *d, doc_chunk_size=chunk), k)
      scores, idx = np.asarray(scores), np.asarray(idx)
    run = retrieval.to_run(scores, idx, self.qids, self.docids)
    result = evaluate_lib.evaluate(self.col.qrels, run, self.cfg.eval.metrics)
    if jax.process_index() == 0:
      evaluate_lib.write_run(self.out / f"{name}.run", run, tag=name)
      evaluate_lib.write_metrics(self.out / f"{name}.json", result)
    return dict(result.aggregate)


def results_table(results: dict, metrics: Sequence[str]) -> str:
  """Markdown: the starting checkpoint and the trained teacher, one column per metric."""
  lines = ["| model | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
  for key in ("pretrained", "trained"):
    if key in results:
      lines.append(f"| {key} | " + " | ".join(f"{results[key][m]:.4f}" for m in metrics) + " |")
  return "\n".join(lines)


# ----------------------------------------------------------------------------
# The job.

# What must not change when a run resumes (steps may grow).
_RESUME_INVARIANT = ("seed", "model", "text", "teacher", "data.heldout_books",
                     "train.trainable", "train.batch_size")


def _finished(wd: pathlib.Path, results: dict, config: ml_collections.ConfigDict) -> bool:
  return (results.get("steps") == config.train.steps
          and (config.eval.collection == "none" or "trained" in results)
          and (wd / "export" / "config.json").exists())


def _saved_meta(wd: pathlib.Path) -> dict | None:
  """The JSON record of the latest checkpoint (None if none), without its arrays."""
  ckpt = checkpoint_lib.Checkpointer(wd)
  try:
    step = ckpt.latest_step()
    return None if step is None else ckpt.manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore())).meta
  finally:
    ckpt.close()


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Evaluates the starting checkpoint, trains it on the triples (resuming from the
  workdir's checkpoint), evaluates it again and exports it to WORKDIR/export.

  Returns:
    {'pretrained': metrics, 'trained': metrics (when evaluating), 'steps': int,
    'export': the export directory}.

  Raises:
    ConfigError: a bad config value (named), or a workdir of another config.
    bitext.BitextError: a bad triples line (`file:line: why`).
    FloatingPointError: the loss became NaN or inf (the step is named).
    SystemExit: SIGTERM / SIGINT, after saving a checkpoint.
  """
  check(config)
  wd = pathlib.Path(workdir)
  wd.mkdir(parents=True, exist_ok=True)
  main_host = jax.process_index() == 0
  results_path = wd / "results.json"
  results = json.loads(results_path.read_text()) if results_path.exists() else {}
  meta = _saved_meta(wd) if _finished(wd, results, config) else None
  if meta is not None:
    config_lib.check_resumable(meta["config"], config, _RESUME_INVARIANT, wd)
    log.info("%s: already trained for %d steps", wd, config.train.steps)
    if main_host and (wd / "results.md").exists():
      print((wd / "results.md").read_text(), end="", flush=True)
    return results
  if main_host:
    (wd / "config.json").write_text(config.to_json(indent=2))
  tc, tcfg = config.teacher, config.train
  data, col = load_data(config)     # before the model: a bad line fails fast
  model, tokenizer, _ = models.load(config.model.teacher, dtype=config.model.dtype,
                                    param_dtype=config.model.param_dtype)
  parts, all_params = train_lib.ModelParts.split(model)
  try:
    params, frozen = train_lib.split_trainable(all_params, tcfg.trainable,
                                               model.encoder.cfg.num_layers)
  except ValueError as e:
    raise config_lib.ConfigError(f"config.{e}") from None
  tx, schedule = train_lib.make_optimizer(tcfg)

  # A mesh splits the batch over `data` (and parameters by `parallel.rules`);
  # jit with sharded inputs is all the step needs, there being no per-pair solve.
  mesh = distill.make_mesh(config)
  shardings = None
  ways = jax.process_count()
  if mesh is not None:
    shardings = sharding.param_shardings(parts.templates, mesh,
                                         sharding.resolve_rules(config.parallel.rules))
    params, frozen = sharding.place(params, shardings), sharding.place(frozen, shardings)
    ways = max(ways, mesh.shape[sharding.DATA])
  if tcfg.batch_size % ways:
    raise config_lib.ConfigError(f"config.train.batch_size={tcfg.batch_size} does not divide "
                                 f"over {ways} hosts / data-parallel devices")
  frozen = {k: jnp.asarray(v) for k, v in frozen.items()}
  params = jax.tree.map(jnp.array, params)    # owned copies: the step donates the state
  state = train_lib.init_state(params, tx, config.seed, shardings=shardings)
  step_fn = jax.jit(functools.partial(train_step, parts=parts, tx=tx, scoring=tc.scoring,
                                      temperature=float(tc.temperature)), donate_argnums=(0,))

  ckpt, state, start = loop_lib.restore(wd, config, state, _RESUME_INVARIANT)
  logger = metrics_log.MetricLogger(wd, resume_step=start)
  evaluator = Evaluator(config, col, tokenizer, wd) if col is not None else None
  if evaluator and "pretrained" not in results:
    results["pretrained"] = evaluator(model, "pretrained")
    logger.write(0, results["pretrained"], kind="eval_pretrained")
    if main_host:
      results_path.write_text(json.dumps(results, indent=2))

  order = batching.BatchOrder(len(data), tcfg.batch_size, config.seed)
  batch_kw = dict(query_prefix=config.text.query_prefix, doc_prefix=config.text.doc_prefix,
                  query_max_length=tc.query_max_length, max_length=tcfg.max_length)

  def batch_for(step: int, idx: np.ndarray) -> dict:
    del step
    batch = make_batch(tokenizer, [data[i] for i in idx], **batch_kw)
    return sharding.global_batch(batch, mesh) if mesh is not None else batch

  record = {"config": config_lib.resume_record(config, _RESUME_INVARIANT)}
  state = loop_lib.run(loop_lib.Loop(
      steps=tcfg.steps, batch_size=tcfg.batch_size, order=order, make_batch=batch_for,
      step=lambda st, batch: step_fn(st, frozen, batch), to_host=lambda st: st, ckpt=ckpt,
      logger=logger, meta=record, schedule=schedule,
      log_every=tcfg.log_every, progress=tcfg.progress,
      extra_log=lambda: {"truncated_texts": tokenizer.total_truncated},
      evaluate=(lambda st, done: evaluator(parts.merge(frozen, st.params), f"step{done}"))
      if evaluator else None, eval_every=config.eval.every_steps,
      desc="teacher", unit="triples"), state, start)
  trained = parts.merge(frozen, state.params)
  if evaluator and (results.get("steps") != tcfg.steps or "trained" not in results):
    results["trained"] = evaluator(trained, "trained")
    logger.write(tcfg.steps, results["trained"], kind="eval_trained")
  results.update(steps=tcfg.steps, export=str(wd / "export"))
  if main_host:
    weights.export_pretrained(trained, wd / "export", tokenizer=tokenizer, prompts={
        "query": config.text.query_prefix, "passage": config.text.doc_prefix})
    results_path.write_text(json.dumps(results, indent=2))
    if "trained" in results:
      table = results_table(results, config.eval.metrics)
      (wd / "results.md").write_text(table + "\n")
      print(table, flush=True)
    print(f"exported the teacher to {wd / 'export'}", flush=True)
  logger.close()
  return results


def teacher_mode(config: ml_collections.ConfigDict, workdir: str, **_) -> dict:
  """`optical-jax --mode=teacher`."""
  return run(config, workdir)
