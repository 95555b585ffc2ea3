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
teacher reads their translations from `eval.translated_queries`). Results are
named after the method that ran: `results[method]` and `eval/<method>.run` hold
its query encoder's evaluation (`results['zero_shot']`, `eval/zero_shot.run`
the teacher's), and `results['method']` says which it was.
"""
from __future__ import annotations

import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np

from optical_jax import config as config_lib
from optical_jax.core import losses as losses_lib
from optical_jax.data import batches
from optical_jax.data import collection as collection_lib
from optical_jax.data import sources
from optical_jax.data import tlm
from optical_jax.evaluation import retrieval_eval
from optical_jax.training import job as job_lib
from optical_jax.training import pretraining
from optical_jax.training import setup as setup_lib
from optical_jax.training import step as step_lib
from optical_jax.training import student as student_lib
from optical_jax.training import workdir as workdir_lib


# What a distillation run is (its workdir refuses another) and what it is evaluated on.
TRAIN_KEYS = ("seed", "method", "model", "text", "data", "loss", "ot", "pretrain", "train")
EVAL_KEYS = ("eval",)


def finished(results: dict, config: ml_collections.ConfigDict) -> bool:
  """Whether `results` are those of the finished run `config` describes."""
  if config.method in losses_lib.UNTRAINED:
    return config.method in results
  return results.get("steps") == config.train.steps and (
      config.method in results or config.eval.collection == "none")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Zero-shot evaluation, distillation (resuming if the workdir has a checkpoint), evaluation.

  A finished run rerun with the same config prints its results; with another
  evaluation it evaluates the stored student into `evaluations/<digest>/`; a
  workdir of another training config is refused (see `training/workdir.py`).

  Returns:
    {'zero_shot': metrics, <method>: metrics, 'method': str, 'steps': int}.
  """
  config_lib.check(config)
  with workdir_lib.lock(workdir) as wd:
    state = workdir_lib.check(wd, config, TRAIN_KEYS, EVAL_KEYS,
                              lambda results: finished(results, config))
    if state.status == "complete":
      print(f"{wd}: this run is complete ({state.results.get('steps', 0)} steps); its "
            "results:", flush=True)
      _write_results(state.results, config, wd, write=False)
      return state.results
    untrained = config.method in losses_lib.UNTRAINED
    setup = setup_lib.prepare(config, need_train_data=not untrained and state.status != "evaluate")
    if state.status == "evaluate":
      return evaluate_stored(setup, wd, state.eval_dir)
    workdir_lib.write_record(wd, config, TRAIN_KEYS, EVAL_KEYS)
    if untrained:
      return _evaluate_untrained(setup, wd)
    return _distill(setup, wd)


def _distill(setup: setup_lib.Setup, wd: pathlib.Path) -> dict[str, Any]:
  config = setup.config
  loss_cfg = config_lib.loss_config(config)
  tcfg = config.train
  teacher = setup.teacher
  layer_index = teacher.encoder.layer_index(loss_cfg.layer)
  if loss_cfg.extra_ot_layers:   # OT on several layers' tokens
    layer_index = (layer_index, *(teacher.encoder.layer_index(l)
                                  for l in loss_cfg.extra_ot_layers))
  # Student and teacher share one graph: the student is the teacher's architecture.
  teacher_parts, teacher_params, params, frozen, pretrain = student_lib.student_parameters(
      config, teacher, setup.directory, setup.tokenizer)
  switcher = sources.codeswitcher(config, setup.src, setup.tgt)
  host_rows = tcfg.batch_size // jax.process_count()

  counters = {"truncated_texts": 0}

  def build(step: int, idx: np.ndarray, capacities: dict[str, int] | None) -> dict:
    src = [setup.src[i] for i in idx]
    if switcher is not None:   # a function of (seed, example, epoch): resumes identically
      first = step * tcfg.batch_size + jax.process_index() * host_rows
      epochs = (first + np.arange(len(idx))) // len(setup.src)
      src, _ = switcher.switch_batch(src, idx, epochs)
    batch = batches.pair_batch(
        setup.tokenizer, src, [setup.tgt[i] for i in idx],
        src_prefix=config.text.src_prefix, tgt_prefix=config.text.tgt_prefix,
        max_length=tcfg.max_length, batch_size=len(idx),
        student_reads_tgt=loss_cfg.both_sides)
    if pretrain is not None and pretrain.cfg.tlm_weight:
      batch = tlm.add_tlm_inputs(batch, pad_id=setup.tokenizer.pad_id,
                                 max_length=pretrain.cfg.tlm_max_length)
    # Every side's pack index, the TLM pair's too (the MLM pass reuses 'src_pack').
    return batches.with_packs(batch, batches.pair_masks(batch), capacities)

  # (Truncations in the sampled batches count when those steps run: make_batch
  # counts deltas.)
  capacities = job_lib.packing_budget(
      config, lambda step, idx: batches.pair_masks(build(step, idx, None)), setup.order)

  def make_batch(step: int, idx: np.ndarray) -> dict:
    truncated = setup.tokenizer.total_truncated
    batch = build(step, idx, capacities)
    counters["truncated_texts"] += setup.tokenizer.total_truncated - truncated
    return batch

  def make_evaluator():
    if setup.collection is None:
      return None
    return retrieval_eval.RetrievalEvaluator(config, setup.collection, teacher,
                                             setup.tokenizer, wd)

  job = job_lib.TrainingJob(
      name="distill", unit="pairs", resume_keys=TRAIN_KEYS,
      parts=teacher_parts, initial=teacher, params=params, frozen=frozen,
      fixed=(teacher_params,),
      make_step=lambda tx, mesh, mode: step_lib.bind_distill_step(
          teacher_parts, teacher_parts, loss_cfg, tx, layer_index, pretrain, mesh=mesh,
          mode=mode),
      templates=((pretraining.HEAD_PREFIX, pretrain.head_parts.templates),) if pretrain else (),
      make_batch=make_batch, order=setup.order,
      make_evaluator=make_evaluator if setup.collection is not None else None,
      before="zero_shot" if config.eval.zero_shot else "", after=config.method,
      counters=counters)
  results = job_lib.read_results(wd)
  report = getattr(setup.order, "report", None)
  if report is not None:   # a language mix: what the run will see
    results["mix"] = {"target": report.target_languages, "realised": report.languages}
  _, results = job_lib.train(job, config, wd, results)
  results["method"] = config.method
  results["data"] = dict(setup.report.get("train", {}), **counters)
  if "eval" in setup.report:
    results["eval_data"] = setup.report["eval"]
  _write_results(results, config, wd)
  return results


