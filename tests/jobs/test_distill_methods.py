"""`config.method`: the distilled baselines, the untrained ones, and the document cache."""
import json
import pathlib

import numpy as np
import pytest

from optical_jax import config as config_lib
from optical_jax import models
from optical_jax.core import losses
from optical_jax.data import batches
from optical_jax.data import trec
from optical_jax.evaluation import metrics as metrics_lib
from optical_jax.jobs import distill
from optical_jax.search import encode as encode_lib
from optical_jax.training import checkpoint
from optical_jax.training import student as student_lib

from tests import tiny_checkpoints
from tests.conftest import read_multilingual


def _config(tmp_path: pathlib.Path, method: str, **eval_kw):
  """A tiny teacher, multilingual bitext, and a collection: each sentence's
  English translation is its relevant document."""
  teacher = tmp_path / "teacher"
  if not teacher.exists():
    tiny_checkpoints.write_xlmr(teacher)
  rows = read_multilingual()
  english = [t for lang, t in rows if lang == "en"]
  (tmp_path / "pairs.tsv").write_text(
      "".join(f"{t}\t{english[i % len(english)]}\n" for i, (_, t) in enumerate(rows)))
  queries = [t for lang, t in rows if lang != "en"][:6]
  (tmp_path / "queries.tsv").write_text("".join(f"q{i}\t{t}\n" for i, t in enumerate(queries)))
  (tmp_path / "corpus.tsv").write_text("".join(f"d{i}\t{t}\n" for i, t in enumerate(english)))
  (tmp_path / "qrels.txt").write_text(
      "".join(f"q{i} 0 d{i % len(english)} 1\n" for i in range(len(queries))))
  c = config_lib.default()
  c.method = method
  c.model.teacher = str(teacher)
  c.data.update(source="files", format="tsv", path=str(tmp_path / "pairs.tsv"))
  c.eval.update(collection="files", queries=str(tmp_path / "queries.tsv"),
                corpus=str(tmp_path / "corpus.tsv"), qrels=str(tmp_path / "qrels.txt"),
                metrics=("nDCG@10", "MRR@10"), k=10, batch_size=8, max_length=32, **eval_kw)
  c.train.update(steps=3, batch_size=8, max_length=32, log_every=1, progress=False)
  c.ot.num_iterations = 5
  c.checkpoint.update(every_steps=10, async_save=False)
  c.lock()
  return c


@pytest.mark.parametrize("method", sorted(losses.METHODS))
def test_each_method_trains_with_its_terms(tmp_path, method):
  c = _config(tmp_path, method)
  results = distill.run(c, str(tmp_path / "wd"))
  assert results["method"] == method and results["steps"] == 3
  records = [json.loads(l) for l in (tmp_path / "wd" / "metrics.jsonl").read_text().splitlines()]
  steps = [r for r in records if "loss" in r]
  terms = {"ot": "loss_ot", "mse": "loss_mse", "token_mse": "loss_token_mse"}
  for term, key in terms.items():   # its terms are logged, the others are not computed
    assert all((key in r) == (term in losses.METHODS[method]) for r in steps), (term, steps[0])
  assert all(np.isfinite(r["loss"]) for r in steps)
  # The student moved: its run differs from the teacher's.
  student = (tmp_path / "wd" / "eval" / f"{method}.run").read_text()   # named after it
  assert student != (tmp_path / "wd" / "eval" / "zero_shot.run").read_text()


def test_kd_mse_batches_carry_the_english_side_for_the_student(tmp_path):
  tok = models.load(str(tiny_checkpoints.write_xlmr(tmp_path / "t")))[1]
  b = batches.pair_batch(tok, ["moni"], ["hello there"], src_prefix="query: ",
                       tgt_prefix="passage: ", max_length=16, batch_size=2,
                       student_reads_tgt=True)
  want = tok.encode(["hello there"], prefix="query: ", max_length=16, batch_size=2)
  n = want.ids.shape[1]
  np.testing.assert_array_equal(b["stu_tgt_ids"][:, :n], want.ids)
  assert b["stu_tgt_ids"].shape == b["tgt_ids"].shape


def test_zero_shot_trains_nothing_and_reports_the_teacher(tmp_path):
  c = _config(tmp_path, "zero_shot")
  results = distill.run(c, str(tmp_path / "wd"))
  assert results["method"] == "zero_shot" and results["steps"] == 0
  assert set(results) == {"method", "steps", "zero_shot"}
  assert not (tmp_path / "wd" / "checkpoints").exists()
  assert sorted(p.name for p in (tmp_path / "wd" / "eval").iterdir()) == [
      "zero_shot.json", "zero_shot.run"]


