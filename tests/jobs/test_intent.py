"""The MTOP intent job (jobs/intent.py): its block's checks, zero-shot and distilled encoders
scored end to end, deterministic, and as an experiment job."""
import collections
import json
import pathlib

import numpy as np
import pytest

from optical_jax import config as config_lib
from optical_jax import models
from optical_jax.core import probe
from optical_jax.jobs import intent
from optical_jax.research import grid
from optical_jax.search import encode as encode_lib
from optical_jax.training import student as student_lib

from tests import tiny_checkpoints
from tests.mtop_sample import MTOP, fixture_rows


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """One prepared copy of the fixture for the whole module (preparing takes a while)."""
  return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
  return tiny_checkpoints.write_xlmr(tmp_path_factory.mktemp("teacher"))


def job_config(teacher_dir, data_dir, *, method="zero_shot", **intent_fields):
  c = config_lib.default()
  c.method = method
  c.model.teacher = str(teacher_dir)
  c.eval.batch_size = 4
  c.eval.collection = "none"
  c.train.progress = False
  # 4 training utterances: a handful of full-batch steps at a high rate fit them.
  c.data.tfds_dir = str(data_dir)
  c.intent.update(dict(dict(manual_dir=str(MTOP), languages=("en", "de"), max_length=32,
                            epochs=30, batch_size=4, lr=0.05), **intent_fields))
  return c


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("key,value,match", [
    ("languages", ("en", "xx"), r"config\.intent\.languages"),
    ("languages", ("en",), r"config\.intent\.languages.*other than train_lang"),
    ("train_lang", "jp", r"config\.intent\.train_lang"),
    ("eval_split", "dev", r"config\.intent\.eval_split"),
    ("unknown_intents", "drop", r"config\.intent\.unknown_intents"),
    ("hidden", -1, r"config\.intent\.hidden=-1"),
    ("scaling", "minmax", r"config\.intent\.scaling='minmax'"),
    ("lr", 0.0, r"config\.intent\.lr=0\.0"),
    ("epochs", 0, r"config\.intent\.epochs"),
    ("batch_size", 0, r"config\.intent\.batch_size"),
    ("max_length", 0, r"config\.intent\.max_length"),
    ("max_eval", -1, r"config\.intent\.max_eval"),
])
def test_check_block_names_the_key(key, value, match):
  c = config_lib.default()
  intent.check_block(c)
  c.intent[key] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    intent.check_block(c)


# ------------------------------------------------------------------ the job


def read_tsv(path):
  lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
  assert lines[0] == "id\tgold\tpredicted"
  return [tuple(line.split("\t")) for line in lines[1:]]


def test_zero_shot_job_end_to_end_and_deterministic(tmp_path, teacher_dir, data_dir):
  c = job_config(teacher_dir, data_dir)
  results = intent.run(c, str(tmp_path / "a"))
  out = tmp_path / "a" / "intent"
  assert json.loads((out / "results.json").read_text()) == results
  assert set(results["zero_shot"]) == {"accuracy", "accuracy/en", "accuracy/de"}
  assert results["method"] == "zero_shot" and "steps" not in results   # nothing distilled
  assert results["zero_shot"]["accuracy"] == results["zero_shot"]["accuracy/de"]
  assert results["head"]["train_accuracy"] == 1.0     # 4 points, 32 dimensions
  assert results["intents"] == sorted({r[1] for r in fixture_rows("en", "train")})
  assert not (tmp_path / "a" / "checkpoints").exists()

  for lang in ("en", "de"):
    rows = read_tsv(out / "predictions" / "zero_shot" / f"{lang}.tsv")
    gold = fixture_rows(lang, "test")
    assert [r[:2] for r in rows] == [g[:2] for g in gold]
    assert {r[2] for r in rows} <= set(results["intents"])
    # The metric is what the file says, recounted here.
    correct = np.mean([r[1] == r[2] for r in rows])
    assert results["zero_shot"][f"accuracy/{lang}"] == pytest.approx(correct)
    assert intent.read_predictions(out / "predictions" / "zero_shot" / f"{lang}.tsv") == {
        i: (g, p) for i, g, p in rows}
  table = (out / "results.md").read_text()
  assert "| teacher, zero-shot |" in table and "| en (head trained) | de |" in table
  assert "student" not in table

  again = intent.run(c, str(tmp_path / "b"))
  assert again == results
  for lang in ("en", "de"):
    name = f"predictions/zero_shot/{lang}.tsv"
    assert (tmp_path / "b" / "intent" / name).read_text() == (out / name).read_text()


