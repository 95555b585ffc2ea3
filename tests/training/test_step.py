"""The jitted distillation step on a tiny model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optical_jax import config as config_lib
from optical_jax.data import batches
from optical_jax.models import tokenizer as tokenizer_lib
from optical_jax.models import weights
from optical_jax.training import state as state_lib
from optical_jax.training import step as step_lib
from optical_jax.training import trainable as trainable_lib

from tests import defaults
from tests import tiny_checkpoints


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  d = tiny_checkpoints.write_xlmr(tmp_path_factory.mktemp("xlmr") / "ckpt")
  return weights.load_pretrained(str(d)), tokenizer_lib.Tokenizer.from_pretrained(d)


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


def test_trainable_specs():
  names = ["encoder/embeddings/word/embedding", "encoder/embeddings/norm/scale",
           "encoder/layers/0/mlp_in/kernel", "encoder/layers/11/mlp_in/kernel",
           "encoder/layers/10/attention/query/kernel", "head/projection/kernel"]
  sel = lambda spec: [n for n in names if trainable_lib.trainable_predicate(spec, 12)(n)]
  assert sel("all") == names
  assert sel("no_word_embeddings") == names[1:]
  assert sel("top:2") == names[3:]
  assert sel("regex:attention") == [names[4]]
  with pytest.raises(ValueError, match="K must be in 1..12"):
    trainable_lib.trainable_predicate("top:13", 12)
  with pytest.raises(ValueError, match="expected 'all'"):
    trainable_lib.trainable_predicate("everything", 12)


def test_schedule_warms_up_then_decays():
  _, schedule = state_lib.make_optimizer(_train_cfg(steps=100, lr=1.0, warmup_frac=0.1))
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(10)), 1.0, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(55)), 0.5, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(100)), 0.0, atol=1e-6)


def test_config_errors_name_the_key():
  c = config_lib.default()
  c.ot.epsilon = -1.0
  with pytest.raises(config_lib.ConfigError, match=r"config\.ot: epsilon must be > 0"):
    config_lib.check(c)
  c = config_lib.default()
  c.data.on_bad_line = "ignore"
  with pytest.raises(config_lib.ConfigError, match=r"config\.data\.on_bad_line='ignore'"):
    config_lib.check(c)


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
