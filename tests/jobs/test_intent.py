"""MTOP intent detection: the softmax head, the label vocabulary, and the job end to end."""
import collections
import json
import pathlib

import numpy as np
import pytest

from optical_jax import config as config_lib
from optical_jax import models
from optical_jax.core import probe
from optical_jax.data import layouts
from optical_jax.data import mtop
from optical_jax.jobs import intent
from optical_jax.research import grid
from optical_jax.search import encode as encode_lib
from optical_jax.training import student as student_lib

from tests import defaults
from tests import tiny_checkpoints

MTOP = layouts.SAMPLES / "mtop"


def fixture_rows(lang: str, split: str) -> list[tuple[str, str, str]]:
  """(id, intent, utterance) of a fixture file, read with nothing but `split`."""
  lines = (MTOP / "mtop" / lang / f"{split}.txt").read_text(encoding="utf-8").splitlines()
  return [(f[0], f[1], f[3]) for f in (line.split("\t") for line in lines if line.strip())]


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


# ------------------------------------------------------------------ the classifier


def gaussian_clusters(seed: int, n_per_class: int, dim: int = 16, classes: int = 5):
  """Separable clusters (centres 6 noise std apart on average) on a narrow cone of
  unit vectors, as e5's pooled vectors are: mean cosine between any two ~0.8."""
  rng = np.random.default_rng(seed)
  centres = np.random.default_rng(123).normal(0.0, 3.0, (classes, dim))
  labels = np.repeat(np.arange(classes), n_per_class)
  x = centres[labels] + rng.normal(size=(len(labels), dim))
  x[:, 0] += 25.0
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


@pytest.mark.parametrize("hidden,scaling", [(0, "global"), (16, "global"), (0, "feature")])
def test_head_separates_gaussian_clusters(hidden, scaling):
  x, y = gaussian_clusters(0, 40)
  x_test, y_test = gaussian_clusters(1, 100)
  cos = x_test @ x_test.T
  assert cos[~np.eye(len(x_test), dtype=bool)].mean() > 0.7
  cfg = defaults.head_config(hidden=hidden, lr=1e-2, epochs=20, batch_size=32, scaling=scaling)
  params = probe.train_classifier(x, y, cfg, seed=0)
  assert probe.accuracy(probe.predict(params, x_test), y_test) > 0.97
  # Trained: far below the uniform prediction's cross-entropy log(5).
  assert float(probe.cross_entropy(params, x_test, y_test)) < 0.3 * np.log(5)
  # What the head sees of the training vectors: centred, variance 1 on average
  # ('global') or in every feature ('feature').
  seen = (x - params["mean"]) * params["inv_std"]
  np.testing.assert_allclose(seen.mean(0), 0.0, atol=1e-4)
  var = seen.var(0)
  # (up to the epsilon that keeps a constant feature finite)
  np.testing.assert_allclose(var.mean() if scaling == "global" else var, 1.0, rtol=1e-2)


def numpy_cross_entropy(params, x, y, w):
  h = (x - params["mean"]) * params["inv_std"]
  for layer in params["layers"][:-1]:
    h = np.maximum(h @ layer["w"] + layer["b"], 0.0)
  z = h @ params["layers"][-1]["w"] + params["layers"][-1]["b"]
  z = z.astype(np.float64)
  log_norm = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
  nll = log_norm - z[np.arange(len(y)), y]
  return float((nll * w).sum() / w.sum())


