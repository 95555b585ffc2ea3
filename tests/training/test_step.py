"""The pure steps (training/step.py) on a tiny model: the distillation and teacher steps
lower their loss, frozen parts stay, bf16 activations keep a float32 OT solve."""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optical_jax import config as config_lib
from optical_jax import models
from optical_jax.data import batches
from optical_jax.data import tlm
from optical_jax.data import triples as triples_lib
from optical_jax.models import tokenizer as tokenizer_lib
from optical_jax.models import weights
from optical_jax.search import encode as encode_lib
from optical_jax.training import pretraining
from optical_jax.training import state as state_lib
from optical_jax.training import step as step_lib
from optical_jax.training import trainable as trainable_lib

from tests import defaults
from tests import numpy_references
from tests import tiny_checkpoints
from tests.conftest import read_multilingual


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  return tiny_checkpoints.write_xlmr(tmp_path_factory.mktemp("xlmr") / "ckpt")


@pytest.fixture(scope="module")
def tiny(tiny_dir):
  return weights.load_pretrained(str(tiny_dir)), tokenizer_lib.Tokenizer.from_pretrained(tiny_dir)


def _train_cfg(**kw):
  c = config_lib.default().train
  c.update(kw)
  return c


def test_steps_reduce_the_loss_and_respect_frozen_parts(tiny, multilingual_texts):
  teacher, tok = tiny
  parts, params = trainable_lib.ModelParts.split(teacher)
  pred = trainable_lib.trainable_predicate("no_word_embeddings", teacher.encoder.cfg.num_layers)
  trainable = {k: v for k, v in params.items() if pred(k)}
  frozen = {k: v for k, v in params.items() if not pred(k)}
  assert set(frozen) == {"encoder/embeddings/word/embedding"}
  before = {k: np.asarray(v) for k, v in params.items()}
  tcfg = _train_cfg(steps=12, lr=1e-2, warmup_frac=0.0, schedule="constant")
  tx, _ = state_lib.make_optimizer(tcfg)
  loss_cfg = defaults.loss_config(ot=defaults.ot_config(num_iterations=20))
  step = step_lib.jit_distill_step(parts, parts, loss_cfg, tx, layer_index=-1 % 3)
  state = state_lib.init_state(jax.tree.map(jnp.array, trainable), tx, seed=0)
  src, tgt = multilingual_texts[2:10], multilingual_texts[:8]
  batch = batches.pair_batch(tok, src, tgt, src_prefix="query: ", tgt_prefix="passage: ",
                              max_length=32, batch_size=8)
  history = []
  for _ in range(12):
    state, m = step(state, frozen, params, batch)
    history.append(float(m["loss"]))
  assert all(np.isfinite(history))
  assert history[-1] < 0.8 * history[0], history
  assert int(state.step) == 12
  for k, v in params.items():   # the teacher (and the frozen part) never move
    np.testing.assert_array_equal(np.asarray(v), before[k])
  moved = [k for k in trainable if not np.allclose(np.asarray(state.params[k]), before[k])]
  assert len(moved) == len(trainable)


def _assert_same_updates(before, padded, packed):
  """Each parameter's update (after - before) equal to 1e-4 of its size: gradients that
  sum over every token (token types, LayerNorm) add the tokens in another order."""
  for k in before:
    d_pad = np.asarray(padded[k]) - np.asarray(before[k])
    d_pack = np.asarray(packed[k]) - np.asarray(before[k])
    np.testing.assert_allclose(d_pack, d_pad, rtol=0, err_msg=k,
                               atol=1e-4 * float(np.abs(d_pad).max()) + 1e-8)


def _assert_packed_equals_padded(step, trainable, tx, frozen, params, padded, packed, keys):
  """Two distill steps from the same start on each batch: `keys` of the metrics equal
  to 2e-5, the updates as `_assert_same_updates`."""
  results = []
  for batch in (padded, packed):
    state = state_lib.init_state(jax.tree.map(jnp.array, trainable), tx, seed=0)
    for _ in range(2):
      state, metrics = step(state, frozen, params, batch)
    results.append((state, metrics))
  (s_pad, m_pad), (s_pack, m_pack) = results
  for key in keys:
    if key in m_pad:
      np.testing.assert_allclose(float(m_pack[key]), float(m_pad[key]), rtol=2e-5, err_msg=key)
  _assert_same_updates(trainable, s_pad.params, s_pack.params)


