"""The attention paths: XLA's with a key mask, cuDNN's with sequence lengths, and the
chunked one for CPUs."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optical_jax.models import attention as attention_lib
from optical_jax.models import encoder as encoder_lib
from optical_jax.models import tokenizer as tokenizer_lib
from optical_jax.models import weights

from tests import tiny_checkpoints


def _off_nvidia() -> str:
  """What 'auto' takes where cuDNN does not apply: chunked on one CPU device (this
  suite runs on 8 fake CPU devices), else XLA's."""
  return "chunked" if jax.default_backend() == "cpu" and jax.device_count() == 1 else "xla"


def _qkv(seed, b=3, length=12, heads=4, dim=16, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  return [jnp.asarray(rng.normal(size=(b, length, heads, dim)), dtype) for _ in range(3)]


def test_auto_takes_xla_off_nvidia_and_cudnn_is_refused_there():
  if attention_lib.cudnn_attention_applies("bfloat16", 64) is None:
    pytest.skip("an NVIDIA GPU is here: cuDNN applies (tested below)")
  assert attention_lib.attention_implementation("auto", "bfloat16", 64) == _off_nvidia()
  with pytest.raises(ValueError, match=r"model\.attention='cudnn' cannot run here"):
    attention_lib.attention_implementation("cudnn", "bfloat16", 64)
  with pytest.raises(ValueError, match=r"model\.attention='flash'"):
    attention_lib.attention_implementation("flash", "bfloat16", 64)


def test_auto_never_picks_cudnn_where_it_cannot_run():
  # float32, or a head dim cuDNN rejects.
  for dtype, head_dim in (("float32", 64), ("bfloat16", 12), ("bfloat16", 256)):
    assert attention_lib.attention_implementation("auto", dtype, head_dim) == _off_nvidia()


def test_auto_takes_the_chunked_path_on_one_cpu_device_only(monkeypatch):
  if jax.default_backend() != "cpu":
    pytest.skip(f"the CPU's choice (this backend is {jax.default_backend()})")
  monkeypatch.setattr(jax, "device_count", lambda *a, **k: 1)
  assert attention_lib.attention_implementation("auto", "float32", 32) == "chunked"
  monkeypatch.setattr(jax, "device_count", lambda *a, **k: 8)
  assert attention_lib.attention_implementation("auto", "float32", 32) == "xla"
  assert attention_lib.attention_implementation("chunked", "float32", 32) == "chunked"


def test_lengths_equal_the_key_mask_on_real_rows():
  # What the cuDNN path computes (padding as per-row lengths), run by XLA, against
  # the key mask: the same on every real query row of right-padded batches.
  q, k, v = _qkv(0)
  lengths = np.array([12, 7, 1])
  mask = jnp.asarray((np.arange(12)[None] < lengths[:, None]).astype(np.int32))
  by_mask = attention_lib.attend(q, k, v, mask, implementation="xla")
  by_lengths = attention_lib.by_lengths(q, k, v, mask, implementation="xla")
  real = np.asarray(mask, bool)
  np.testing.assert_allclose(np.asarray(by_lengths)[real], np.asarray(by_mask)[real],
                             atol=1e-6)


def test_an_odd_length_is_padded_to_an_even_one_and_sliced_back():
  # cuDNN's backward takes even sequence lengths only; the lengths path pads by
  # one position (beyond every row's length) and returns the original shape.
  q, k, v = _qkv(5, length=11)
  lengths = np.array([11, 6, 1])
  mask = jnp.asarray((np.arange(11)[None] < lengths[:, None]).astype(np.int32))
  by_lengths = attention_lib.by_lengths(q, k, v, mask, implementation="xla")
  by_mask = attention_lib.attend(q, k, v, mask, implementation="xla")
  assert by_lengths.shape == q.shape
  real = np.asarray(mask, bool)
  np.testing.assert_allclose(np.asarray(by_lengths)[real], np.asarray(by_mask)[real],
                             atol=1e-5)


def test_a_row_of_padding_stays_finite_either_way():
  q, k, v = _qkv(1)
  mask = jnp.asarray(np.stack([np.ones(12), np.zeros(12), np.r_[np.ones(3), np.zeros(9)]])
                     .astype(np.int32))
  outs = [attention_lib.attend(q, k, v, mask, implementation="xla"),
          attention_lib.by_lengths(q, k, v, mask, implementation="xla"),
          attention_lib.chunked(q, k, v, mask, chunk=3), attention_lib.chunked(q, k, v, mask, chunk=1)]
  for out in outs:
    assert np.isfinite(np.asarray(out)).all()
  # The row of padding attends uniformly, as XLA's path makes it.
  np.testing.assert_allclose(np.asarray(outs[2])[1], np.asarray(outs[0])[1], atol=1e-6)


def _masked(lengths, length):
  return jnp.asarray((np.arange(length)[None] < np.asarray(lengths)[:, None]).astype(np.int32))


@pytest.mark.parametrize("unrolled", [0, 16])
@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 8])
def test_chunked_equals_xla_s_attention_and_its_gradients(chunk, unrolled):
  # Five rows (one of them padding only): chunks of 2 and 3 leave a shorter last one;
  # the chunks as independent ops (unrolled=16) or a loop (0).
  q, k, v = _qkv(3, b=5, length=12)
  mask = _masked([12, 7, 1, 0, 10], 12)
  real = np.asarray(mask, bool)
  xla = attention_lib.attend(q, k, v, mask, implementation="xla")
  ours = jax.jit(functools.partial(attention_lib.chunked, chunk=chunk, unrolled=unrolled))(
      q, k, v, mask)
  np.testing.assert_allclose(np.asarray(ours)[real], np.asarray(xla)[real], atol=2e-6)
  weight = jnp.asarray(np.random.default_rng(4).normal(size=q.shape), jnp.float32)

  def grads(attend):
    def loss(q, k, v):
      return jnp.sum(attend(q, k, v, mask) * weight * mask[:, :, None, None])
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)

  want = grads(functools.partial(attention_lib.attend, implementation="xla"))
  got = grads(functools.partial(attention_lib.chunked, chunk=chunk, unrolled=unrolled))
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=2e-5 * np.abs(w).max())


