"""The attention paths: XLA's with a key mask, cuDNN's with sequence lengths."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optical_jax.models import encoder as encoder_lib
from optical_jax.models import tokenizer as tokenizer_lib
from optical_jax.models import weights

from tests import tiny_checkpoints


def _qkv(seed, b=3, length=12, heads=4, dim=16, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  return [jnp.asarray(rng.normal(size=(b, length, heads, dim)), dtype) for _ in range(3)]


def test_auto_takes_xla_off_nvidia_and_cudnn_is_refused_there():
  if encoder_lib.cudnn_attention_applies("bfloat16", 64) is None:
    pytest.skip("an NVIDIA GPU is here: cuDNN applies (tested below)")
  assert encoder_lib.attention_implementation("auto", "bfloat16", 64) == "xla"
  with pytest.raises(ValueError, match=r"model\.attention='cudnn' cannot run here"):
    encoder_lib.attention_implementation("cudnn", "bfloat16", 64)
  with pytest.raises(ValueError, match=r"model\.attention='flash'"):
    encoder_lib.attention_implementation("flash", "bfloat16", 64)


def test_auto_never_picks_cudnn_where_it_cannot_run():
  # float32, or a head dim cuDNN rejects: the XLA path whatever the platform.
  assert encoder_lib.attention_implementation("auto", "float32", 64) == "xla"
  assert encoder_lib.attention_implementation("auto", "bfloat16", 12) == "xla"
  assert encoder_lib.attention_implementation("auto", "bfloat16", 256) == "xla"


def test_lengths_equal_the_key_mask_on_real_rows():
  # What the cuDNN path computes (padding as per-row lengths), run by XLA, against
  # the key mask: the same on every real query row of right-padded batches.
  q, k, v = _qkv(0)
  lengths = np.array([12, 7, 1])
  mask = jnp.asarray((np.arange(12)[None] < lengths[:, None]).astype(np.int32))
  by_mask = encoder_lib.attend(q, k, v, mask, implementation="xla", by_lengths=False)
  by_lengths = encoder_lib.attend(q, k, v, mask, implementation="xla", by_lengths=True)
  real = np.asarray(mask, bool)
  np.testing.assert_allclose(np.asarray(by_lengths)[real], np.asarray(by_mask)[real],
                             atol=1e-6)


def test_an_odd_length_is_padded_to_an_even_one_and_sliced_back():
  # cuDNN's backward takes even sequence lengths only; the lengths path pads by
  # one position (beyond every row's length) and returns the original shape.
  q, k, v = _qkv(5, length=11)
  lengths = np.array([11, 6, 1])
  mask = jnp.asarray((np.arange(11)[None] < lengths[:, None]).astype(np.int32))
  by_lengths = encoder_lib.attend(q, k, v, mask, implementation="xla", by_lengths=True)
  by_mask = encoder_lib.attend(q, k, v, mask, implementation="xla", by_lengths=False)
  assert by_lengths.shape == q.shape
  real = np.asarray(mask, bool)
  np.testing.assert_allclose(np.asarray(by_lengths)[real], np.asarray(by_mask)[real],
                             atol=1e-5)


def test_a_row_of_padding_stays_finite_either_way():
  q, k, v = _qkv(1)
  mask = jnp.asarray(np.stack([np.ones(12), np.zeros(12), np.r_[np.ones(3), np.zeros(9)]])
                     .astype(np.int32))
  for by_lengths in (False, True):
    out = encoder_lib.attend(q, k, v, mask, implementation="xla", by_lengths=by_lengths)
    assert np.isfinite(np.asarray(out)).all()


@pytest.mark.skipif(encoder_lib.cudnn_attention_applies("bfloat16", 64) is not None,
                    reason="cuDNN's fused attention needs an NVIDIA GPU (none here)")
def test_cudnn_agrees_with_xla(tmp_path, multilingual_texts):
  q, k, v = _qkv(2, b=4, length=63, heads=6, dim=64, dtype=jnp.bfloat16)
  lengths = np.array([63, 40, 9, 1])
  mask = jnp.asarray((np.arange(63)[None] < lengths[:, None]).astype(np.int32))
  xla = encoder_lib.attend(q, k, v, mask, implementation="xla", by_lengths=False)
  cudnn = encoder_lib.attend(q, k, v, mask, implementation="cudnn", by_lengths=True)
  real = np.asarray(mask, bool)
  np.testing.assert_allclose(np.asarray(cudnn, np.float32)[real],
                             np.asarray(xla, np.float32)[real], atol=2e-2)
  # The gradients too (training runs the backward of cuDNN's kernel), through a
  # loss that reads real rows only.
  weight = jnp.asarray(np.random.default_rng(3).normal(size=q.shape), jnp.float32)

  def loss(impl, by_lengths):
    def f(q, k, v):
      out = encoder_lib.attend(q, k, v, mask, implementation=impl, by_lengths=by_lengths)
      return jnp.sum(out.astype(jnp.float32) * weight * mask[:, :, None, None])
    return jax.grad(f, argnums=(0, 1, 2))(q, k, v)

  for g_cudnn, g_xla in zip(loss("cudnn", True), loss("xla", False)):
    g_cudnn, g_xla = np.asarray(g_cudnn, np.float32), np.asarray(g_xla, np.float32)
    assert np.isfinite(g_cudnn).all()
    scale = np.abs(g_xla[real]).max()
    np.testing.assert_allclose(g_cudnn[real], g_xla[real], atol=3e-2 * scale)
  # And a whole encoder: the two paths' token embeddings on real tokens.
  d = tiny_checkpoints.write_bert(tmp_path / "bert", hidden_size=64, num_attention_heads=2)
  tok = tokenizer_lib.Tokenizer.from_pretrained(d)
  batch = tok.encode(multilingual_texts[:8], max_length=32, batch_size=8)
  out = {}
  for impl in ("xla", "cudnn"):
    model = weights.load_pretrained(str(d), dtype="bfloat16", attention=impl)
    out[impl] = np.asarray(model.encoder(jnp.asarray(batch.ids), jnp.asarray(batch.mask)),
                           np.float32)
  real = batch.mask.astype(bool)
  np.testing.assert_allclose(out["cudnn"][real], out["xla"][real], atol=5e-2)
  assert jax.default_backend() == "gpu"