@pytest.mark.parametrize("method", ["optical", "kd_mse"])
def test_packed_step_equals_padded_step(tiny, multilingual_texts, method):
  """Token packing (models/packing.py) changes the step's cost, not its result."""
  teacher, tok = tiny
  parts, params = trainable_lib.ModelParts.split(teacher)
  trainable, frozen = trainable_lib.split_trainable(params, "no_word_embeddings",
                                                    teacher.encoder.cfg.num_layers)
  # Plain SGD: the parameters then differ by the learning rate times the gradients'
  # difference. (Adam divides each gradient by its own size, which turns rounding
  # noise in a near-zero gradient into a step of about the learning rate.)
  tx = optax.sgd(0.1)
  loss_cfg = defaults.loss_config(method, ot=defaults.ot_config(num_iterations=20))
  step = step_lib.jit_distill_step(parts, parts, loss_cfg, tx, layer_index=-1 % 3)
  src, tgt = multilingual_texts[2:10], multilingual_texts[:8]
  kw = dict(src_prefix="query: ", tgt_prefix="passage: ", max_length=64, batch_size=8,
            student_reads_tgt=loss_cfg.both_sides)
  padded = batches.pair_batch(tok, src, tgt, **kw)
  sides = ("src", "tgt", "stu_tgt") if loss_cfg.both_sides else ("src", "tgt")
  capacities = batches.pack_capacities([batches.pair_masks(padded)])
  assert set(capacities) == set(sides), "the texts should leave padding to skip"
  packed = batches.pair_batch(tok, src, tgt, capacities=capacities, **kw)
  assert {f"{s}_pack" for s in sides} <= set(packed)
  _assert_packed_equals_padded(step, trainable, tx, frozen, params, padded, packed,
                               ("loss", "loss_ot", "loss_contrastive", "grad_norm"))


def test_packed_mlm_and_tlm_equal_padded(tiny_dir, tiny, multilingual_texts):
  """The MLM pass reuses the source's pack index and TLM packs the concatenated pair:
  cost, not result, changes (masks, losses, updates of the encoder and the LM head)."""
  teacher, tok = tiny
  parts, params = trainable_lib.ModelParts.split(teacher)
  trainable, frozen = trainable_lib.split_trainable(params, "no_word_embeddings",
                                                    teacher.encoder.cfg.num_layers)
  spec, head = pretraining.Pretraining.create(
      defaults.mlm_config(mlm_weight=1.0, tlm_weight=1.0), teacher, tiny_dir, tok, seed=0)
  trainable = dict(trainable, **head)
  tx = optax.sgd(0.1)   # as above: Adam would magnify rounding noise
  loss_cfg = defaults.loss_config(ot=defaults.ot_config(num_iterations=20))
  step = step_lib.jit_distill_step(parts, parts, loss_cfg, tx, layer_index=-1 % 3,
                                   pretrain=spec)
  # Every other text cut to three words: padding to skip at 32 tokens a side, and the
  # TLM pair (at most 63) within the tiny model's 64 positions.
  short = [t if i % 2 else " ".join(t.split()[:3]) for i, t in enumerate(multilingual_texts)]
  padded = tlm.add_tlm_inputs(
      batches.pair_batch(tok, short[2:10], short[:8],
                         src_prefix="query: ", tgt_prefix="passage: ", max_length=32,
                         batch_size=8), pad_id=tok.pad_id)
  capacities = batches.pack_capacities([batches.pair_masks(padded)])
  assert {"src", "tgt", "tlm"} <= set(capacities), "the texts should leave padding to skip"
  packed = batches.with_packs(dict(padded), batches.pair_masks(padded), capacities)
  assert packed["tlm_pack"].size == capacities["tlm"] < padded["tlm_mask"].size
  # Packed, no encoder's MLP runs on a padded [B, L] side: the MLM pass (on the
  # source's rows) and the TLM pass (on the pair's) included.
  state = state_lib.init_state(jax.tree.map(jnp.array, trainable), tx, seed=0)
  ffn = teacher.encoder.cfg.intermediate_size

  def padded_mlps(batch):
    hlo = step.lower(state, frozen, params, batch).as_text(dialect="hlo")
    return {length: len(re.findall(rf"= f32\[8,{length},{ffn}\]\S* dot\(", hlo))
            for length in (32, padded["tlm_mask"].shape[1])}

  assert all(padded_mlps(padded).values()), padded_mlps(padded)
  assert not any(padded_mlps(packed).values()), padded_mlps(packed)
  _assert_packed_equals_padded(step, trainable, tx, frozen, params, padded, packed,
                               ("loss", "loss_mlm", "loss_tlm", "mlm_accuracy", "tlm_accuracy",
                                "grad_norm"))


