"""The index / search / evaluate / compare modes on a tiny model and collection."""
import json
import re

import numpy as np
import pytest

from optical_jax import config as config_lib
from optical_jax.data import trec
from optical_jax.evaluation import metrics as metrics_lib
from optical_jax.evaluation import significance
from optical_jax.jobs import retrieval as retrieval_modes
from optical_jax.search import encode as encode_lib
from optical_jax.training import setup as setup_lib

from tests import tiny_checkpoints
from tests.conftest import read_multilingual


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
  """A tiny teacher, a bitext file and a collection: sentence i's translation is doc i."""
  root = tmp_path_factory.mktemp("jobs")
  teacher = tiny_checkpoints.write_xlmr(root / "teacher")
  rows = read_multilingual()
  queries = [t for lang, t in rows if lang != "en"]
  docs = [f"{t} ({lang})" for lang, t in rows if lang != "en"]   # near-copies: findable
  (root / "queries.tsv").write_text("".join(f"q{i}\t{t}\n" for i, t in enumerate(queries)))
  (root / "corpus.tsv").write_text("".join(f"d{i}\t{t}\n" for i, t in enumerate(docs)))
  (root / "qrels.txt").write_text("".join(f"q{i} 0 d{i} 1\n" for i in range(len(queries))))
  (root / "pairs.tsv").write_text("".join(f"{q}\t{d}\n" for q, d in zip(queries, docs)))
  c = config_lib.default()
  c.model.teacher = str(teacher)
  c.data.update(source="files", format="tsv", path=str(root / "pairs.tsv"))
  c.eval.update(collection="files", queries=str(root / "queries.tsv"),
                corpus=str(root / "corpus.tsv"), qrels=str(root / "qrels.txt"), k=10)
  c.train.update(steps=2, batch_size=8, max_length=32, progress=False)
  c.ot.num_iterations = 5
  c.checkpoint.async_save = False
  c.lock()
  return c, root


def test_index_search_evaluate_compare(tiny_setup, tmp_path):
  config, root = tiny_setup
  wd = tmp_path / "wd"
  index = retrieval_modes.index_mode(config, str(wd))
  assert index.count == 13 and index.metadata["model_id"] == config.model.teacher
  run_path = retrieval_modes.search_mode(config, str(wd), query_encoder="teacher")
  run = trec.read_run(run_path)
  assert len(run) == 13 and all(len(d) == 10 for d in run.values())

  # The run equals a brute-force search with the same encoders.
  setup = setup_lib.prepare(config, need_train_data=False)
  q = encode_lib.encode_texts(setup.teacher, setup.tokenizer, list(setup.collection.queries.values()),
                             prefix="query: ", progress=False)
  d = encode_lib.encode_texts(setup.teacher, setup.tokenizer, list(setup.collection.docs.values()),
                             prefix="passage: ", progress=False)
  best = np.argsort(-(q @ d.T), axis=1, kind="stable")[:, 0]
  assert [max(run[f"q{i}"], key=run[f"q{i}"].get) for i in range(13)] == \
      [f"d{j}" for j in best]

  metrics = retrieval_modes.evaluate_mode(config, str(tmp_path / "ev"), runs=[str(run_path)])
  direct = metrics_lib.evaluate(trec.read_qrels(root / "qrels.txt"), run,
                                 config.eval.metrics)
  assert metrics["teacher"] == direct.aggregate

  # A run that ranks the relevant document first everywhere beats the teacher's.
  perfect = {f"q{i}": {f"d{i}": 2.0, **{f"d{j}": 1.0 / (j + 2) for j in range(13) if j != i}}
             for i in range(13)}
  trec.write_run(tmp_path / "perfect.run", perfect, tag="perfect")
  table = retrieval_modes.compare_mode(config, str(tmp_path / "cmp"),
                            runs=[str(run_path), str(tmp_path / "perfect.run")],
                            baseline="teacher")
  assert "perfect" in table and (tmp_path / "cmp" / "compare.md").exists()


def test_search_refuses_an_index_of_another_model(tiny_setup, tmp_path):
  config, _ = tiny_setup
  retrieval_modes.index_mode(config, str(tmp_path))
  info = json.loads((tmp_path / "index" / "index.json").read_text())
  info["metadata"]["model_id"] = "some-other-model"
  (tmp_path / "index" / "index.json").write_text(json.dumps(info))
  with pytest.raises(ValueError, match="does not match model 'some-other-model'"):
    retrieval_modes.search_mode(config, str(tmp_path), query_encoder="teacher")


def test_compare_needs_two_runs(tiny_setup, tmp_path):
  config, _ = tiny_setup
  with pytest.raises(ValueError, match="two or more"):
    retrieval_modes.compare_mode(config, str(tmp_path), runs=["a.run"])


def test_compare_per_language(tmp_path):
  """On `lang/id` queries compare adds a table per language, tested on its queries only:
  a run better on one language only is marked there and not on the other."""
  qrels = {f"{lang}/q{i}": {f"d{i}": 1} for lang in ("xx", "yy") for i in range(30)}
  rank = dict(zip(qrels, np.random.default_rng(0).integers(1, 6, len(qrels)).tolist()))
  (tmp_path / "qrels.txt").write_text(
      "".join(f"{q} 0 {d} 1\n" for q, rels in qrels.items() for d in rels))

  def run(first_in):   # the relevant document first in `first_in`, else at rank[q] (1-5)
    out = {}
    for q, rels in qrels.items():
      order = [f"n{j}" for j in range(9)]
      order.insert(0 if q.startswith(first_in) else rank[q], next(iter(rels)))
      out[q] = {d: 10.0 - j for j, d in enumerate(order)}
    return out

  trec.write_run(tmp_path / "base.run", run("none"), tag="base")
  trec.write_run(tmp_path / "better_xx.run", run("xx/"), tag="better_xx")
  table = retrieval_modes.compare_mode(
      config_lib.default(), str(tmp_path / "cmp"), qrels=str(tmp_path / "qrels.txt"),
      runs=[str(tmp_path / "base.run"), str(tmp_path / "better_xx.run")])
  overall, xx, yy = re.split(r"\n(?:xx|yy) \(30 queries\):\n", table)
  row = lambda t: next(l for l in t.splitlines() if l.startswith("| better_xx"))
  assert "60 queries" in overall and significance.SIGNIFICANT_MARK in row(overall)
  assert significance.SIGNIFICANT_MARK in row(xx) and "30 queries" in xx
  assert "(+0.0000)" in row(yy) and significance.SIGNIFICANT_MARK not in row(yy)
  assert (tmp_path / "cmp" / "compare.md").read_text() == table
