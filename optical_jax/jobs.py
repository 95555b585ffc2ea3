"""The CLI's modes, as functions of (config, workdir) a notebook can call too."""
from __future__ import annotations

import json
import logging
import pathlib

import ml_collections

from optical_jax import distill
from optical_jax.models import weights

log = logging.getLogger(__name__)


def distill_mode(config: ml_collections.ConfigDict, workdir: str, **_) -> dict:
  return distill.run(config, workdir)


def evaluate_mode(config: ml_collections.ConfigDict, workdir: str, **_) -> dict:
  """Zero-shot, and the student of `workdir` when it has a checkpoint."""
  setup = distill.prepare(config, need_train_data=False)
  if setup.collection is None:
    raise ValueError("config.eval.collection is 'none': nothing to evaluate on")
  wd = pathlib.Path(workdir)
  evaluator = distill.RetrievalEvaluator(setup, wd)
  results = {"zero_shot": evaluator(setup.teacher, "zero_shot")}
  if (wd / "checkpoints").exists():
    student = distill.restore_student(config, workdir, setup.teacher)
    results["optical"] = evaluator(student, "optical")
  (wd / "evaluate.json").write_text(json.dumps(results, indent=2))
  print(distill.results_table(results, config.eval.metrics), flush=True)
  return results


def export_mode(config: ml_collections.ConfigDict, workdir: str, *,
                export_dir: str | None = None, **_) -> pathlib.Path:
  """The student of `workdir` as a Hugging Face directory (transformers, sentence-transformers)."""
  from optical_jax import models  # pylint: disable=g-import-not-at-top
  teacher, tokenizer, _ = models.load(config.model.teacher)
  student = distill.restore_student(config, workdir, teacher)
  out = pathlib.Path(export_dir or pathlib.Path(workdir) / "student_hf")
  prompts = {"query": config.text.query_prefix, "passage": config.text.doc_prefix}
  weights.export_pretrained(student, out, tokenizer=tokenizer, prompts=prompts)
  print(f"exported the student to {out}", flush=True)
  return out


MODES = {"distill": distill_mode, "evaluate": evaluate_mode, "export": export_mode}