def test_translate_query_evaluates_the_teacher_on_the_translations(tmp_path):
  c = _config(tmp_path, "translate_query")
  with pytest.raises(config_lib.ConfigError, match="eval.translated_queries"):
    distill.run(c, str(tmp_path / "wd"))
  english = [t for lang, t in read_multilingual() if lang == "en"]
  translations = tmp_path / "translated.tsv"
  translations.write_text("".join(f"q{i}\t{english[i % len(english)]}\n" for i in range(5)))
  with c.unlocked():
    c.eval.translated_queries = str(translations)
  with pytest.raises(config_lib.ConfigError, match=r"no translation of 1 .*q5"):
    distill.run(c, str(tmp_path / "wd"))
  translations.write_text("".join(f"q{i}\t{english[i % len(english)]}\n" for i in range(6)))
  results = distill.run(c, str(tmp_path / "wd"))
  # Independently: the teacher encodes the translations and the corpus itself.
  model, tok, _ = models.load(c.model.teacher)
  q = encode_lib.encode_texts(model, tok, [english[i % len(english)] for i in range(6)],
                             prefix="query: ", batch_size=8, max_length=32, progress=False)
  d = encode_lib.encode_texts(model, tok, english, prefix="passage: ", batch_size=8,
                             max_length=32, progress=False)
  scores = q @ d.T
  run = {f"q{i}": {f"d{j}": float(scores[i, j]) for j in range(len(english))} for i in range(6)}
  qrels = trec.read_qrels(c.eval.qrels)
  want = metrics_lib.evaluate(qrels, run, ("nDCG@10", "MRR@10")).aggregate
  for m in ("nDCG@10", "MRR@10"):
    assert results["translate_query"][m] == pytest.approx(want[m], abs=1e-6)
  assert "zero_shot" in results


def test_unknown_method_is_a_config_error(tmp_path):
  c = config_lib.default()
  c.method = "kd_msee"
  with pytest.raises(config_lib.ConfigError, match="config.method='kd_msee'"):
    config_lib.check(c)
  c.method, c.loss.token_mse_weight = "kd_token", 0.0
  with pytest.raises(config_lib.ConfigError, match="loss.token_mse_weight, which is 0"):
    config_lib.check(c)


def test_document_vectors_are_cached_by_content(tmp_path):
  model, tok, _ = models.load(str(tiny_checkpoints.write_xlmr(tmp_path / "t")))
  texts = ["one document", "another, longer document", "third"]
  kw = dict(prefix="passage: ", batch_size=4, max_length=16, progress=False)
  first = encode_lib.encode_texts_cached(tmp_path / "cache", model, tok, texts, **kw)
  files = list((tmp_path / "cache").glob("vectors-*.npy"))
  assert len(files) == 1
  np.testing.assert_array_equal(first, encode_lib.encode_texts(model, tok, texts, **kw))
  np.save(files[0], np.zeros_like(first))          # a second call reads the file
  assert not encode_lib.encode_texts_cached(tmp_path / "cache", model, tok, texts, **kw).any()
  # Other texts, another prefix, or other weights: another entry.
  encode_lib.encode_texts_cached(tmp_path / "cache", model, tok, texts[:2], **kw)
  encode_lib.encode_texts_cached(tmp_path / "cache", model, tok, texts,
                                **dict(kw, prefix="query: "))
  other = models.load(str(tiny_checkpoints.write_xlmr(tmp_path / "t2", seed=1)))[0]
  encode_lib.encode_texts_cached(tmp_path / "cache", other, tok, texts, **kw)
  assert len(list((tmp_path / "cache").glob("vectors-*.npy"))) == 4


def test_mlm_and_tlm_train_beside_any_method_and_resume(tmp_path):
  c = _config(tmp_path, "kd_token")
  with c.unlocked():
    c.pretrain.update(mlm_weight=1.0, tlm_weight=0.5)
  results = distill.run(c, str(tmp_path / "wd"))
  records = [json.loads(l) for l in (tmp_path / "wd" / "metrics.jsonl").read_text().splitlines()]
  steps = [r for r in records if "loss" in r]
  for r in steps:   # the total is every term at its weight
    want = r["loss_contrastive"] + r["loss_token_mse"] + r["loss_mlm"] + 0.5 * r["loss_tlm"]
    assert r["loss"] == pytest.approx(want, rel=1e-5)
    assert 0 <= r["mlm_accuracy"] <= 1
  assert results["steps"] == 3
  # The LM head is part of the checkpointed student state, and restores.
  student = student_lib.restore_student(c, str(tmp_path / "wd"))
  ckpt = checkpoint.Checkpointer(tmp_path / "wd")
  saved = ckpt.manager.restore(ckpt.latest_step())["state"]["params"]
  ckpt.close()
  assert any(k.startswith("mlm_head/") for k in saved)
  assert student is not None
  # A bad pretrain value names its key.
  with c.unlocked():
    c.pretrain.mask_rate = 1.5
  with pytest.raises(config_lib.ConfigError, match="config.pretrain.*mask_rate"):
    config_lib.check(c)
