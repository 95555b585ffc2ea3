"""The distillation losses against independent numpy computations."""
import jax.numpy as jnp
import numpy as np
import pytest

from optical_jax import losses
from optical_jax import ot


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_contrastive_equals_numpy_cross_entropy():
  rng = np.random.default_rng(0)
  s, t = _unit(rng.normal(size=(5, 8))), _unit(rng.normal(size=(5, 8)))
  tau = 0.1
  logits = s @ t.T / tau
  logz = np.log(np.exp(logits).sum(1))
  expected = np.mean(logz - np.diag(logits))
  got = losses.contrastive(jnp.asarray(s), jnp.asarray(t), tau)
  np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_contrastive_ignores_padding_rows():
  rng = np.random.default_rng(1)
  s, t = _unit(rng.normal(size=(4, 8))), _unit(rng.normal(size=(4, 8)))
  valid = np.array([True, True, True, False])
  full = losses.contrastive(jnp.asarray(s), jnp.asarray(t), 0.05, jnp.asarray(valid))
  only = losses.contrastive(jnp.asarray(s[:3]), jnp.asarray(t[:3]), 0.05)
  np.testing.assert_allclose(float(full), float(only), rtol=1e-6)


def test_pooled_mse_equals_numpy():
  rng = np.random.default_rng(2)
  s, t = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
  np.testing.assert_allclose(float(losses.pooled_mse(jnp.asarray(s), jnp.asarray(t))),
                             np.mean((s - t) ** 2), rtol=1e-6)


def test_distillation_loss_is_the_weighted_sum():
  rng = np.random.default_rng(3)
  b, ls, lt, h = 3, 6, 7, 8
  s_tok, t_tok = rng.normal(size=(b, ls, h)), rng.normal(size=(b, lt, h))
  s_vec, t_vec = _unit(rng.normal(size=(b, h))), _unit(rng.normal(size=(b, h)))
  batch = {"src_mask": np.array([[1] * 6, [1] * 3 + [0] * 3, [1] * 5 + [0]]),
           "tgt_mask": np.array([[1] * 7, [1] * 2 + [0] * 5, [1] * 4 + [0] * 3]),
           "src_special": np.zeros((b, ls), bool), "tgt_special": np.zeros((b, lt), bool)}
  cfg = losses.LossConfig(ot_weight=0.5, contrastive_weight=2.0, mse_weight=3.0,
                          temperature=0.1, ot=ot.OTConfig(epsilon=0.1, num_iterations=30))
  args = [jnp.asarray(x) for x in (s_tok, s_vec, t_tok, t_vec)]
  total, m = losses.distillation_loss(cfg, *args, {k: jnp.asarray(v) for k, v in batch.items()})
  ot_loss, _ = ot.ot_alignment_loss(args[0], batch["src_mask"], args[2], batch["tgt_mask"],
                                    cfg.ot)
  expected = 0.5 * float(ot_loss) + 2.0 * float(losses.contrastive(args[1], args[3], 0.1)) \
      + 3.0 * float(losses.pooled_mse(args[1], args[3]))
  np.testing.assert_allclose(float(total), expected, rtol=1e-5)
  assert set(m) >= {"loss_ot", "loss_contrastive", "loss_mse", "pos_cos", "neg_cos"}
  np.testing.assert_allclose(float(m["pos_cos"]), np.mean(np.sum(s_vec * t_vec, 1)), rtol=1e-5)


def test_bad_weights_are_rejected():
  with pytest.raises(ValueError, match="at least one"):
    losses.LossConfig(ot_weight=0, contrastive_weight=0, mse_weight=0)
  with pytest.raises(ValueError, match=">= 0"):
    losses.LossConfig(ot_weight=-1)