def test_unknown_intents_are_counted_and_reported(tmp_path, teacher_dir, data_dir):
  # Every eval utterance of the fixture has an intent the training split lacks.
  c = job_config(teacher_dir, data_dir, eval_split="eval", epochs=1)
  results = intent.run(c, str(tmp_path))
  for lang in ("en", "de"):
    expected = collections.Counter(r[1] for r in fixture_rows(lang, "eval"))
    assert results["data"][lang]["unknown_intents"] == dict(expected)
    assert results["data"][lang]["unknown_utterances"] == sum(expected.values()) == 2
    assert results["zero_shot"][f"accuracy/{lang}"] == 0.0   # scored as errors
  assert "| de | 2 | 2 | 2 |" in (tmp_path / "intent" / "results.md").read_text()

  with c.unlocked():
    c.intent.unknown_intents = "exclude"
  with pytest.raises(ValueError, match=r"MTOP en eval: no utterances to score with an intent"):
    intent.run(c, str(tmp_path / "exclude"))


def test_distilled_student_is_scored(tmp_path, teacher_dir, data_dir, monkeypatch):
  c = job_config(teacher_dir, data_dir, method="optical")
  c.data.update(source="bible", max_pairs=8)
  # A high rate: two steps must move the student visibly away from the teacher.
  c.train.update(steps=2, batch_size=4, max_length=16, lr=1e-2, warmup_frac=0.0, log_every=1)
  c.ot.num_iterations = 5
  c.parallel.use_mesh = "no"
  c.checkpoint.async_save = False
  calls = []
  score = intent.score
  monkeypatch.setattr(intent, "score",
                      lambda *args: calls.append(args) or score(*args))
  students = []
  restore = student_lib.restore_student
  monkeypatch.setattr(student_lib, "restore_student",
                      lambda *args: students.append(restore(*args)) or students[-1])

  results = intent.run(c, str(tmp_path))
  assert results["steps"] == 2 and (tmp_path / "checkpoints").is_dir()
  assert set(results["optical"]) == {"accuracy", "accuracy/en", "accuracy/de"}   # the method's
  (params, _, teacher_x, data, _), (params2, _, student_x, _, _) = calls
  assert params2 is params   # one head for both encoders
  # The student's vectors are the restored checkpoint's, not the teacher's.
  _, tokenizer, _ = models.load(str(teacher_dir))
  de = data["de"].texts
  ours = encode_lib.encode_texts(students[0], tokenizer, de, prefix=c.text.query_prefix,
                                batch_size=4, max_length=32, progress=False)
  np.testing.assert_allclose(student_x["de"], ours, atol=1e-5)
  assert np.abs(student_x["de"] - teacher_x["de"]).max() > 1e-3
  rows = read_tsv(tmp_path / "intent" / "predictions" / "optical" / "de.tsv")
  vocab = results["intents"]
  assert [r[2] for r in rows] == [vocab[i] for i in probe.predict(params, student_x["de"])]
  table = (tmp_path / "intent" / "results.md").read_text()
  assert "| student (optical) |" in table


def test_runs_as_an_experiment_job(tmp_path, teacher_dir, data_dir):
  c = job_config(teacher_dir, data_dir, epochs=5)
  c.experiment.update(grid=[("linear", {}), ("hidden", {"intent.hidden": 8})],
                      job="optical_jax.jobs.intent:run",
                      metrics=("accuracy", "accuracy/en", "accuracy/de"))
  c.lock()
  summary = grid.run_grid(c, tmp_path)
  for cell in ("linear", "hidden"):
    done = json.loads((tmp_path / "cells" / cell / "seed0" / "done.json").read_text())
    job = json.loads((tmp_path / "cells" / cell / "seed0" / "intent" / "results.json").read_text())
    assert done["metrics"] == job["zero_shot"]      # the cells' method: zero_shot
    assert summary.cells[cell].mean["accuracy/de"] == job["zero_shot"]["accuracy/de"]
  assert "| linear (baseline) | 1 |" in (tmp_path / "results.md").read_text()


def test_untrained_methods_other_than_zero_shot_are_refused(teacher_dir, data_dir, tmp_path):
  c = job_config(teacher_dir, data_dir, method="translate_query")
  with pytest.raises(config_lib.ConfigError, match=r"config\.method='translate_query'"):
    intent.run(c, str(tmp_path))
