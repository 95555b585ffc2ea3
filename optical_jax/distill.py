"""The distill job: zero-shot evaluation, OT distillation with resume, evaluation, results.

`run(config, workdir)` is what `optical-jax --mode=distill` calls, and what a
notebook calls too. The workdir holds everything a run produces:

  checkpoints/        Orbax checkpoints (resume is automatic)
  metrics.jsonl       one record per logged step and per evaluation
  tensorboard/        the same as TensorBoard events
  eval/*.run          TREC runs of every evaluation; eval/*.json their metrics
  results.json, results.md   zero-shot vs the student
  config.json         the config of the run

`config.method` says what the student is: distilled with OPTICAL's OT loss or
a knowledge-distillation baseline (see `losses.METHODS`), or not trained at
all: `zero_shot` (the teacher reads the queries) and `translate_query` (the
teacher reads their translations from `eval.translated_queries`). Whatever the
method, `results['optical']` and `eval/optical.run` hold its query encoder's
evaluation, so grids of runs compare methods by one key.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np

from optical_jax import checkpoint as checkpoint_lib
from optical_jax import config as config_lib
from optical_jax import evaluate as evaluate_lib
from optical_jax import inference
from optical_jax import loop as loop_lib
from optical_jax import losses as losses_lib
from optical_jax import metrics_log
from optical_jax import mlm as mlm_lib
from optical_jax import models
from optical_jax import retrieval
from optical_jax import sharding
from optical_jax import text
from optical_jax import train as train_lib
from optical_jax.data import benchmarks
from optical_jax.data import collection as collection_lib
from optical_jax.data import sources
from optical_jax.models import heads as heads_lib

log = logging.getLogger(__name__)

# Config blocks that must not change when a run resumes (steps may grow).
_RESUME_INVARIANT = ("seed", "method", "model", "text", "data", "loss", "ot", "pretrain")


@dataclasses.dataclass
class Setup:
  """Everything a distill or evaluate job works with."""
  config: ml_collections.ConfigDict
  teacher: heads_lib.TextModel
  tokenizer: text.Tokenizer
  directory: pathlib.Path  # the teacher's HF directory
  src: list[str]
  tgt: list[str]
  collection: Any          # sources.Collection or None
  order: Any = None        # the training order (BatchOrder or a language mix)


def prepare(config: ml_collections.ConfigDict, *, need_train_data: bool = True) -> Setup:
  """Loads the teacher, its tokenizer, the bitext and the evaluation collection."""
  config_lib.check(config)
  teacher, tokenizer, directory = models.load(config.model.teacher, dtype=config.model.dtype,
                                              param_dtype=config.model.param_dtype)
  src, tgt, collection, order = sources.load(config, need_train_data=need_train_data,
                                             with_order=True)
  return Setup(config, teacher, tokenizer, directory, src, tgt, collection, order)


class RetrievalEvaluator:
  """Scores query encoders on one collection; the document side is encoded once.

  Documents are encoded by the frozen teacher (the matching knowledge the
  student reuses), queries by whichever model is evaluated.
  """

  def __init__(self, setup: Setup, workdir: pathlib.Path):
    cfg = setup.config
    self.cfg, self.collection, self.tokenizer = cfg, setup.collection, setup.tokenizer
    self.out = workdir / "eval"
    self.out.mkdir(parents=True, exist_ok=True)
    self.docids = list(self.collection.docs)
    self.qids = list(self.collection.queries)
    # Benchmark layouts: each language's queries search its own documents.
    self.groups = None
    if cfg.eval.collection in benchmarks.LAYOUTS:
      q_lang = np.asarray([benchmarks.language_of(q) for q in self.qids])
      d_lang = np.asarray([benchmarks.language_of(d) for d in self.docids])
      self.groups = {lang: (np.flatnonzero(q_lang == lang), np.flatnonzero(d_lang == lang))
                     for lang in cfg.eval.languages}
    encode = (functools.partial(inference.encode_texts_cached,
                                os.path.expanduser(cfg.eval.cache_dir))
              if cfg.eval.cache_dir else inference.encode_texts)
    self.doc_vecs = encode(
        setup.teacher, self.tokenizer, [self.collection.docs[d] for d in self.docids],
        prefix=cfg.text.doc_prefix, batch_size=cfg.eval.batch_size,
        max_length=cfg.eval.max_length, desc="documents", progress=cfg.train.progress)

  def __call__(self, query_model: heads_lib.TextModel, name: str, *,
               queries: dict[str, str] | None = None) -> dict[str, float]:
    """Metrics of `query_model` on the collection's queries (or on `queries`,
    the same qids with other texts: their translations); writes eval/NAME.*"""
    cfg = self.cfg
    queries = queries or self.collection.queries
    q_vecs = inference.encode_texts(
        query_model, self.tokenizer, [queries[q] for q in self.qids],
        prefix=cfg.text.query_prefix, batch_size=cfg.eval.batch_size,
        max_length=cfg.eval.max_length, desc=f"queries ({name})", progress=cfg.train.progress)
    groups = self.groups or {"": (np.arange(len(self.qids)), np.arange(len(self.docids)))}
    run = {}
    for qi, di in groups.values():
      k = min(cfg.eval.k, len(di))
      scores, idx = retrieval.topk(q_vecs[qi], self.doc_vecs[di], k, similarity="dot")
      run.update(retrieval.to_run(scores, idx, [self.qids[i] for i in qi],
                                  [self.docids[j] for j in di]))
    result = evaluate_lib.evaluate(self.collection.qrels, run, cfg.eval.metrics)
    if jax.process_index() == 0:   # every host computes the same; one writes
      evaluate_lib.write_run(self.out / f"{name}.run", run, tag=name)
      evaluate_lib.write_metrics(self.out / f"{name}.json", result)
    # The collapse diagnostic: mean cosine between the vectors of different queries.
    sample = q_vecs[:1000]
    sims = sample @ sample.T
    off = ~np.eye(len(sample), dtype=bool)
    metrics = dict(result.aggregate, query_spread_cos=float(sims[off].mean()))
    for lang in self.groups or ():   # per language: the mean over its judged queries
      for m in cfg.eval.metrics:
        values = [v for q, v in result.per_query[m].items() if benchmarks.language_of(q) == lang]
        metrics[f"{m}/{lang}"] = float(np.mean(values)) if values else float("nan")
    high = [l for l in cfg.eval.languages if l in cfg.eval.high_languages]
    low = [l for l in cfg.eval.languages if l not in cfg.eval.high_languages]
    if self.groups and high and low:   # the high- vs low-resource gap, by language means
      for m in cfg.eval.metrics:
        metrics[f"{m}/high"] = float(np.mean([metrics[f"{m}/{l}"] for l in high]))
        metrics[f"{m}/low"] = float(np.mean([metrics[f"{m}/{l}"] for l in low]))
        metrics[f"{m}/gap"] = metrics[f"{m}/high"] - metrics[f"{m}/low"]
    return metrics


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Zero-shot evaluation, distillation (resuming if the workdir has a checkpoint), evaluation.

  Returns:
    {'zero_shot': metrics, 'optical': metrics, 'steps': int}.
  """
  wd = pathlib.Path(workdir)
  wd.mkdir(parents=True, exist_ok=True)
  untrained = config.method in losses_lib.UNTRAINED
  setup = prepare(config, need_train_data=not untrained)
  main_host = jax.process_index() == 0     # the one that writes files and prints
  if main_host:
    (wd / "config.json").write_text(config.to_json(indent=2))
  if untrained:
    return _evaluate_untrained(setup, wd)
  loss_cfg = config_lib.loss_config(config)
  tcfg = config.train
  teacher = setup.teacher
  layer_index = teacher.encoder.layer_index(loss_cfg.layer)

  teacher_parts, teacher_params, params, frozen, pretrain = student_parameters(
      config, teacher, setup.directory, setup.tokenizer)
  tx, schedule = train_lib.make_optimizer(tcfg)
  mesh = make_mesh(config)
  # Student and teacher share one graph: the student is the teacher's architecture.
  runner = train_lib.StepRunner(teacher_parts, teacher_parts, loss_cfg, tx, layer_index,
                                mesh=mesh, mode=config.parallel.step,
                                rules=sharding.resolve_rules(config.parallel.rules),
                                pretrain=pretrain)
  for ways, what in ((jax.process_count(), "hosts"),
                    (runner.data_parallelism, f"data-parallel devices ({config.parallel.step})")):
    if tcfg.batch_size % ways:
      raise config_lib.ConfigError(f"config.train.batch_size={tcfg.batch_size} does not divide "
                                   f"over {ways} {what}; see config.parallel")
  # The step's copies (sharded or replicated); the host copies stay for evaluation.
  frozen_dev, teacher_dev = runner.place_params(frozen), runner.place_params(teacher_params)
  state = runner.init_state(params, config.seed)

  results_path = wd / "results.json"
  results = json.loads(results_path.read_text()) if results_path.exists() else {}
  ckpt, state, start = loop_lib.restore(wd, config, state, _RESUME_INVARIANT)
  logger = metrics_log.MetricLogger(wd, resume_step=start)

  finished = results.get("steps") == tcfg.steps and "optical" in results
  # Encoding the documents takes a while: only when something will be evaluated.
  evaluator = (RetrievalEvaluator(setup, wd) if setup.collection is not None and not finished
               else None)
  if evaluator and config.eval.zero_shot and "zero_shot" not in results:
    results["zero_shot"] = evaluator(teacher, "zero_shot")
    logger.write(0, results["zero_shot"], kind="eval_zero_shot")
    if main_host:
      results_path.write_text(json.dumps(results, indent=2))

  order = setup.order
  if getattr(order, "report", None) is not None:   # a language mix: what the run will see
    results["mix"] = {"target": order.report.target_languages,
                      "realised": order.report.languages}
  switcher = sources.codeswitcher(config, setup.src, setup.tgt)
  host_rows = tcfg.batch_size // jax.process_count()

  def make_batch(step: int, idx: np.ndarray) -> dict:
    src = [setup.src[i] for i in idx]
    if switcher is not None:   # a function of (seed, example, epoch): resumes identically
      first = step * tcfg.batch_size + jax.process_index() * host_rows
      epochs = (first + np.arange(len(idx))) // len(setup.src)
      src, _ = switcher.switch_batch(src, idx, epochs)
    batch = train_lib.make_batch(
        setup.tokenizer, src, [setup.tgt[i] for i in idx],
        src_prefix=config.text.src_prefix, tgt_prefix=config.text.tgt_prefix,
        max_length=tcfg.max_length, batch_size=len(idx),
        student_reads_tgt=loss_cfg.mse_both_sides)
    if pretrain is not None and pretrain.cfg.tlm_weight:
      batch = mlm_lib.add_tlm_inputs(batch, pad_id=setup.tokenizer.pad_id,
                                     max_length=pretrain.cfg.tlm_max_length)
    return batch

  def evaluate(state, done: int) -> dict:
    return evaluator(teacher_parts.merge(frozen, runner.to_host(state).params), f"step{done}")

  record = {"config": config_lib.resume_record(config, _RESUME_INVARIANT)}
  state = loop_lib.run(loop_lib.Loop(
      steps=tcfg.steps, batch_size=tcfg.batch_size, order=order, make_batch=make_batch,
      step=lambda st, batch: runner(st, frozen_dev, teacher_dev, batch),
      to_host=runner.to_host, ckpt=ckpt, logger=logger, meta=record,
      schedule=schedule, log_every=tcfg.log_every, progress=tcfg.progress,
      extra_log=lambda: {"truncated_texts": setup.tokenizer.total_truncated},
      evaluate=evaluate if evaluator else None, eval_every=config.eval.every_steps,
      desc="distill", unit="pairs"), runner.to_device(state), start)
  student = teacher_parts.merge(frozen, runner.to_host(state).params)
  if evaluator:
    results["optical"] = evaluator(student, "optical")
    logger.write(tcfg.steps, results["optical"], kind="eval_optical")
  results.update(steps=tcfg.steps, method=config.method)
  _write_results(results, config, wd)
  logger.close()
  return results


