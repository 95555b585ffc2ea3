"""The teacher job (jobs/teacher.py): it trains, evaluates, resumes, exports what
transformers loads, stops on NaN, and names bad input."""
import json
import re

import numpy as np
import pytest

from optical_jax import config as config_lib
from optical_jax import models
from optical_jax.data import batches as batches_lib
from optical_jax.data import bitext
from optical_jax.jobs import teacher
from optical_jax.search import encode as encode_lib
from optical_jax.training import checkpoint
from optical_jax.training import state as state_lib
from optical_jax.training import trainable as trainable_lib

from tests import repo
from tests import tiny_checkpoints
from tests import numpy_references
from tests.numpy_references import unit as _unit


def _teacher_config(arg=None):
  return repo.load_config("configs/teacher.py", arg)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  return tiny_checkpoints.write_xlmr(tmp_path_factory.mktemp("tiny") / "xlmr")


# ----------------------------------------------------------------------------
# Bad input.

def test_a_bad_config_stops_the_job_before_its_workdir(tmp_path):
  bad = _teacher_config("smoke")
  with bad.unlocked():
    bad.teacher.scoring = "dence"
  with pytest.raises(config_lib.ConfigError, match=r"config\.teacher\.scoring='dence'"):
    teacher.run(bad, str(tmp_path / "never"))
  assert not (tmp_path / "never").exists()


def test_a_bad_triples_line_is_named(tmp_path):
  path = tmp_path / "triples.tsv"
  path.write_text("what is a dog\ta dog is an animal\ta cat is an animal\n"
                  "two columns only\there\n")
  c = _teacher_config()
  with c.unlocked():
    c.teacher.triples = str(path)
  with pytest.raises(bitext.BitextError, match=re.escape(f"{path}:2: expected 3")):
    teacher.run(c, str(tmp_path / "wd"))


# ----------------------------------------------------------------------------
# The job.

def _smoke(tiny_dir, steps=4, **overrides):
  c = _teacher_config("smoke")
  with c.unlocked():
    c.model.teacher = str(tiny_dir)
    c.train.update(steps=steps, progress=False, schedule="constant", warmup_frac=0.0,
                   lr=1e-3)
    c.checkpoint.async_save = False
    for key, value in overrides.items():
      block, field = key.split(".")
      c[block][field] = value
  return c


def _train_records(wd):
  return [r for r in map(json.loads, (wd / "metrics.jsonl").read_text().splitlines())
          if r["kind"] == "train"]


def test_job_trains_evaluates_resumes_and_exports(tiny_dir, tmp_path, monkeypatch):
  wd = tmp_path / "wd"
  results = teacher.run(_smoke(tiny_dir, steps=4), str(wd))   # on the suite's 8-device mesh
  assert results["steps"] == 4
  for name in ("pretrained", "trained"):
    assert set(results[name]) == {"nDCG@10", "MRR@10", "R@10"}
    assert all(0.0 <= v <= 1.0 for v in results[name].values())
    assert len((wd / "eval" / f"{name}.run").read_text().splitlines()) == 32 * 10
  assert "| pretrained |" in (wd / "results.md").read_text()
  first = _train_records(wd)
  assert [r["step"] for r in first] == [1, 2, 3, 4]
  assert all(np.isfinite(r["loss"]) for r in first)

  # The export is the checkpoint's model: loaded by models.load, it embeds as
  # the restored checkpoint does, and as PyTorch transformers does (mean pooling).
  model, tokenizer, _ = models.load(str(tiny_dir))
  parts, params = trainable_lib.ModelParts.split(model)
  cfg = _smoke(tiny_dir).train
  tx, _ = state_lib.make_optimizer(cfg)
  trainable, _ = trainable_lib.split_trainable(params, cfg.trainable, 2)
  ckpt = checkpoint.Checkpointer(wd)
  state, _ = ckpt.restore(state_lib.init_state(trainable, tx, 0))
  ckpt.close()
  assert int(state.step) == 4
  trained = parts.merge(params, state.params)
  exported, ex_tok, _ = models.load(str(wd / "export"))
  texts = ["And God said", "Let there be light: and there was light."]
  kw = dict(prefix="passage: ", max_length=32, progress=False)
  ours = encode_lib.encode_texts(trained, tokenizer, texts, **kw)
  theirs = encode_lib.encode_texts(exported, ex_tok, texts, **kw)
  np.testing.assert_allclose(theirs, ours, atol=1e-5)
  assert np.abs(ours - encode_lib.encode_texts(model, tokenizer, texts, **kw)).max() > 1e-4
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  hf = transformers.AutoModel.from_pretrained(str(wd / "export")).eval()
  batch = ex_tok.encode(texts, prefix="passage: ", max_length=32)
  with torch.no_grad():
    h = hf(input_ids=torch.tensor(batch.ids, dtype=torch.long),
           attention_mask=torch.tensor(batch.mask)).last_hidden_state.numpy()
  m = batch.mask[..., None]
  np.testing.assert_allclose(_unit((h * m).sum(1) / m.sum(1)), ours, atol=1e-4)

  # Run again with more steps: it continues from step 4 (records 1-4 kept),
  # and ends where an uninterrupted 6-step run ends.
  batches = []
  triple_batch = batches_lib.triple_batch
  monkeypatch.setattr(batches_lib, "triple_batch", lambda *a, **k: batches.append(1) or
                      triple_batch(*a, **k))
  resumed = teacher.run(_smoke(tiny_dir, steps=6), str(wd))
  assert len(batches) == 2                 # steps 5 and 6 only
  assert resumed["steps"] == 6 and resumed["pretrained"] == results["pretrained"]
  records = _train_records(wd)
  assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
  assert records[:4] == first
  straight = tmp_path / "straight"
  teacher.run(_smoke(tiny_dir, steps=6, **{"eval.collection": "none"}), str(straight))
  np.testing.assert_allclose([r["loss"] for r in _train_records(straight)],
                             [r["loss"] for r in records], rtol=1e-4)
  a, _, _ = models.load(str(wd / "export"))
  b, _, _ = models.load(str(straight / "export"))
  np.testing.assert_allclose(encode_lib.encode_texts(a, ex_tok, texts, **kw),
                             encode_lib.encode_texts(b, ex_tok, texts, **kw), atol=1e-5)
  # Done: a third run trains nothing and changes nothing.
  batches.clear()
  assert teacher.run(_smoke(tiny_dir, steps=6), str(wd)) == resumed
  assert not batches
  other = _smoke(tiny_dir, steps=6, **{"teacher.temperature": 0.1})
  with pytest.raises(config_lib.ConfigError,
                     match=r"another training config: config\.teacher\.temperature \(0\.05 there"):
    teacher.run(other, str(wd))


