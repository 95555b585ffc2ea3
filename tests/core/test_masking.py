"""BERT masking and the MLM loss (core/masking.py): masking statistics, the loss against
PyTorch, the MLMConfig checks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optical_jax.core import masking

from tests import defaults

torch = pytest.importorskip("torch", reason="PyTorch is the golden reference (test extra)")


VOCAB, MASK_ID = 1000, 4

EXCLUDE = (0, 1, 2, 3, 4)


def _random_layout(rng, b, length):
  """Rows of random length with specials at both ends and some special prefix tokens."""
  n = rng.integers(0, length + 1, size=b)
  n[:3] = (0, 1, length)                        # an empty row, a lone token, a full row
  pos = np.arange(length)[None, :]
  mask = (pos < n[:, None]).astype(np.int32)
  special = (pos == 0) | (pos == n[:, None] - 1) | (rng.random((b, length)) < 0.05)
  special &= mask.astype(bool)
  ids = np.where(mask, rng.integers(len(EXCLUDE), VOCAB, size=(b, length)), 1)
  return ids.astype(np.int32), mask, special


def _mask(key, ids, mask, special, cfg=defaults.mlm_config()):
  fn = jax.jit(lambda k, i, m, s: masking.mask_tokens(k, i, m, s, cfg, vocab_size=VOCAB,
                                                  mask_id=MASK_ID, exclude_ids=EXCLUDE))
  return [np.asarray(x) for x in fn(key, ids, mask, special)]


def test_masking_statistics():
  rng = np.random.default_rng(0)
  ids, mask, special = _random_layout(rng, 4096, 48)
  inp, labels, w = _mask(jax.random.key(0), ids, mask, special)
  chosen = w > 0
  maskable = mask.astype(bool) & ~special
  assert not np.any(chosen & ~maskable)                    # specials and padding never
  np.testing.assert_array_equal(inp[~chosen], ids[~chosen])
  np.testing.assert_array_equal(labels[chosen], ids[chosen])

  n, count = maskable.sum(1), chosen.sum(1)
  assert np.all((np.abs(count - 0.15 * n) <= 0.5 + 1e-6) | (count == 1))
  assert np.all((count >= 1) == (n >= 1))
  assert count.max() <= masking.max_predictions(48, 0.15)
  assert abs(count.sum() / n.sum() - 0.15) < 0.01

  is_mask = inp[chosen] == MASK_ID
  is_keep = inp[chosen] == ids[chosen]
  is_random = ~is_mask & ~is_keep
  assert abs(is_mask.mean() - 0.8) < 0.015
  assert abs(is_random.mean() - 0.1) < 0.01
  assert abs(is_keep.mean() - 0.1) < 0.01                  # + 1/V chance of drawing itself
  drawn = inp[chosen][is_random]
  assert drawn.min() >= 0 and drawn.max() < VOCAB and not np.isin(drawn, EXCLUDE).any()


def test_masked_positions_are_uniform():
  # Every row alike: 38 maskable tokens, so round(0.15 * 38) = 6 are chosen,
  # each position with probability 6/38.
  b, length = 4096, 40
  ids = np.full((b, length), 7, np.int32)
  mask = np.ones((b, length), np.int32)
  special = np.zeros((b, length), bool)
  special[:, [0, -1]] = True
  _, _, w = _mask(jax.random.key(1), ids, mask, special)
  assert np.all(w.sum(1) == 6)
  freq = w[:, 1:-1].mean(0)
  assert np.abs(freq - 6 / 38).max() < 0.03, freq


def test_masking_is_deterministic_in_rng():
  ids, mask, special = _random_layout(np.random.default_rng(1), 64, 32)
  a = _mask(jax.random.key(3), ids, mask, special)
  b = _mask(jax.random.key_data(jax.random.key(3)), ids, mask, special)   # raw key data
  c = _mask(jax.random.key(4), ids, mask, special)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[2], c[2])


@pytest.mark.parametrize("field,value", [("mlm_weight", -1.0), ("mask_rate", 0.0),
                                         ("mask_rate", 1.0), ("mask_fraction", 1.5),
                                         ("random_fraction", 0.3), ("tlm_max_length", 3)])
def test_config_validation_names_the_field(field, value):
  with pytest.raises(ValueError, match=field):
    defaults.mlm_config(**{field: value})


def test_mlm_loss_matches_torch_cross_entropy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 7, 11)).astype(np.float32) * 3
  labels = rng.integers(0, 11, size=(3, 7))
  w = (rng.random((3, 7)) < 0.4).astype(np.float32)
  ours = masking.mlm_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(w))
  ref = torch.nn.functional.cross_entropy(
      torch.tensor(logits).reshape(-1, 11),
      torch.tensor(np.where(w > 0, labels, -100)).reshape(-1), ignore_index=-100)
  np.testing.assert_allclose(float(ours), ref.item(), rtol=1e-5)

  # Nothing predicted: 0 and zero gradients, where torch gives NaN.
  zero_w = jnp.zeros((3, 7))
  bad_labels = jnp.full((3, 7), -100)
  value, grad = jax.value_and_grad(masking.mlm_loss)(jnp.asarray(logits), bad_labels, zero_w)
  assert float(value) == 0.0 and np.all(np.asarray(grad) == 0)


def test_mlm_loss_shares_sum_to_the_global_mean():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(4, 5, 9)).astype(np.float32))
  labels = jnp.asarray(rng.integers(0, 9, size=(4, 5)))
  w = jnp.asarray((rng.random((4, 5)) < 0.5).astype(np.float32))
  shares = jax.pmap(lambda l, y, m: jax.lax.psum(masking.mlm_loss(l, y, m, axis_name="d"), "d"),
                    axis_name="d", devices=jax.devices()[:2])(
      logits.reshape(2, 2, 5, 9), labels.reshape(2, 2, 5), w.reshape(2, 2, 5))
  np.testing.assert_allclose(np.asarray(shares), float(masking.mlm_loss(logits, labels, w)),
                             rtol=1e-6)
