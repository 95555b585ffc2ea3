"""Multi-head attention of the encoders, and which implementation runs where.

`model.attention` names one of `ATTENTION`:

* 'xla': `jax.nn.dot_product_attention`'s XLA path with a [B, 1, 1, L] key mask.
* 'cudnn': cuDNN's fused kernel (NVIDIA GPUs, bf16 / fp16, head dim <= 128 and a
  multiple of 8). It rejects a broadcast mask (jax-ml/jax#28974) and needs none:
  padding is on the right, so per-row sequence lengths express it exactly.
* 'chunked': the same function in XLA ops laid out for CPUs, scores head-major
  with the mask as an additive bias and the softmax written out; a pass that is
  not differentiated (evaluation, indexing, the teacher in a distillation step)
  runs over chunks of the batch whose scores stay within `chunk_mib`, up to
  `unrolled_chunks` of them as independent ops, more in a loop.
* 'auto': cudnn where it applies, chunked on a single CPU device, else xla.

Why a CPU path of its own: XLA:CPU runs the batched [L, D] x [D, L] products
and the passes over the [B, N, L, L] scores at memory speed once the scores
leave the caches. On a 2-core Xeon (AVX-512, 2 MB L2 a core), e5-small's
attention on 64 x 128 tokens took 99 ms a layer through jax's XLA path, 88 ms
written head-major, 62 ms in chunks of 8 sequences (6 MB of scores). Whole
encoder forward passes, this path against 'xla' in alternating runs: 2.07-2.11
against 2.29-2.32 s (64 x 128), 2.76-2.78 against 4.34-4.41 s (16 x 512, one
sequence a chunk). A differentiated pass gains from the head-major layout
(forward and backward 118 against 175 ms at 64 x 128, 12.9 against 15.8 ms at
32 x 64; the distillation step 2.25-2.27 against 2.31-2.40 s) but not from
chunks (a scan's backward keeps each chunk's residuals apart), so its
derivative is taken through the unchunked form (a custom JVP) of the same
function.

Why chunks are independent ops rather than a loop's iterations: XLA:CPU runs a
batched product of small matrices on one core (YNNPACK splits the rows and
columns of one product over threads, not a batch of them: [384 x 64 x 32] x
[384 x 32 x 64] took the same 1.2-1.8 ms on one core as on two, on a Zen 4
EPYC), and runs a loop's iterations one after another, while ops that do not
depend on each other run side by side on the cores. On that CPU the attention
of a 64 x 128-token batch (7 chunks of 10 sequences) took 26-30 ms a layer as
independent chunks against 34-38 ms in a loop; 256 x 128 (26 chunks) 127
against 151 ms, 16 x 512 (16 chunks of one) 79-124 against 92-149 ms (same
process, alternating). A loop over two halves, each its own loop, gained
nothing. Beyond `unrolled_chunks` chunks the loop comes back, to bound the
program's size and the scores alive at once.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

ATTENTION = ("auto", "xla", "cudnn", "chunked")

# Scores of padded keys: exp(-1e30 - max) is 0 in float32, and a row with no
# real key at all (batch padding) sees equal scores, so attends uniformly
# instead of producing 0/0.
_MASKED = -1e30


def cudnn_attention_applies(dtype: str, head_dim: int) -> str | None:
  """None when cuDNN's fused attention can run here, else why not."""
  if jax.default_backend() != "gpu" or "nvidia" not in jax.devices()[0].device_kind.lower():
    return f"no NVIDIA GPU ({jax.default_backend()})"
  if jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16):
    return f"dtype {dtype} (cuDNN attention needs bfloat16 or float16)"
  if head_dim > 128 or head_dim % 8:
    return f"head dim {head_dim} (cuDNN needs <= 128 and a multiple of 8)"
  return None