@pytest.mark.parametrize("hidden", [0, 3])
def test_cross_entropy_matches_numpy(hidden):
  rng = np.random.default_rng(7)
  d, c, n = 5, 4, 6
  sizes = [d] + ([hidden] if hidden else []) + [c]
  params = {"mean": rng.normal(size=d).astype(np.float32),
            "inv_std": rng.uniform(0.5, 2.0, d).astype(np.float32),
            "layers": [{"w": rng.normal(size=(a, b)).astype(np.float32),
                        "b": rng.normal(size=b).astype(np.float32)}
                       for a, b in zip(sizes[:-1], sizes[1:])]}
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = rng.integers(0, c, n)
  w = np.array([1.0, 0.0, 2.0, 1.0, 0.5, 0.0], np.float32)
  ones = np.ones(n, np.float32)
  np.testing.assert_allclose(float(probe.cross_entropy(params, x, y)),
                             numpy_cross_entropy(params, x, y, ones), rtol=1e-5)
  np.testing.assert_allclose(float(probe.cross_entropy(params, x, y, w)),
                             numpy_cross_entropy(params, x, y, w), rtol=1e-5)
  # The predictions are the argmax of the same logits.
  z = np.asarray(probe.logits(params, x))
  np.testing.assert_array_equal(probe.predict(params, x), z.argmax(1))


def test_head_training_is_deterministic_in_the_seed():
  x, y = gaussian_clusters(0, 10)
  cfg = defaults.head_config(hidden=8, lr=1e-2, epochs=3, batch_size=16)
  a, b = (probe.train_classifier(x, y, cfg, seed=3) for _ in range(2))
  c = probe.train_classifier(x, y, cfg, seed=4)
  flat = lambda p: np.concatenate([np.ravel(l[k]) for l in p["layers"] for k in ("w", "b")])
  np.testing.assert_array_equal(flat(a), flat(b))
  assert not np.array_equal(flat(a), flat(c))


def test_bad_labels_and_unknowns():
  x = np.zeros((3, 2), np.float32)
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
    probe.train_classifier(x, np.array([0, 1, 2]), defaults.head_config(), 0, num_classes=2)
  with pytest.raises(ValueError, match=r"labels must lie"):
    probe.train_classifier(x, np.array([0, probe.UNKNOWN, 1]), defaults.head_config(), 0)
  predicted, labels = np.array([0, 1, 2, 1]), np.array([0, probe.UNKNOWN, 2, 0])
  assert probe.accuracy(predicted, labels) == 2 / 4
  assert probe.accuracy(predicted, labels, exclude_unknown=True) == 2 / 3
  with pytest.raises(ValueError, match="no utterances to score with an intent"):
    probe.accuracy(predicted[1:2], labels[1:2], exclude_unknown=True)


# ------------------------------------------------------------------ data


def test_reading_and_label_vocabulary(data_dir):
  train = mtop.read_mtop("en", "train", data_dir=str(data_dir), manual_dir=str(MTOP))
  rows = fixture_rows("en", "train")
  assert train.ids == tuple(r[0] for r in rows)
  assert train.intents == tuple(r[1] for r in rows)
  assert train.texts == tuple(r[2] for r in rows)
  vocab = mtop.label_vocab(train.intents)
  assert vocab == tuple(sorted({r[1] for r in rows})) and len(vocab) == 4
  assert len(mtop.read_mtop("de", "test", data_dir=str(data_dir), manual_dir=str(MTOP),
                              limit=1)) == 1

  # The fixture's eval split has only intents the training split lacks, its test split none.
  for split, n_unknown in (("eval", 2), ("test", 0)):
    utts = mtop.read_mtop("de", split, data_dir=str(data_dir), manual_dir=str(MTOP))
    labels, unknown = mtop.encode_labels(utts.intents, vocab)
    gold = [r[1] for r in fixture_rows("de", split)]
    expected = collections.Counter(i for i in gold if i not in vocab)
    assert unknown == dict(expected)
    assert int((labels == probe.UNKNOWN).sum()) == sum(expected.values()) == n_unknown
    assert [vocab[l] for l, g in zip(labels, gold) if l >= 0] == [g for g in gold if g in vocab]
  labels, unknown = mtop.encode_labels(["IN:B", "IN:X", "IN:A", "IN:X"], ("IN:A", "IN:B"))
  assert labels.tolist() == [1, probe.UNKNOWN, 0, probe.UNKNOWN] and unknown == {"IN:X": 2}


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
