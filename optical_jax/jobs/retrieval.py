"""The retrieval modes of the CLI, as functions of (config, workdir, flags) a notebook can
call too.

  evaluate   metrics of --runs against qrels; without --runs, encode and
             evaluate the teacher zero-shot and the workdir's student
  export     the student as a Hugging Face directory
  index      encode the collection's documents with the teacher -> WORKDIR/index
  search     encode the queries, search the index -> WORKDIR/search/NAME.run
  compare    --runs against --baseline: metrics with significance marks
"""
from __future__ import annotations

import logging
import pathlib
from typing import Sequence

import ml_collections

from optical_jax import models
from optical_jax.data import layouts
from optical_jax.data import trec
from optical_jax.evaluation import metrics as metrics_lib
from optical_jax.evaluation import significance
from optical_jax.jobs import distill
from optical_jax.models import weights
from optical_jax.search import encode as encode_lib
from optical_jax.search import index as index_lib
from optical_jax.search import topk as topk_lib
from optical_jax.training import setup as setup_lib
from optical_jax.training import student as student_lib
from optical_jax.training import workdir as workdir_lib

log = logging.getLogger(__name__)


def _qrels(config, qrels_path: str | None):
  """--qrels if given, else the configured collection's."""
  if qrels_path:
    return trec.read_qrels(qrels_path)
  setup = setup_lib.prepare(config, need_train_data=False)
  if setup.collection is None:
    raise ValueError("no qrels: pass --qrels or configure eval.collection")
  return setup.collection.qrels


def _run_name(path: str) -> str:
  return pathlib.Path(path).stem


def evaluate_mode(config: ml_collections.ConfigDict, workdir: str, *,
                  runs: Sequence[str] = (), qrels: str | None = None, **_) -> dict:
  """Metrics of run files, or of the teacher zero-shot and the workdir's student.

  The workdir's evaluation on the configured collection goes to
  `evaluations/<digest>/` (never over the run's own eval/ and results), and is
  read back when it is there already.
  """
  wd = pathlib.Path(workdir)
  wd.mkdir(parents=True, exist_ok=True)
  if runs:
    judged = _qrels(config, qrels)
    results = {}
    for path in runs:
      res = metrics_lib.evaluate(judged, trec.read_run(path), config.eval.metrics)
      metrics_lib.write_metrics(wd / f"{_run_name(path)}.metrics.json", res)
      results[_run_name(path)] = dict(res.aggregate)
      print(f"{path}: " + ", ".join(f"{k} {v:.4f}" for k, v in res.aggregate.items()) +
            f" ({res.n_queries} judged queries)", flush=True)
    return results
  with workdir_lib.lock(wd):
    setup = setup_lib.prepare(config, need_train_data=False)
    out = wd / workdir_lib.EVALUATIONS / workdir_lib.digest(
        workdir_lib.record(config, distill.EVAL_KEYS))
    return distill.evaluate_stored(setup, wd, out,
                                   with_student=(wd / "checkpoints").exists())


def export_mode(config: ml_collections.ConfigDict, workdir: str, *,
                export_dir: str | None = None, **_) -> pathlib.Path:
  """The student of `workdir` as a Hugging Face directory (transformers, sentence-transformers)."""
  with workdir_lib.lock(workdir):
    return _export(config, workdir, export_dir)


def _export(config: ml_collections.ConfigDict, workdir: str, export_dir: str | None):
  teacher, tokenizer, _ = models.load(config.model.teacher)
  student = student_lib.restore_student(config, workdir, teacher)
  out = pathlib.Path(export_dir or pathlib.Path(workdir) / "student_hf")
  prompts = {"query": config.text.query_prefix, "passage": config.text.doc_prefix}
  weights.export_pretrained(student, out, tokenizer=tokenizer, prompts=prompts)
  print(f"exported the student to {out}", flush=True)
  return out


def index_mode(config: ml_collections.ConfigDict, workdir: str, **_) -> index_lib.Index:
  """Encodes the collection's documents with the teacher into WORKDIR/index."""
  with workdir_lib.lock(workdir):
    return _index(config, workdir)


