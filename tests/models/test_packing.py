"""Token packing: the encoder on a batch's real tokens only equals the padded encoder."""
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optical_jax.models import encoder as encoder_lib
from optical_jax.models import packing

# Right-padded rows of different lengths; the last row is batch padding (no real token).
LENGTHS = (7, 3, 12, 1, 9, 0)
L = 12


def _mask(lengths=LENGTHS, length=L) -> np.ndarray:
  return (np.arange(length)[None] < np.array(lengths)[:, None]).astype(np.int32)


def _encoder(model_type: str, dtype: str = "float32") -> encoder_lib.Encoder:
  cfg = encoder_lib.EncoderConfig(vocab_size=97, hidden_size=32, num_layers=3, num_heads=4,
                                  intermediate_size=64, max_positions=40, model_type=model_type,
                                  pad_token_id=1, dtype=dtype, attention="xla")
  model = encoder_lib.Encoder(cfg, rngs=nnx.Rngs(3))
  # Non-zero biases and LayerNorm offsets, so a bias applied at the wrong rows shows.
  rng = np.random.default_rng(0)
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    value = var.get_value()
    var.set_value(jnp.asarray(rng.normal(0, 0.1, value.shape), value.dtype)
                  + (1 if path[-1] == "scale" else 0))
  return model


def test_pack_index_lists_real_positions_in_order():
  mask = _mask()
  index = packing.pack_index(mask, 40)
  real = int(mask.sum())
  assert index.dtype == np.int32 and index.shape == (40,)
  np.testing.assert_array_equal(index[:real], np.flatnonzero(mask.reshape(-1)))
  assert (index[real:] == -1).all()
  assert packing.pack_index(mask, real) is not None
  assert packing.pack_index(mask, real - 1) is None     # over budget: the batch runs padded


def test_capacity_rounds_up_and_declines_when_nothing_is_saved():
  m = packing.ROW_MULTIPLE
  assert packing.capacity(np.array([100, 130, 90]), 2048) == m * -(-130 // m)
  assert packing.capacity(np.array([4 * m]), 2048) == 4 * m
  assert packing.capacity(np.array([2048 - m // 2]), 2048) is None   # rounds up to 2048: no gain
  assert packing.capacity(np.array([0]), 2048) == packing.ROW_MULTIPLE


def test_pack_and_unpack_are_inverse_on_real_tokens():
  mask = _mask()
  x = jnp.asarray(np.random.default_rng(1).normal(size=mask.shape + (5,)), jnp.float32)
  p = packing.Packing.create(jnp.asarray(packing.pack_index(mask, 48)), jnp.asarray(mask))
  packed = p.pack(x)
  real = int(mask.sum())
  assert packed.shape == (48, 5)
  np.testing.assert_array_equal(packed[:real], np.asarray(x)[mask.astype(bool)])
  assert not np.asarray(packed[real:]).any()
  np.testing.assert_array_equal(p.unpack(packed), np.asarray(x) * mask[..., None])


def test_gradients_of_pack_and_unpack_are_gathers_of_each_other():
  mask = _mask()
  p = packing.Packing.create(jnp.asarray(packing.pack_index(mask, 48)), jnp.asarray(mask))
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=mask.shape + (3,)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(48, 3)), jnp.float32)
  g = jax.grad(lambda x: jnp.sum(p.pack(x) * w))(x)
  # d/dx sum(pack(x) * w) puts each packed row's weight back at its position.
  np.testing.assert_allclose(g, np.asarray(p.unpack(w)), rtol=0, atol=0)
  v = jnp.asarray(rng.normal(size=mask.shape + (3,)), jnp.float32)
  g = jax.grad(lambda y: jnp.sum(p.unpack(y) * v))(w)
  np.testing.assert_allclose(g, np.asarray(p.pack(v * mask[..., None])), rtol=0, atol=0)
  hlo = jax.jit(jax.grad(lambda x: jnp.sum(p.unpack(p.pack(x)) * v))).lower(x).as_text()
  assert "scatter" not in hlo


@pytest.mark.parametrize("model_type", ["bert", "xlm-roberta"])
def test_packed_encoder_equals_padded_encoder(model_type):
  model = _encoder(model_type)
  mask = _mask()
  ids = np.where(mask, np.random.default_rng(4).integers(5, 97, mask.shape), 1)
  index = jnp.asarray(packing.pack_index(mask, 48))     # 32 real tokens of 72 positions
  padded = model.hidden_states(jnp.asarray(ids), jnp.asarray(mask))
  packed = model.hidden_states(jnp.asarray(ids), jnp.asarray(mask), pack=index)
  # The MLP runs on the 48 packed rows, not on the 6 x 12 positions.
  hlo = jax.jit(lambda i, m: model.hidden_states(i, m, pack=index)[-1]).lower(
      jnp.asarray(ids), jnp.asarray(mask)).as_text(dialect="hlo")
  assert any("f32[48,64]" in line and "dot(" in line for line in hlo.splitlines())
  assert len(padded) == len(packed) == 4
  m = mask.astype(bool)
  for a, b in zip(padded, packed):
    assert b.shape == a.shape
    np.testing.assert_allclose(np.asarray(b)[m], np.asarray(a)[m], atol=2e-5, rtol=0)


def test_packed_encoder_gradients_equal_padded_ones():
  model = _encoder("bert")
  graph, params = nnx.split(model)
  mask = jnp.asarray(_mask())
  ids = jnp.where(mask > 0, jnp.asarray(np.random.default_rng(5).integers(5, 97, mask.shape)),
                  1)
  w = jnp.asarray(np.random.default_rng(6).normal(size=mask.shape + (32,)), jnp.float32)
  index = jnp.asarray(packing.pack_index(np.asarray(mask), 64))

  def loss(params, pack):
    states = nnx.merge(graph, params).hidden_states(ids, mask, pack=pack)
    return jnp.sum(states[-1] * w * mask[..., None]) + jnp.sum(states[1] ** 2 * mask[..., None])

  g_pad = jax.grad(loss)(params, None)
  g_pack = jax.grad(loss)(params, index)
  scale = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(g_pad))
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(g_pad)[0],
                          jax.tree.leaves(g_pack)):
    np.testing.assert_allclose(b, a, atol=2e-5 * scale, rtol=0,
                               err_msg=jax.tree_util.keystr(path))


def test_bf16_packed_encoder_backward_has_no_scatter():
  model = _encoder("xlm-roberta", dtype="bfloat16")
  graph, params = nnx.split(model)
  mask = jnp.asarray(_mask())
  ids = jnp.ones_like(mask) * 7
  index = jnp.asarray(packing.pack_index(np.asarray(mask), 64))

  def loss(p):
    return jnp.sum(nnx.merge(graph, p).hidden_states(ids, mask, pack=index)[-1]
                   .astype(jnp.float32) ** 2)

  hlo = jax.jit(jax.grad(loss)).lower(params).as_text(dialect="hlo")
  assert "bf16[" in hlo
  # The one scatter allowed is the word embedding's gradient, in its float32 table.
  scatters = [line for line in hlo.splitlines() if " scatter(" in line]
  assert all("f32[" in line.split("scatter(")[0] for line in scatters), scatters