def _write_results(results: dict, config: ml_collections.ConfigDict, wd: pathlib.Path, *,
                   write: bool = True) -> None:
  """results.json and results.md (unless not `write`), and the table printed."""
  if write:
    job_lib.write_results(wd, results)
  if jax.process_index() == 0 and config.method in results:
    table = results_table(results, config.eval.metrics)
    if write:
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


def _evaluate_untrained(setup: setup_lib.Setup, wd: pathlib.Path) -> dict[str, Any]:
  """`zero_shot` / `translate_query`: the teacher encodes the queries or their
  translations; nothing is trained."""
  config = setup.config
  if setup.collection is None:
    raise config_lib.ConfigError(f"config.method={config.method!r} only evaluates: it needs "
                                 "config.eval.collection")
  evaluator = retrieval_eval.RetrievalEvaluator(config, setup.collection, setup.teacher,
                                                setup.tokenizer, wd)
  results: dict[str, Any] = {"method": config.method, "steps": 0,
                             "eval_data": setup.report.get("eval", {})}
  if config.method == "zero_shot":
    results["zero_shot"] = evaluator(setup.teacher, "zero_shot")
  else:
    queries = read_translations(config.eval.translated_queries, evaluator.qids)
    if config.eval.zero_shot:
      results["zero_shot"] = evaluator(setup.teacher, "zero_shot")
    results[config.method] = evaluator(setup.teacher, config.method, queries=queries)
  _write_results(results, config, wd)
  return results


# How results tables name a method's query encoder.
METHOD_LABELS = {"optical": "OPTICAL student", "zero_shot": "teacher, zero-shot",
                 "translate_query": "teacher, translated queries"}


def results_table(results: dict, metrics) -> str:
  """Markdown: one row per query encoder, one column per metric."""
  cols = list(metrics) + ["query_spread_cos"]
  lines = ["| query encoder | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
  method = results["method"]
  names = {"zero_shot": "teacher, zero-shot",
           method: METHOD_LABELS.get(method, f"{method} student")}
  for key, label in names.items():
    if key in results:
      lines.append(f"| {label} | " + " | ".join(f"{results[key][c]:.4f}" for c in cols) + " |")
  return "\n".join(lines)


def evaluate_stored(setup: setup_lib.Setup, wd: pathlib.Path, out: pathlib.Path, *,
                    with_student: bool = True) -> dict[str, Any]:
  """The workdir's query encoder (its student, or the teacher for an untrained
  method) evaluated on `setup`'s collection, written to `out` beside the run's
  own results (never over them): out/config.json, eval/*, results.json, .md.
  Without `with_student` only the teacher is (a workdir with no checkpoint)."""
  config = setup.config
  if setup.collection is None:
    raise config_lib.ConfigError("config.eval.collection is 'none': nothing to evaluate on")
  out.mkdir(parents=True, exist_ok=True)
  evaluator = retrieval_eval.RetrievalEvaluator(config, setup.collection, setup.teacher,
                                                setup.tokenizer, out)
  results: dict[str, Any] = {"method": config.method, "evaluation_of": str(wd),
                             "eval_data": setup.report.get("eval", {})}
  if config.eval.zero_shot or config.method == "zero_shot" or not with_student:
    results["zero_shot"] = evaluator(setup.teacher, "zero_shot")
  if config.method == "translate_query":
    queries = read_translations(config.eval.translated_queries, evaluator.qids)
    results[config.method] = evaluator(setup.teacher, config.method, queries=queries)
  elif config.method not in losses_lib.UNTRAINED and with_student:
    student = student_lib.restore_student(config, str(wd), setup.teacher)
    results[config.method] = evaluator(student, config.method)
  print(f"{wd}: evaluated on the configured evaluation, written to {out}:", flush=True)
  if jax.process_index() == 0:
    (out / "config.json").write_text(config.to_json(indent=2))
  _write_results(results, config, out)
  return results