def _index(config: ml_collections.ConfigDict, workdir: str) -> index_lib.Index:
  setup = setup_lib.prepare(config, need_train_data=False)
  if setup.collection is None:
    raise ValueError("config.eval.collection is 'none': no documents to index")
  docids = list(setup.collection.docs)

  def encode(texts):
    return encode_lib.encode_texts(setup.teacher, setup.tokenizer, texts,
                                  prefix=config.text.doc_prefix,
                                  batch_size=config.eval.batch_size,
                                  max_length=config.eval.max_length, progress=False)

  index = index_lib.build_index(
      encode, [setup.collection.docs[d] for d in docids], docids,
      pathlib.Path(workdir) / "index", batch_size=1024, dtype="float32", similarity="dot",
      metadata={"model_id": config.model.teacher, "prefix": config.text.doc_prefix},
      overwrite=True, progress=config.train.progress)
  print(f"indexed {index.count} documents into {index.path}", flush=True)
  return index


def search_mode(config: ml_collections.ConfigDict, workdir: str, *,
                query_encoder: str = "auto", **_) -> pathlib.Path:
  """Searches WORKDIR/index with the student (or the teacher) -> a TREC run."""
  with workdir_lib.lock(workdir):
    return _search(config, workdir, query_encoder)


def _search(config: ml_collections.ConfigDict, workdir: str, query_encoder: str) -> pathlib.Path:
  wd = pathlib.Path(workdir)
  index = index_lib.load_index(wd / "index")
  setup = setup_lib.prepare(config, need_train_data=False)
  if query_encoder == "auto":
    query_encoder = "student" if (wd / "checkpoints").exists() else "teacher"
  model = (student_lib.restore_student(config, workdir, setup.teacher)
           if query_encoder == "student" else setup.teacher)
  qids = list(setup.collection.queries)
  vecs = encode_lib.encode_texts(model, setup.tokenizer,
                                [setup.collection.queries[q] for q in qids],
                                prefix=config.text.query_prefix,
                                batch_size=config.eval.batch_size,
                                max_length=config.eval.max_length,
                                progress=config.train.progress)
  # The student is distilled from the teacher: its queries live in the space of
  # the teacher's documents, so the teacher's id is what the index must match.
  index_lib.check_compatible(index, vecs.shape[1], config.model.teacher)
  scores, idx = topk_lib.topk(vecs, index.embeddings, min(config.eval.k, index.count))
  run = topk_lib.to_run(scores, idx, qids, index.docids)
  out = wd / "search" / f"{query_encoder}.run"
  out.parent.mkdir(parents=True, exist_ok=True)
  trec.write_run(out, run, tag=query_encoder)
  print(f"wrote {out}", flush=True)
  if setup.collection.qrels:
    evaluate_mode(config, str(wd / "search"), runs=[str(out)], qrels=None)
  return out


def compare_mode(config: ml_collections.ConfigDict, workdir: str, *,
                 runs: Sequence[str] = (), baseline: str | None = None,
                 qrels: str | None = None, **_) -> str:
  """Markdown table of --runs against --baseline (a name or a path among --runs); on a
  multilingual collection (query ids `lang/id`) then one table per language, each
  tested on that language's queries alone."""
  if len(runs) < 2:
    raise ValueError("compare needs --runs with two or more run files")
  loaded = {_run_name(p): trec.read_run(p) for p in runs}
  if len(loaded) != len(runs):
    raise ValueError(f"two --runs share a file name: {list(runs)}")
  base = _run_name(baseline) if baseline else _run_name(runs[0])
  if base not in loaded:
    raise ValueError(f"--baseline {baseline!r} is not one of --runs {list(loaded)}")
  judged = _qrels(config, qrels)
  result = significance.compare(judged, loaded, base, config.eval.metrics, seed=config.seed)
  table = significance.markdown_table(result)
  for lang, lang_qrels in layouts.qrels_by_language(judged).items():
    # Each run cut to the language's queries: the others are not unjudged queries here.
    lang_runs = {name: {q: docs for q, docs in run.items() if q in lang_qrels}
                 for name, run in loaded.items()}
    result = significance.compare(lang_qrels, lang_runs, base, config.eval.metrics,
                                  seed=config.seed)
    table += f"\n{lang} ({result.n_queries} queries):\n\n" + significance.markdown_table(result)
  wd = pathlib.Path(workdir)
  wd.mkdir(parents=True, exist_ok=True)
  (wd / "compare.md").write_text(table)
  print(table, flush=True)
  return table