def _program(fn, *args) -> tuple[bool, list[int]]:
  """(whether `fn`'s lowered program has a loop, the batch of each of its products
  of queries and keys: the rows of every [..., L, L] dot_general, L the length)."""
  text = jax.jit(fn).lower(*args).as_text()
  length = args[0].shape[1]
  batches = []
  for line in text.splitlines():
    if "stablehlo.dot_general" in line and line.rstrip().endswith(f"x{length}x{length}xf32>"):
      dims = line.rsplit("tensor<", 1)[1].split("x")
      batches.append(int(dims[0]) if len(dims) == 5 else 1)   # [b, N, L, L] or [N, L, L]
  return "stablehlo.while" in text, sorted(batches, reverse=True)


def test_only_a_pass_that_is_not_differentiated_runs_in_chunks():
  # Forward only (evaluation, the teacher), chunks of 2 of 5 rows are three
  # products of queries and keys side by side; the derivative is taken through the
  # whole batch at once, however the forward pass was chunked (a scan's backward
  # would keep each chunk's residuals apart, which measured slower).
  q, k, v = _qkv(6, b=5, length=8)
  mask = _masked([8, 5, 3, 8, 1], 8)
  assert _program(functools.partial(attention_lib.chunked, chunk=2), q, k, v, mask) == (
      False, [2, 2, 1])
  assert _program(functools.partial(attention_lib.chunked, chunk=5), q, k, v, mask) == (
      False, [5])
  grad = jax.grad(lambda q, k, v: jnp.sum(attention_lib.chunked(q, k, v, mask, chunk=2)),
                  argnums=(0, 1, 2))
  loop, batches = _program(grad, q, k, v)
  assert not loop and batches and set(batches) == {5}


def test_beyond_the_unrolled_chunks_the_chunks_are_a_loop():
  # Independent chunks let XLA:CPU run them on different cores; past `unrolled` of
  # them (or with 0) one loop bounds the program and the scores alive at once.
  q, k, v = _qkv(8, b=7, length=8)
  mask = _masked([8, 5, 3, 8, 1, 0, 6], 8)

  def run(unrolled):
    return functools.partial(attention_lib.chunked, chunk=2, unrolled=unrolled)

  assert _program(run(4), q, k, v, mask) == (False, [2, 2, 2, 1])
  # A loop of 2 rows an iteration, and the last row after it.
  assert _program(run(3), q, k, v, mask) == (True, [2, 1])
  assert _program(run(0), q, k, v, mask) == (True, [2, 1])
  real = np.asarray(mask, bool)
  np.testing.assert_allclose(np.asarray(jax.jit(run(4))(q, k, v, mask))[real],
                             np.asarray(jax.jit(run(0))(q, k, v, mask))[real], atol=1e-6)