def test_token_packing_in_the_teacher_job(tiny_dir, tmp_path, capsys):
  losses = {}
  for mode in ("off", "on"):
    c = _smoke(tiny_dir, steps=2, **{"parallel.use_mesh": "no", "train.token_packing": mode,
                                     "eval.collection": "none", "train.max_length": 64,
                                     "teacher.query_max_length": 32})   # room to pad
    teacher.run(c, str(tmp_path / mode))
    out = capsys.readouterr().out
    assert ("token packing: q " in out) == (mode == "on"), out[-2000:]
    losses[mode] = [r["loss"] for r in _train_records(tmp_path / mode)]
  np.testing.assert_allclose(losses["on"], losses["off"], rtol=1e-4)


def test_late_interaction_job_and_nan_stop(tiny_dir, tmp_path):
  c = _smoke(tiny_dir, steps=2, **{"teacher.scoring": "late_interaction",
                                   "teacher.temperature": 1.0, "parallel.use_mesh": "no"})
  results = teacher.run(c, str(tmp_path / "late"))
  assert all(0.0 <= v <= 1.0 for v in results["trained"].values())
  bad = _smoke(tiny_dir, steps=6, **{"train.lr": 1e30, "train.clip_norm": 0.0,
                                     "eval.collection": "none", "parallel.use_mesh": "no"})
  with pytest.raises(FloatingPointError, match=r"loss became (nan|inf) at step \d+"):
    teacher.run(bad, str(tmp_path / "nan"))


@pytest.mark.real_model
def test_smoke_config_on_the_embedded_model(tmp_path, monkeypatch):
  """The smoke config trains e5-small: on the batches it trained on, the InfoNCE loss
  (a numpy loop over the vectors the encoders give) is lower with the exported model
  than with the pretrained one; the first logged loss is that of the pretrained
  model; the trained evaluation is a run of its own."""
  c = _teacher_config("smoke")
  with c.unlocked():
    c.train.steps = 2
    c.train.progress = False
    c.parallel.use_mesh = "no"      # one device, as on a laptop
  seen = []
  triple_batch = batches_lib.triple_batch

  def record(tokenizer, data, **kw):
    if "capacities" in kw:   # a step's batch (token packing also samples the first ones)
      seen.append(list(data))
    return triple_batch(tokenizer, data, **kw)

  monkeypatch.setattr(batches_lib, "triple_batch", record)
  wd = tmp_path / "wd"
  results = teacher.run(c, str(wd))
  # e5-small already retrieves: most keyword queries find their verse.
  assert results["pretrained"]["MRR@10"] > 0.4
  assert (wd / "export" / "model.safetensors").exists()
  assert all(0.0 <= v <= 1.0 for v in results["trained"].values())
  assert (wd / "eval" / "trained.run").read_text() != (wd / "eval" / "pretrained.run").read_text()

  assert len(seen) == 2 and all(len(batch) == c.train.batch_size for batch in seen)
  pretrained, tokenizer, _ = models.load(c.model.teacher)
  trained, _, _ = models.load(str(wd / "export"))
  kw = dict(batch_size=8, progress=False)

  def infonce(model, batch):
    q = encode_lib.encode_texts(model, tokenizer, [t.query for t in batch],
                                prefix=c.text.query_prefix,
                                max_length=c.teacher.query_max_length, **kw)
    p, n = (encode_lib.encode_texts(model, tokenizer, texts, prefix=c.text.doc_prefix,
                                    max_length=c.train.max_length, **kw)
            for texts in ([t.positive for t in batch], [t.negative for t in batch]))
    return numpy_references.triple_loss(q, None, p, None, n, None, "dense",
                                        c.teacher.temperature, np.ones(len(batch), bool))[0]

  before = [infonce(pretrained, batch) for batch in seen]
  after = [infonce(trained, batch) for batch in seen]
  losses = [r["loss"] for r in _train_records(wd)]
  assert len(losses) == 2
  np.testing.assert_allclose(losses[0], before[0], rtol=1e-3)
  assert np.mean(after) < np.mean(before), (before, after)
