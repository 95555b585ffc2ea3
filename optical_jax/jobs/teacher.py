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
`parallel.step='pmap'` is refused: the in-batch negatives span the global batch.

The `teacher` config block (in `config.default()`): triples from `source='files'`
(MS MARCO layouts, `data/triples.py`) or `source='bible'`, keyword queries
built by code from the embedded KJV (`data/bible_triples.py`). Evaluation uses
the `eval` block: `eval.collection='bible'` is then the English keyword-search
collection of the held-out books (`data.heldout_books`), 'files' the user's
queries, corpus and qrels (e.g. MS MARCO dev), 'none' skips it.
"""
from __future__ import annotations

import logging
import pathlib
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from optical_jax import config as config_lib
from optical_jax import models
from optical_jax.data import batches
from optical_jax.data import batching
from optical_jax.data import sources
from optical_jax.evaluation import retrieval_eval
from optical_jax.models import weights
from optical_jax.training import job as job_lib
from optical_jax.training import step as step_lib
from optical_jax.training import trainable
from optical_jax.training import workdir as workdir_lib

log = logging.getLogger(__name__)


def results_table(results: dict, metrics: Sequence[str]) -> str:
  """Markdown: the starting checkpoint and the trained teacher, one column per metric."""
  lines = ["| model | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
  for key in ("pretrained", "trained"):
    if key in results:
      lines.append(f"| {key} | " + " | ".join(f"{results[key][m]:.4f}" for m in metrics) + " |")
  return "\n".join(lines)


# What a teacher run is (its workdir refuses another) and what it is evaluated on.
TRAIN_KEYS = ("seed", "model", "text", "teacher", "data.heldout_books", "train")
EVAL_KEYS = ("eval",)


def finished(wd: pathlib.Path, results: dict, config: ml_collections.ConfigDict) -> bool:
  """Whether `results` are those of the finished, exported run `config` describes."""
  return (results.get("steps") == config.train.steps
          and (config.eval.collection == "none" or "trained" in results)
          and (wd / "export" / "config.json").exists())


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Evaluates the starting checkpoint, trains it on the triples (resuming from the
  workdir's checkpoint), evaluates it again and exports it to WORKDIR/export.

  A finished run rerun with the same config prints its results; with another
  evaluation it evaluates the exported teacher into `evaluations/<digest>/`;
  a workdir of another training config is refused (`training/workdir.py`).

  Returns:
    {'pretrained': metrics, 'trained': metrics (when evaluating), 'steps': int,
    'export': the export directory}.

  Raises:
    ConfigError: a bad config value (named), or a workdir of another config.
    bitext.BitextError: a bad triples line (`file:line: why`).
    FloatingPointError: the loss became NaN or inf (the step is named).
    loop.Preempted: SIGTERM / SIGINT, after saving a checkpoint.
  """
  config_lib.check_teacher(config)
  with workdir_lib.lock(workdir) as wd:
    state = workdir_lib.check(wd, config, TRAIN_KEYS, EVAL_KEYS,
                              lambda results: finished(wd, results, config))
    if state.status == "complete":
      print(f"{wd}: this run is complete ({state.results['steps']} steps); its results:",
            flush=True)
      if jax.process_index() == 0 and (wd / "results.md").exists():
        print((wd / "results.md").read_text(), end="", flush=True)
      return state.results
    if state.status == "evaluate":
      return _evaluate_export(config, wd, state.eval_dir)
    workdir_lib.write_record(wd, config, TRAIN_KEYS, EVAL_KEYS)
    return _train(config, wd, state.results)


