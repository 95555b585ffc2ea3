"""The distill job's methods (`config.method`): each distilled baseline trains with exactly its
terms, the untrained ones evaluate the teacher, and MLM / TLM train beside any method."""
import json
import os
import pathlib
import signal

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
from optical_jax.training import loop as loop_lib
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


def test_english_side_adds_the_student_s_english_to_the_ot_term(tmp_path):
  first_ot = {}
  for side in ("off", "on"):
    c = _config(tmp_path, "optical")
    with c.unlocked():
      c.loss.english_side = side
      c.train.steps = 1
    distill.run(c, str(tmp_path / side))
    step = next(r for r in _train_records(tmp_path / side) if "loss_ot" in r)
    first_ot[side] = step["loss_ot"]
  # Same batch, same starting student: 'on' adds the OT of the student's reading of the
  # English ("query: " prefix) against the teacher's ("passage: "), which is not zero.
  assert first_ot["on"] > first_ot["off"] > 0


def test_zero_shot_trains_nothing_and_reports_the_teacher(tmp_path):
  c = _config(tmp_path, "zero_shot")
  results = distill.run(c, str(tmp_path / "wd"))
  assert results["method"] == "zero_shot" and results["steps"] == 0
  assert set(results) == {"method", "steps", "zero_shot", "eval_data"}
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


def _train_records(workdir) -> list[dict]:
  """The train records of metrics.jsonl without the throughput (a wall-clock rate)."""
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [{k: v for k, v in r.items() if not k.endswith("_per_s")}
          for r in records if r["kind"] == "train"]


def _saved(workdir) -> tuple[int, dict[str, np.ndarray]]:
  """(step, trainable parameters) of the latest checkpoint."""
  ckpt = checkpoint.Checkpointer(workdir)
  step = ckpt.latest_step()
  saved = ckpt.manager.restore(step)["state"]["params"]
  ckpt.close()
  return step, {k: np.asarray(v) for k, v in saved.items()}


def test_mlm_and_tlm_train_beside_any_method_and_resume(tmp_path, monkeypatch):
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
  step, saved = _saved(tmp_path / "wd")
  assert step == 3 and any(k.startswith("mlm_head/") for k in saved)
  assert student is not None

  # Interrupted: a SIGTERM arrives while step 2 is being built (as a preemption notice
  # would); the job finishes that step, saves it, and exits. The same command resumes
  # and must end where the uninterrupted run ended, LM head included.
  built = []
  pair_batch = batches.pair_batch

  def term_in_step_two(*args, **kwargs):
    built.append(1)
    if len(built) == 2:
      handler = signal.getsignal(signal.SIGTERM)   # the loop's guard, never the default
      assert isinstance(getattr(handler, "__self__", None), checkpoint.PreemptionGuard)
      os.kill(os.getpid(), signal.SIGTERM)
    return pair_batch(*args, **kwargs)

  monkeypatch.setattr(batches, "pair_batch", term_in_step_two)
  resumed = tmp_path / "resumed"
  with pytest.raises(loop_lib.Preempted, match="stopped by SIGTERM after step 2"):
    distill.run(c, str(resumed))
  assert _saved(resumed)[0] == 2
  built.clear()
  monkeypatch.setattr(batches, "pair_batch", lambda *a, **kw: built.append(1) or
                      pair_batch(*a, **kw))
  again = distill.run(c, str(resumed))
  assert len(built) == 1                     # step 3 only: steps 1 and 2 came from the checkpoint
  # Every value the steps computed, equal; not `truncated_texts`, the tokenizer's count
  # since its process loaded it (the resumed process never saw steps 1 and 2's texts).
  computed = lambda wd: [{k: v for k, v in r.items() if k != "truncated_texts"}
                         for r in _train_records(wd)]
  assert computed(resumed) == computed(tmp_path / "wd")
  assert [r["step"] for r in _train_records(resumed)] == [1, 2, 3]
  step_b, params_b = _saved(resumed)
  assert step_b == 3 and params_b.keys() == saved.keys()
  for k in saved:
    np.testing.assert_allclose(params_b[k], saved[k], atol=1e-6, err_msg=k)
  assert again["kd_token"] == pytest.approx(results["kd_token"], abs=1e-9)

  # A bad pretrain value names its key.
  with c.unlocked():
    c.pretrain.mask_rate = 1.5
  with pytest.raises(config_lib.ConfigError, match="config.pretrain.*mask_rate"):
    config_lib.check(c)


@pytest.mark.parametrize("method, pretrain, sides, length", [
    ("kd_mse", {}, ("src", "tgt", "stu_tgt"), 64),   # kd_mse: the student reads English too
    # MLM and TLM: at 32 tokens a side the TLM pair fits the tiny model's 64 positions.
    ("optical", {"mlm_weight": 1.0, "tlm_weight": 0.5}, ("src", "tgt", "tlm"), 32)])
def test_token_packing_in_the_job_changes_cost_not_results(tmp_path, monkeypatch, capsys,
                                                           method, pretrain, sides, length):
  built = []
  with_packs = batches.with_packs
  monkeypatch.setattr(batches, "with_packs",
                      lambda *a, **kw: built.append(with_packs(*a, **kw)) or built[-1])
  losses_by_mode = {}
  for mode in ("off", "on"):
    c = _config(tmp_path, method)
    if length < 64:   # 3 pairs in 4 cut to five words a side: padding to skip
      pairs = tmp_path / "pairs.tsv"
      rows = [line.split("\t") for line in pairs.read_text().splitlines()]
      pairs.write_text("".join(
          "\t".join(t if i % 4 == 3 else " ".join(t.split()[:5]) for t in row) + "\n"
          for i, row in enumerate(rows)))
    with c.unlocked():
      c.train.update(max_length=length, token_packing=mode)   # these texts leave padding
      c.parallel.use_mesh = "no"
      c.pretrain.update(pretrain)
    built.clear()
    distill.run(c, str(tmp_path / mode))
    packed = [b for b in built if "src_pack" in b]
    if mode == "on":
      said = [l for l in capsys.readouterr().out.splitlines() if l.startswith("token packing:")]
      assert len(said) == 1 and all(f" {s} " in said[0] for s in sides), said
      assert packed and all(f"{s}_pack" in b for b in packed for s in sides)
    else:
      assert not packed
    losses_by_mode[mode] = [r["loss"] for r in _train_records(tmp_path / mode)]
  np.testing.assert_allclose(losses_by_mode["on"], losses_by_mode["off"], rtol=1e-4)


def test_token_packing_on_a_mesh_or_misspelt_is_a_config_error(tmp_path):
  c = _config(tmp_path, "optical")
  with c.unlocked():
    c.train.token_packing = "on"
    c.parallel.use_mesh = "yes"     # the tests' 8 CPU devices
  with pytest.raises(config_lib.ConfigError, match="token_packing='on' needs the step on one"):
    distill.run(c, str(tmp_path / "mesh"))
  with c.unlocked():
    c.train.token_packing = "yes"
  with pytest.raises(config_lib.ConfigError, match="train.token_packing='yes'"):
    config_lib.check(c)