def attention_implementation(requested: str, dtype: str, head_dim: int) -> str:
  """'xla', 'cudnn' or 'chunked' for `model.attention` = `requested` here.

  'auto' takes 'chunked' on a single CPU device only: on a mesh the batch is
  sharded, and chunks of a sharded batch would be gathered one by one.

  Raises:
    ValueError: an unknown name, or 'cudnn' where it cannot run (says why).
  """
  if requested not in ATTENTION:
    raise ValueError(f"model.attention={requested!r}: expected one of {ATTENTION}")
  why_not = cudnn_attention_applies(dtype, head_dim)
  if requested == "cudnn" and why_not:
    raise ValueError(f"model.attention='cudnn' cannot run here: {why_not}; use 'auto' or 'xla'")
  if requested != "auto":
    return requested
  if why_not is None:
    return "cudnn"
  return "chunked" if jax.default_backend() == "cpu" and jax.device_count() == 1 else "xla"


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *,
           implementation: str, chunk_mib: float = 8.0,
           unrolled_chunks: int = 16) -> jax.Array:
  """Attention of [B, L, N, D] queries over keys and values, padding left out.

  Args:
    mask: [B, L] right-padded (1 on real tokens).
    implementation: 'xla', 'cudnn' or 'chunked' (`attention_implementation`).
    chunk_mib: 'chunked': float32 scores per chunk of an undifferentiated pass.
    unrolled_chunks: 'chunked': up to this many chunks run as independent ops,
      more in a loop (0: always a loop).

  Returns:
    [B, L, N, D] in v's dtype. Rows of padding carry no meaning.
  """
  if implementation == "cudnn":
    return by_lengths(q, k, v, mask, implementation="cudnn")
  if implementation == "chunked":
    b, length, heads, _ = q.shape
    chunk = max(1, int(chunk_mib * 2**20) // (heads * length * length * 4))
    return chunked(q, k, v, mask, chunk=min(chunk, b), unrolled=unrolled_chunks)
  if implementation != "xla":
    raise ValueError(f"implementation={implementation!r}: expected one of {ATTENTION[1:]}")
  return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :].astype(bool),
                                      implementation="xla")


def by_lengths(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *,
               implementation: str) -> jax.Array:
  """`attend` with the padding given as per-row lengths (what cuDNN takes)
  rather than a mask; on real rows the two are the same."""
  # A row with no real token (batch padding) keeps one, so nothing is 0/0.
  lengths = jnp.maximum(jnp.sum(mask, axis=-1), 1).astype(jnp.int32)
  length = q.shape[1]
  if length % 2:
    # cuDNN's backward refuses odd sequence lengths ("Unsupported sequence
    # length", seen on an H100 with jax 0.11.2): one more padding position,
    # beyond every row's length, changes nothing and is sliced off.
    q, k, v = (jnp.pad(x, ((0, 0), (0, 1), (0, 0), (0, 0))) for x in (q, k, v))
  out = jax.nn.dot_product_attention(q, k, v, query_seq_lengths=lengths,
                                     key_value_seq_lengths=lengths,
                                     implementation=implementation)
  return out[:, :length]


def chunked(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *,
            chunk: int, unrolled: int = 16) -> jax.Array:
  """The 'chunked' implementation: [B, L, N, D] -> [B, L, N, D].

  Undifferentiated, `chunk` sequences at a time (the last chunk may be
  shorter): as independent ops where that makes at most `unrolled` chunks, else
  in a loop; differentiated, all at once.
  """
  scale = jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
  qh = jnp.transpose(q * scale, (0, 2, 1, 3))           # [B, N, L, D]
  kt = jnp.transpose(k, (0, 2, 3, 1))                   # [B, N, D, L]
  vh = jnp.transpose(v, (0, 2, 1, 3))                   # [B, N, L, D]
  bias = jnp.where(mask.astype(bool), 0.0, _MASKED)[:, None, None, :]   # [B, 1, 1, L] f32
  out = _in_chunks(qh, kt, vh, bias, chunk, unrolled)
  return jnp.transpose(out, (0, 2, 1, 3))


def _softmax_attention(qh: jax.Array, kt: jax.Array, vh: jax.Array,
                       bias: jax.Array) -> jax.Array:
  """[..., N, L, D] scaled queries, [..., N, D, L] keys, [..., N, L, D] values and
  a [..., 1, 1, L] float32 bias -> [..., N, L, D]; scores and softmax in float32.

  The normalisation divides the [L, D] output, not the [L, L] weights.
  """
  scores = jnp.matmul(qh, kt, preferred_element_type=jnp.float32) + bias
  # The softmax is shift-invariant, so the shift needs no gradient.
  shift = jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
  weights = jnp.exp(scores - shift)
  out = jnp.matmul(weights.astype(vh.dtype), vh, preferred_element_type=jnp.float32)
  return (out / jnp.sum(weights, axis=-1, keepdims=True)).astype(vh.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(4, 5))
def _in_chunks(qh, kt, vh, bias, chunk: int, unrolled: int):
  """`_softmax_attention` over the batch in chunks of `chunk` sequences: each
  its own ops if there are at most `unrolled` chunks, else a loop."""
  b = qh.shape[0]
  if chunk >= b:
    return _softmax_attention(qh, kt, vh, bias)
  starts = range(0, b, chunk)
  if len(starts) <= unrolled:
    return jnp.concatenate([_softmax_attention(*(x[s:s + chunk] for x in (qh, kt, vh, bias)))
                            for s in starts])
  return jax.lax.map(lambda xs: _softmax_attention(*xs), (qh, kt, vh, bias),
                     batch_size=chunk)


@_in_chunks.defjvp
def _in_chunks_jvp(chunk, unrolled, primals, tangents):
  del chunk, unrolled   # the derivative is of the whole batch at once (module docstring)
  return jax.jvp(_softmax_attention, primals, tangents)