def _evaluate_export(config: ml_collections.ConfigDict, wd: pathlib.Path,
                     out: pathlib.Path) -> dict[str, Any]:
  """The exported teacher on the configured evaluation, into `out` (never over
  the run's own results)."""
  _, col = sources.load_triples(config, need_train_data=False)
  if col is None:
    raise config_lib.ConfigError("config.eval.collection is 'none': nothing to evaluate on")
  model, tokenizer, _ = models.load(str(wd / "export"), dtype=config.model.dtype,
                                    param_dtype=config.model.param_dtype,
                                    attention=config.model.attention,
                                    attention_chunk_mib=config.model.attention_chunk_mib,
                                    attention_unrolled_chunks=(
                                        config.model.attention_unrolled_chunks))
  out.mkdir(parents=True, exist_ok=True)
  results = {"trained": retrieval_eval.ModelEvaluator(config, col, tokenizer, out)(model,
                                                                                 "trained"),
             "steps": config.train.steps, "evaluation_of": str(wd)}
  print(f"{wd}: the trained teacher evaluated on another evaluation config, written to "
        f"{out}:", flush=True)
  job_lib.write_results(out, results)
  if jax.process_index() == 0:
    (out / "config.json").write_text(config.to_json(indent=2))
    table = results_table(results, config.eval.metrics)
    (out / "results.md").write_text(table + "\n")
    print(table, flush=True)
  return results


def _train(config: ml_collections.ConfigDict, wd: pathlib.Path, results: dict) -> dict[str, Any]:
  main_host = jax.process_index() == 0
  tc, tcfg = config.teacher, config.train
  data, col = sources.load_triples(config)     # before the model: a bad line fails fast
  model, tokenizer, _ = models.load_configured(config.model)
  parts, _, params, frozen = trainable.split_model(model, tcfg.trainable,
                                                   model.encoder.cfg.num_layers)
  batch_kw = dict(query_prefix=config.text.query_prefix, doc_prefix=config.text.doc_prefix,
                  query_max_length=tc.query_max_length, max_length=tcfg.max_length)

  counters = {"truncated_texts": 0}
  order = batching.BatchOrder(len(data), tcfg.batch_size, config.seed)
  capacities = job_lib.packing_budget(   # (make_batch counts truncations by deltas)
      config, lambda step, idx: batches.triple_masks(
          batches.triple_batch(tokenizer, [data[i] for i in idx], **batch_kw)), order)

  def make_batch(step: int, idx: np.ndarray) -> dict:
    del step
    truncated = tokenizer.total_truncated
    batch = batches.triple_batch(tokenizer, [data[i] for i in idx], capacities=capacities,
                                 **batch_kw)
    counters["truncated_texts"] += tokenizer.total_truncated - truncated
    return batch

  # On a mesh, jit with sharded inputs is all the step needs (batch rows over
  # `data`, parameters by `parallel.rules`): there is no per-pair solve.
  job = job_lib.TrainingJob(
      name="teacher", unit="triples", resume_keys=TRAIN_KEYS, parts=parts,
      initial=model, params=params, frozen=frozen,
      make_step=lambda tx, mesh, mode: step_lib.bind_teacher_step(parts, tx, tc.scoring,
                                                                   tc.temperature),
      make_batch=make_batch, order=order,
      pmap=False,
      make_evaluator=(lambda: retrieval_eval.ModelEvaluator(config, col, tokenizer, wd))
      if col is not None else None,
      before="pretrained", after="trained",
      counters=counters)
  trained, results = job_lib.train(job, config, wd, results)
  results["export"] = str(wd / "export")
  if main_host:
    weights.export_pretrained(trained, wd / "export", tokenizer=tokenizer, prompts={
        "query": config.text.query_prefix, "passage": config.text.doc_prefix})
  job_lib.write_results(wd, results)
  if main_host:
    if "trained" in results:
      table = results_table(results, config.eval.metrics)
      (wd / "results.md").write_text(table + "\n")
      print(table, flush=True)
    print(f"exported the teacher to {wd / 'export'}", flush=True)
  return results


def teacher_mode(config: ml_collections.ConfigDict, workdir: str, **_) -> dict:
  """`optical-jax --mode=teacher`."""
  return run(config, workdir)