def test_bfloat16_activations_with_float32_ot(tmp_path, multilingual_texts):
  import jax.numpy as jnp
  d = tiny_checkpoints.write_bert(tmp_path / "bert")
  teacher = weights.load_pretrained(str(d), dtype="bfloat16")
  tok = tokenizer_lib.Tokenizer.from_pretrained(d)
  parts, params = trainable_lib.ModelParts.split(teacher)
  assert params["encoder/layers/0/mlp_in/kernel"].dtype == jnp.float32   # master weights
  tx, _ = state_lib.make_optimizer(_train_cfg(steps=5, lr=1e-2, warmup_frac=0.0))
  step = step_lib.jit_distill_step(parts, parts, defaults.loss_config(ot=defaults.ot_config(num_iterations=20)),
                              tx, layer_index=2)
  state = state_lib.init_state(jax.tree.map(jnp.array, params), tx, 0)
  batch = batches.pair_batch(tok, multilingual_texts[2:10], multilingual_texts[:8],
                           src_prefix="query: ", tgt_prefix="passage: ", max_length=32,
                           batch_size=8)
  seen = []
  for _ in range(5):
    state, m = step(state, {}, params, batch)
    seen.append(float(m["loss"]))
  assert all(np.isfinite(seen)) and seen[-1] < seen[0]
  # The Sinkhorn solve ran in float32: bf16 inputs would never meet its threshold.
  assert m["ot_converged"].dtype == jnp.float32 and float(m["ot_converged"]) > 0
  assert state.params["encoder/layers/0/mlp_in/kernel"].dtype == jnp.float32


# ----------------------------------------------------------------------------
# The teacher's step.

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
  # Late interaction's in-batch accuracy on this fixture passes 0.5 after about 20 steps.
  cfg.update(lr=3e-3, warmup_frac=0.0, schedule="constant", steps=30)
  tx, _ = state_lib.make_optimizer(cfg)
  temperature = 0.05 if scoring == "dense" else 1.0
  step = jax.jit(functools.partial(step_lib.teacher_step, parts=parts, tx=tx, scoring=scoring,
                                   temperature=temperature))
  data = _fixture_triples()
  batch = batches.triple_batch(tokenizer, data, query_prefix="query: ", doc_prefix="passage: ",
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
    want, _ = numpy_references.triple_loss(qv, None, pv, None, nv, None, "dense", temperature,
                                           np.ones(len(data), bool))
    np.testing.assert_allclose(losses[0], want, rtol=1e-3)
  assert losses[-1] < 0.5 * losses[0], losses
  assert float(metrics["accuracy"]) > 0.5


@pytest.mark.parametrize("scoring", ["dense", "late_interaction"])
def test_packed_teacher_step_equals_padded_step(tiny_dir, scoring):
  """Queries and documents (positives and negatives, packed together) on their real
  tokens only: the same step to float rounding."""
  model, tokenizer, _ = models.load(str(tiny_dir))
  parts, params = trainable_lib.ModelParts.split(model)
  # A step small enough that the second still has a gradient to compare: at 0.1 the
  # late-interaction loss (76 at temperature 0.05) fell to log(16) in one step, a
  # collapsed model whose gradient (norm 1e-4) is rounding in any summation order.
  tx = optax.sgd(0.01)
  step = jax.jit(functools.partial(step_lib.teacher_step, parts=parts, tx=tx,
                                   scoring=scoring, temperature=0.05))
  data = _fixture_triples()
  kw = dict(query_prefix="query: ", doc_prefix="passage: ", query_max_length=32, max_length=64)
  padded = batches.triple_batch(tokenizer, data, **kw)
  capacities = batches.pack_capacities([batches.triple_masks(padded)])
  assert set(capacities) == {"q", "d"}, "the fixture should leave padding to skip"
  packed = batches.triple_batch(tokenizer, data, capacities=capacities, **kw)
  assert packed["d_pack"].size == capacities["d"] < 2 * padded["p_mask"].size
  results = []
  for batch in (padded, packed):
    state = state_lib.init_state(jax.tree.map(jnp.array, params), tx, 0)
    for _ in range(2):
      state, metrics = step(state, {}, batch)
    results.append((state, metrics))
  (s_pad, m_pad), (s_pack, m_pack) = results
  for key in ("loss", "grad_norm", "pos_score"):
    np.testing.assert_allclose(float(m_pack[key]), float(m_pad[key]), rtol=2e-5, err_msg=key)
  _assert_same_updates(params, s_pad.params, s_pack.params)