def _write_results(results: dict, config: ml_collections.ConfigDict, wd: pathlib.Path) -> None:
  if jax.process_index() != 0:
    return
  (wd / "results.json").write_text(json.dumps(results, indent=2))
  if "optical" in results:
    table = results_table(results, config.eval.metrics)
    (wd / "results.md").write_text(table + "\n")
    print(table, flush=True)


def read_translations(path: str, qids) -> dict[str, str]:
  """`{qid: English text}` from a qid<TAB>text file covering every qid in `qids`."""
  translated = collection_lib.read_texts(path)
  missing = [q for q in qids if q not in translated]
  if missing:
    raise config_lib.ConfigError(
        f"config.eval.translated_queries={path}: no translation of {len(missing)} of the "
        f"{len(qids)} evaluation queries, e.g. qids {missing[:3]}")
  return translated


def _evaluate_untrained(setup: Setup, wd: pathlib.Path) -> dict[str, Any]:
  """`zero_shot` / `translate_query`: the teacher encodes the queries or their
  translations; nothing is trained."""
  config = setup.config
  if setup.collection is None:
    raise config_lib.ConfigError(f"config.method={config.method!r} only evaluates: it needs "
                                 "config.eval.collection")
  evaluator = RetrievalEvaluator(setup, wd)
  results: dict[str, Any] = {"method": config.method, "steps": 0}
  if config.method == "zero_shot":
    results["zero_shot"] = results["optical"] = evaluator(setup.teacher, "zero_shot")
    if jax.process_index() == 0:   # the method's run under the key every method has
      for ext in ("run", "json"):
        (evaluator.out / f"optical.{ext}").write_bytes(
            (evaluator.out / f"zero_shot.{ext}").read_bytes())
  else:
    queries = read_translations(config.eval.translated_queries, evaluator.qids)
    if config.eval.zero_shot:
      results["zero_shot"] = evaluator(setup.teacher, "zero_shot")
    results["optical"] = evaluator(setup.teacher, "optical", queries=queries)
  _write_results(results, config, wd)
  return results


