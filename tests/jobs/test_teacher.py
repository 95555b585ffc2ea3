"""Teacher training: the objective against numpy, the step, the Bible triples, the job."""
import functools
import importlib.util
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optical_jax import config as config_lib
from optical_jax import models
from optical_jax.core import losses
from optical_jax.data import batches as batches_lib
from optical_jax.data import bible
from optical_jax.data import bible_triples
from optical_jax.data import bitext
from optical_jax.data import triples as triples_lib
from optical_jax.jobs import teacher
from optical_jax.search import encode as encode_lib
from optical_jax.training import checkpoint
from optical_jax.training import state as state_lib
from optical_jax.training import step as step_lib
from optical_jax.training import trainable as trainable_lib

from tests import tiny_checkpoints
from tests.conftest import read_multilingual

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _teacher_config(arg=None):
  spec = importlib.util.spec_from_file_location("teacher_config",
                                                os.path.join(REPO, "configs", "teacher.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  return tiny_checkpoints.write_xlmr(tmp_path_factory.mktemp("tiny") / "xlmr")


# ----------------------------------------------------------------------------
# The objective, against a plain numpy InfoNCE.

def _unit(x):
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _numpy_loss(q, qm, p, pm, n, nm, scoring, temperature, valid):
  docs = np.concatenate([p, n])
  dmasks = None if pm is None else np.concatenate([pm, nm])
  b = len(q)
  s = np.zeros((b, 2 * b))
  for i in range(b):
    for j in range(2 * b):
      if scoring == "dense":
        s[i, j] = _unit(q[i]) @ _unit(docs[j])
      else:   # ColBERT MaxSim over the real tokens only
        qi = _unit(q[i])[qm[i].astype(bool)]
        dj = _unit(docs[j])[dmasks[j].astype(bool)]
        s[i, j] = (qi @ dj.T).max(axis=1).sum()
  cols = np.concatenate([valid, valid])
  losses = []
  for i in np.flatnonzero(valid):
    z = s[i, cols] / temperature
    label = int(cols[:i].sum())        # column i among the kept columns
    top = z.max()
    losses.append(top + np.log(np.exp(z - top).sum()) - z[label])
  return float(np.mean(losses)), s


@pytest.mark.parametrize("scoring,temperature", [("dense", 0.05), ("late_interaction", 0.7)])
def test_triple_loss_matches_numpy(scoring, temperature):
  rng = np.random.default_rng(0)
  b, lq, ld, d = 5, 4, 6, 8
  shape_q, shape_d = ((b, d), (b, d)) if scoring == "dense" else ((b, lq, d), (b, ld, d))
  q, p, n = (rng.normal(size=s).astype(np.float32) for s in (shape_q, shape_d, shape_d))
  # Padding: ragged lengths. Padded positions hold random vectors that would
  # add to (query side) or win (document side) MaxSim if the masks were ignored.
  qm = (np.arange(lq)[None] < rng.integers(1, lq + 1, b)[:, None]).astype(np.int32)
  pm = (np.arange(ld)[None] < rng.integers(1, ld + 1, b)[:, None]).astype(np.int32)
  nm = (np.arange(ld)[None] < rng.integers(1, ld + 1, b)[:, None]).astype(np.int32)
  valid = np.array([True, True, False, True, True])
  masks = ({} if scoring == "dense" else
           dict(query_mask=jnp.asarray(qm), positive_mask=jnp.asarray(pm),
                negative_mask=jnp.asarray(nm)))
  loss, metrics = losses.triple_loss(jnp.asarray(q), jnp.asarray(p), jnp.asarray(n),
                                      scoring=scoring, temperature=temperature,
                                      valid=jnp.asarray(valid), **masks)
  want, s = _numpy_loss(q, qm, p, pm, n, nm, scoring, temperature, valid)
  np.testing.assert_allclose(float(loss), want, rtol=1e-4)
  own = np.arange(b)[valid]
  np.testing.assert_allclose(float(metrics["pos_score"]), s[own, own].mean(), rtol=1e-4)
  np.testing.assert_allclose(float(metrics["hard_neg_score"]), s[own, own + b].mean(),
                             rtol=1e-4)
  kept = s[:, np.concatenate([valid, valid])]
  hits = [np.argmax(kept[i]) == int(valid[:i].sum()) for i in own]
  np.testing.assert_allclose(float(metrics["accuracy"]), np.mean(hits), rtol=1e-6)
  # Without `valid`, every row counts.
  all_rows, _ = losses.triple_loss(jnp.asarray(q), jnp.asarray(p), jnp.asarray(n),
                                    scoring=scoring, temperature=temperature, **masks)
  np.testing.assert_allclose(float(all_rows), _numpy_loss(q, qm, p, pm, n, nm, scoring,
                                                          temperature, np.ones(b, bool))[0],
                             rtol=1e-4)


# ----------------------------------------------------------------------------
# The step.

def _fixture_triples(k=8):
  english = [t for lang, t in read_multilingual()]
  out = []
  for i in range(k):
    words = english[i].split()
    half = max(1, len(words) // 2)
    out.append(triples_lib.Triple(" ".join(words[:half]), " ".join(words[half:]) or words[0],
                                  english[(i + 1) % k], f"fixture:{i}"))
  return out


@pytest.mark.parametrize("scoring", ["dense", "late_interaction"])
def test_steps_lower_the_loss_on_a_fixed_batch(tiny_dir, scoring):
  model, tokenizer, _ = models.load(str(tiny_dir))
  parts, params = trainable_lib.ModelParts.split(model)
  cfg = config_lib.default().train
  cfg.update(lr=3e-3, warmup_frac=0.0, schedule="constant", steps=12)
  tx, _ = state_lib.make_optimizer(cfg)
  temperature = 0.05 if scoring == "dense" else 1.0
  step = jax.jit(functools.partial(step_lib.teacher_step, parts=parts, tx=tx, scoring=scoring,
                                   temperature=temperature))
  data = _fixture_triples()
  batch = batches_lib.triple_batch(tokenizer, data, query_prefix="query: ", doc_prefix="passage: ",
                             query_max_length=32, max_length=32)
  state = state_lib.init_state(jax.tree.map(jnp.array, params), tx, 0)
  losses = []
  for _ in range(cfg.steps):
    state, metrics = step(state, {}, batch)
    losses.append(float(metrics["loss"]))
  if scoring == "dense":
    # The first loss is InfoNCE of the starting model's vectors, encoded here
    # by the inference path (its own padding and batching).
    kw = dict(batch_size=8, max_length=32, progress=False)
    qv = encode_lib.encode_texts(model, tokenizer, [t.query for t in data], prefix="query: ",
                                **kw)
    pv = encode_lib.encode_texts(model, tokenizer, [t.positive for t in data],
                                prefix="passage: ", **kw)
    nv = encode_lib.encode_texts(model, tokenizer, [t.negative for t in data],
                                prefix="passage: ", **kw)
    want, _ = _numpy_loss(qv, None, pv, None, nv, None, "dense", temperature,
                          np.ones(len(data), bool))
    np.testing.assert_allclose(losses[0], want, rtol=1e-3)
  assert losses[-1] < 0.5 * losses[0], losses
  assert float(metrics["accuracy"]) > 0.5


# ----------------------------------------------------------------------------
# Triples from the Bible.

def test_bible_keyword_triples_from_verses():
  def verse(book, ch, v, en):
    number = ("Genesis", "Exodus").index(book) + 1
    return bible.VersePair(number * 1_000_000 + ch * 1_000 + v, book, ch, v, "ny", en)
  pairs = [verse("Genesis", 1, 1, "Eden walked with Adam in God"),
           verse("Genesis", 1, 2, "God saw"),
           verse("Genesis", 1, 3, "And God called Eden good"),
           verse("Genesis", 2, 1, "alone in its chapter with God"),
           verse("Exodus", 1, 1, "Moses walked with God"),
           verse("Exodus", 1, 2, "Aaron")]
  train, col = bible_triples.build(pairs, heldout_books=("exodus",), query_words=2)
  # Verses holding each word: adam 1, eden 2, walked 2, in 2, god 5, and 1,
  # called 1. Queries keep the verse's word order; "God saw" is too short to
  # be a query but is a neighbour; Genesis 2 has one verse, so no negative.
  assert [(t.query, t.positive, t.negative, t.origin) for t in train] == [
      ("Eden Adam", pairs[0].en, "God saw", "Genesis 1:1"),
      ("And called", pairs[2].en, "God saw", "Genesis 1:3")]   # the last verse: previous
  assert dict(col.queries) == {"q-02001001": "Moses walked"}
  assert dict(col.docs) == {"d-02001001": "Moses walked with God", "d-02001002": "Aaron"}
  assert col.qrels == {"q-02001001": {"d-02001001": 1}}


# ----------------------------------------------------------------------------
# Config.

def test_config_errors_name_the_key(tmp_path):
  c = _teacher_config("smoke")
  config_lib.check_teacher(c)
  with pytest.raises(AttributeError):
    c.teacher.scorign = "dense"          # locked: a typo is no new field
  bad = _teacher_config("smoke")
  with bad.unlocked():
    bad.teacher.scoring = "dence"
  with pytest.raises(config_lib.ConfigError, match=r"config\.teacher\.scoring='dence'"):
    teacher.run(bad, str(tmp_path / "never"))
  assert not (tmp_path / "never").exists()
  with bad.unlocked():                   # unlocked (a notebook): still an error
    bad.teacher.scoring = "dense"
    bad.teacher.scorign = "dense"
  with pytest.raises(config_lib.ConfigError, match=r"config\.teacher\.scorign: unknown key"):
    config_lib.check_teacher(bad)
  for key, value, pattern in (("temperature", 0.0, "temperature"),
                              ("max_pairs", -1, "max_pairs"), ("format", "csv", "format")):
    c = _teacher_config("smoke")
    with c.unlocked():
      c.teacher[key] = value
    with pytest.raises(config_lib.ConfigError, match=rf"config\.teacher\.{pattern}"):
      config_lib.check_teacher(c)
  with pytest.raises(config_lib.ConfigError, match=r"config\.teacher\.triples is empty"):
    config_lib.check_teacher(_teacher_config())     # the default needs the user's triples
  with pytest.raises(ValueError, match="'smoke'"):
    _teacher_config("huge")
  missing = config_lib.default()
  del missing["teacher"]
  with pytest.raises(config_lib.ConfigError, match=r"config\.teacher is missing"):
    config_lib.check_teacher(missing)


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
  with pytest.raises(config_lib.ConfigError, match=r"different config\.teacher"):
    teacher.run(other, str(wd))


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
def test_smoke_config_on_the_embedded_model(tmp_path):
  c = _teacher_config("smoke")
  with c.unlocked():
    c.train.steps = 2
    c.train.progress = False
    c.parallel.use_mesh = "no"      # one device, as on a laptop
  results = teacher.run(c, str(tmp_path / "wd"))
  # e5-small already retrieves: most keyword queries find their verse.
  assert results["pretrained"]["MRR@10"] > 0.4
  assert (tmp_path / "wd" / "export" / "model.safetensors").exists()
