"""Pooling and projection heads (models/heads.py) against numpy."""
from flax import nnx
import jax.numpy as jnp
import numpy as np
import pytest

from optical_jax.models import heads as heads_lib


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_head_pooling_and_projection(pooling):
  tokens = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5, 8)), jnp.float32)
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
  head = heads_lib.Head(heads_lib.HeadConfig(pooling=pooling, projection_dim=4), 8,
                        rngs=nnx.Rngs(0))
  w = np.asarray(head.projection.kernel.get_value())
  t, m = np.asarray(tokens), np.asarray(mask, np.float32)
  pooled = (t * m[..., None]).sum(1) / np.maximum(m.sum(1, keepdims=True), 1) \
      if pooling == "mean" else t[:, 0]
  expected = pooled @ w
  expected /= np.maximum(np.linalg.norm(expected, axis=-1, keepdims=True), 1e-12)
  got = head.pool(tokens, mask)
  np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)
  per_token = head.tokens(tokens)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(per_token), axis=-1), 1.0, atol=1e-5)