def student_parameters(config: ml_collections.ConfigDict, teacher: heads_lib.TextModel,
                       directory, tokenizer: text.Tokenizer):
  """(teacher parts, teacher params, trainable, frozen, Pretraining or None).

  The student starts as the teacher; only `train.trainable` names get
  optimised, plus the LM head when the `pretrain` terms are on.
  """
  parts, teacher_params = train_lib.ModelParts.split(teacher)
  try:
    params, frozen = train_lib.split_trainable(teacher_params, config.train.trainable,
                                               teacher.encoder.cfg.num_layers)
  except ValueError as e:
    raise config_lib.ConfigError(f"config.{e}") from None
  pretrain = None
  mlm_cfg = config_lib.pretrain_config(config)
  if mlm_cfg.enabled:
    pretrain, head_params = train_lib.Pretraining.create(mlm_cfg, teacher, directory, tokenizer,
                                                         config.seed)
    params = dict(params, **head_params)
  return parts, teacher_params, params, frozen, pretrain


def make_mesh(config: ml_collections.ConfigDict):
  """The configured mesh, or None for a plain single-device step."""
  use = config.parallel.use_mesh
  if use == "no" or (use == "auto" and jax.device_count() == 1):
    return None
  return sharding.make_mesh(config.parallel.mesh.to_dict())