def test_the_chunk_is_sized_by_the_scores_it_holds():
  # 4 heads x 12 x 12 float32 scores: 2,304 bytes a sequence.
  q, k, v = _qkv(7, b=6, length=12)
  mask = _masked([12, 3, 9, 12, 1, 6], 12)
  per_row = 4 * 12 * 12 * 4 / 2**20

  def run(mib, unrolled=16):
    return functools.partial(attention_lib.attend, implementation="chunked", chunk_mib=mib,
                             unrolled_chunks=unrolled)

  assert _program(run(2 * per_row), q, k, v, mask) == (False, [2, 2, 2])   # chunks of 2
  assert _program(run(6 * per_row), q, k, v, mask) == (False, [6])         # the whole batch
  assert _program(run(per_row / 10), q, k, v, mask) == (False, [1] * 6)    # at least one row
  assert _program(run(per_row / 10, unrolled=5), q, k, v, mask) == (True, [1])
  real = np.asarray(mask, bool)
  np.testing.assert_allclose(np.asarray(run(2 * per_row)(q, k, v, mask))[real],
                             np.asarray(run(6 * per_row)(q, k, v, mask))[real], atol=1e-6)


@pytest.mark.parametrize("dtype,atol", [("float32", 1e-5), ("bfloat16", 5e-2)])
def test_a_whole_encoder_is_the_same_with_chunked_attention(tmp_path, multilingual_texts,
                                                            dtype, atol):
  d = tiny_checkpoints.write_bert(tmp_path / "bert", hidden_size=64, num_attention_heads=2)
  tok = tokenizer_lib.Tokenizer.from_pretrained(d)
  batch = tok.encode(multilingual_texts[:8], max_length=32, batch_size=8)
  out = {}
  for impl in ("xla", "chunked"):
    # A budget of about two sequences' scores: the forward pass runs in chunks.
    model = weights.load_pretrained(str(d), dtype=dtype, attention=impl,
                                    attention_chunk_mib=2 * 2 * 32 * 32 * 4 / 2**20)
    out[impl] = np.asarray(model.encoder(jnp.asarray(batch.ids), jnp.asarray(batch.mask)),
                           np.float32)
  real = batch.mask.astype(bool)
  np.testing.assert_allclose(out["chunked"][real], out["xla"][real], atol=atol)


@pytest.mark.skipif(attention_lib.cudnn_attention_applies("bfloat16", 64) is not None,
                    reason="cuDNN's fused attention needs an NVIDIA GPU (none here)")
def test_cudnn_agrees_with_xla(tmp_path, multilingual_texts):
  q, k, v = _qkv(2, b=4, length=63, heads=6, dim=64, dtype=jnp.bfloat16)
  lengths = np.array([63, 40, 9, 1])
  mask = jnp.asarray((np.arange(63)[None] < lengths[:, None]).astype(np.int32))
  xla = attention_lib.attend(q, k, v, mask, implementation="xla")
  cudnn = attention_lib.attend(q, k, v, mask, implementation="cudnn")
  real = np.asarray(mask, bool)
  np.testing.assert_allclose(np.asarray(cudnn, np.float32)[real],
                             np.asarray(xla, np.float32)[real], atol=2e-2)
  # The gradients too (training runs the backward of cuDNN's kernel), through a
  # loss that reads real rows only.
  weight = jnp.asarray(np.random.default_rng(3).normal(size=q.shape), jnp.float32)

  def loss(impl):
    def f(q, k, v):
      out = attention_lib.attend(q, k, v, mask, implementation=impl)
      return jnp.sum(out.astype(jnp.float32) * weight * mask[:, :, None, None])
    return jax.grad(f, argnums=(0, 1, 2))(q, k, v)

  for g_cudnn, g_xla in zip(loss("cudnn"), loss("xla")):
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


@pytest.mark.parametrize("bad", [-1, 1.5, "4"])
def test_an_encoder_refuses_a_count_of_unrolled_chunks_that_is_not_one(bad):
  with pytest.raises(ValueError, match=r"model\.attention_unrolled_chunks=.*integer >= 0"):
    encoder_lib.EncoderConfig(vocab_size=10, hidden_size=8, num_layers=1, num_heads=2,
                              intermediate_size=16, max_positions=16,
                              attention_unrolled_chunks=bad)
