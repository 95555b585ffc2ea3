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
import orbax.checkpoint as ocp

from optical_jax import config as config_lib
from optical_jax import models
from optical_jax.data import batches
from optical_jax.data import batching
from optical_jax.data import sources
from optical_jax.evaluation import retrieval_eval
from optical_jax.models import weights
from optical_jax.training import checkpoint as checkpoint_lib
from optical_jax.training import job as job_lib
from optical_jax.training import step as step_lib
from optical_jax.training import trainable

log = logging.getLogger(__name__)


def results_table(results: dict, metrics: Sequence[str]) -> str:
  """Markdown: the starting checkpoint and the trained teacher, one column per metric."""
  lines = ["| model | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
  for key in ("pretrained", "trained"):
    if key in results:
      lines.append(f"| {key} | " + " | ".join(f"{results[key][m]:.4f}" for m in metrics) + " |")
  return "\n".join(lines)


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
  config_lib.check_teacher(config)
  wd = pathlib.Path(workdir)
  wd.mkdir(parents=True, exist_ok=True)
  main_host = jax.process_index() == 0
  results = job_lib.read_results(wd)
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
  data, col = sources.load_triples(config)     # before the model: a bad line fails fast
  model, tokenizer, _ = models.load_configured(config.model)
  parts, _, params, frozen = trainable.split_model(model, tcfg.trainable,
                                                   model.encoder.cfg.num_layers)
  batch_kw = dict(query_prefix=config.text.query_prefix, doc_prefix=config.text.doc_prefix,
                  query_max_length=tc.query_max_length, max_length=tcfg.max_length)

  def make_batch(step: int, idx: np.ndarray) -> dict:
    del step
    return batches.triple_batch(tokenizer, [data[i] for i in idx], **batch_kw)

  # On a mesh, jit with sharded inputs is all the step needs (batch rows over
  # `data`, parameters by `parallel.rules`): there is no per-pair solve.
  job = job_lib.TrainingJob(
      name="teacher", unit="triples", resume_keys=_RESUME_INVARIANT, parts=parts,
      initial=model, params=params, frozen=frozen,
      make_step=lambda tx, mesh, mode: step_lib.bind_teacher_step(parts, tx, tc.scoring,
                                                                   tc.temperature),
      make_batch=make_batch, order=batching.BatchOrder(len(data), tcfg.batch_size, config.seed),
      pmap=False,
      make_evaluator=(lambda: retrieval_eval.ModelEvaluator(config, col, tokenizer, wd))
      if col is not None else None,
      before="pretrained", after="trained",
      extra_log=lambda: {"truncated_texts": tokenizer.total_truncated})
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