def results_table(results: dict, metrics) -> str:
  """Markdown: one row per query encoder, one column per metric."""
  cols = list(metrics) + ["query_spread_cos"]
  lines = ["| query encoder | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
  method = results.get("method", "optical")
  student = {"optical": "OPTICAL student", "zero_shot": None,
             "translate_query": "teacher, translated queries"}.get(method, f"{method} student")
  names = {"zero_shot": "teacher, zero-shot", "optical": student}
  for key, label in names.items():
    if key in results and label:
      lines.append(f"| {label} | " + " | ".join(f"{results[key][c]:.4f}" for c in cols) + " |")
  return "\n".join(lines)


def restore_student(config: ml_collections.ConfigDict, workdir: str,
                    teacher: heads_lib.TextModel | None = None) -> heads_lib.TextModel:
  """The student of the latest checkpoint in `workdir` (error if there is none)."""
  if teacher is None:
    teacher, tokenizer, directory = models.load(config.model.teacher, dtype=config.model.dtype,
                                                param_dtype=config.model.param_dtype)
  else:
    directory = models.resolve_dir(config.model.teacher)
    tokenizer = text.Tokenizer.from_pretrained(directory)
  parts, _, train_params, frozen, _ = student_parameters(config, teacher, directory, tokenizer)
  tx, _ = train_lib.make_optimizer(config.train)
  ckpt = checkpoint_lib.Checkpointer(workdir)
  restored = ckpt.restore(train_lib.init_state(train_params, tx, config.seed))
  ckpt.close()
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {ckpt.directory}: run --mode=distill first")
  state, meta = restored
  config_lib.check_resumable(meta["config"], config, _RESUME_INVARIANT, workdir)
  return parts.merge(frozen, state.params)
