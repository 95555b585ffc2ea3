"""The chunked top-k engine: corpus chunks scored against query batches, folded
into a running top-k.

Scores never take more than `[query_batch_size, chunk_size]` whatever the
corpus size N. Chunks all have one shape (the last is shifted back to end at
row N, its re-read rows scoring -inf), so the step compiles once. Ties list the
lower row first: `lax.top_k` is stable and every merge lists lower rows first.
"""
from __future__ import annotations

import concurrent.futures
import os
from typing import Any, Callable, Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Similarity = Literal["dot", "cos"]
Array = np.ndarray | jax.Array
SIMILARITIES = ("dot", "cos")
# Keeps an all-zero vector at zero under cosine instead of 0/0 = NaN.
NORM_EPS = 1e-12


def group_size(width: int, k: int) -> int:
  """Group size for `wide_top_k`: a power of two near sqrt(width / k), or 1 (plain)."""
  m = 1 << max(0, round(np.log2(max(width / k, 1)) / 2))
  return m if m >= 8 and width // m >= 4 * k else 1


def wide_top_k(s: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """`jax.lax.top_k(s [B, C], k)`: same values, indices and tie order, faster for C >> k.

  XLA:CPU's TopK is a single-threaded partial sort, slow over wide rows. Cut a
  row into groups of m: only the k groups with the largest maxima can hold a
  top-k element (any other has k groups whose maxima beat it or tie it from a
  lower index), so a vectorised max pass plus top_k over C/m maxima and over
  k*m candidates replaces top_k over C. Candidate groups go in index order and
  the < m tail columns last, so the stable top_k keeps lower-index-first ties.
  """
  b, c = s.shape
  m = group_size(c, k)
  if m == 1:
    return jax.lax.top_k(s, k)
  g = c // m
  groups = s[:, :g * m].reshape(b, g, m)
  gid = jnp.sort(jax.lax.top_k(groups.max(axis=-1), k)[1], axis=1)
  cand = jnp.take_along_axis(groups, gid[:, :, None], axis=1).reshape(b, k * m)
  vals, pos = jax.lax.top_k(jnp.concatenate([cand, s[:, g * m:]], axis=1), k)
  in_groups = jnp.take_along_axis(gid, jnp.minimum(pos // m, k - 1), axis=1) * m + pos % m
  return vals, jnp.where(pos < k * m, in_groups, g * m + pos - k * m)


def f32_rows(x: Array, similarity: str, xp: Any = jnp) -> Array:
  """`[..., d]` rows in float32, L2-normalised for 'cos'; `xp`: jnp or np."""
  x = xp.asarray(x, dtype=xp.float32)
  if similarity == "cos":
    x = x / xp.maximum(xp.linalg.norm(x, axis=-1, keepdims=True), NORM_EPS)
  return x


def merge_chunk(run_s: jax.Array | None, run_i: jax.Array | None, q: jax.Array,
                 block: jax.Array, start: jax.Array, real_start: jax.Array, offset: jax.Array,
                 n: jax.Array, *, k: int, similarity: str, approx: bool, recall_target: float,
                 precision: Any, masked: bool = True) -> tuple[jax.Array, jax.Array]:
  """Folds chunk `block [C, d]` into the running `[B, k]` top-k `run_s, run_i`.

  `block` holds local rows `real_start..+C`, of which it owns those from
  `start` on (earlier ones were the previous chunk's); `offset` is the global
  index of local row 0 (on shards) and global rows >= `n` are padding. `q` is
  `[B, d]` float32 (unit rows for 'cos'), or bfloat16 with a `to_bf16` block;
  `run_s` is None before the first chunk. `masked=False` skips masking (a pass
  over the scores) for chunks that own all their rows and hold no padding.
  """
  c = block.shape[0]
  if q.dtype != jnp.bfloat16:  # bf16 queries come with blocks `to_bf16` prepared.
    block = f32_rows(block, similarity)
  s = jnp.einsum("bd,cd->bc", q, block, precision=precision, preferred_element_type=jnp.float32)
  if masked:
    rows = real_start + jnp.arange(c, dtype=jnp.int32)
    s = jnp.where((rows >= start) & (rows + offset < n), s, -jnp.inf)
  kc = min(k, c)
  if approx:
    cs, ci = jax.lax.approx_max_k(s, kc, recall_target=recall_target)
  else:
    cs, ci = wide_top_k(s, kc)
  ci = ci.astype(jnp.int32) + real_start + offset
  if run_s is None:  # First chunk: nothing to merge (saves a top_k call).
    pad = ((0, 0), (0, k - kc))
    return jnp.pad(cs, pad, constant_values=-jnp.inf), jnp.pad(ci, pad, constant_values=-1)
  # The running list holds lower rows than this chunk; listing it first turns
  # top_k's lower-position-first tie rule into lower-row-first.
  ms, pos = jax.lax.top_k(jnp.concatenate([run_s, cs], axis=1), k)
  return ms, jnp.take_along_axis(jnp.concatenate([run_i, ci], axis=1), pos, axis=1)


jit_merge_chunk = jax.jit(merge_chunk, static_argnames=("k", "similarity", "approx",
                                                      "recall_target",
                                                "precision", "masked"))


def balanced(n: int, chunk_size: int) -> int:
  """Chunk length <= chunk_size splitting n rows evenly (100k rows in 65536-row
  chunks would re-score 31k rows in the shifted last chunk; 2 x 50k, none)."""
  return -(-n // -(-n // chunk_size))


def chunk_starts(n: int, c: int) -> list[tuple[int, int]]:
  """(start, real_start) per c-row chunk, the last shifted back to end at row n
  (one shape without copying the corpus; the rows it re-reads score -inf)."""
  return [(s, min(s, n - c)) for s in range(0, n, c)]


def batches(x: np.ndarray, batch: int) -> list[jax.Array]:
  """`[M, d]` in `batch`-row device arrays, the last zero-padded: one shape, one compile."""
  x = np.pad(x, ((0, -len(x) % batch), (0, 0)))
  return [jnp.asarray(x[i:i + batch]) for i in range(0, len(x), batch)]


def finish(parts: list[tuple[Any, Any]], num_q: int) -> tuple[np.ndarray, np.ndarray]:
  s = np.concatenate([np.asarray(p[0]) for p in parts])[:num_q]
  i = np.concatenate([np.asarray(p[1]) for p in parts])[:num_q]
  return s, np.where(np.isneginf(s), -1, i).astype(np.int32)


def chunked(q_batches: list[jax.Array], corpus: Array, n: int, chunk_size: int,
            static: dict[str, Any], prepare: Callable[[jax.Array], tuple[jax.Array, jax.Array]]
            | None = None) -> tuple[list[Any], Any]:
  """Single-device chunk loop: `[B, k]` top-k per query batch.

  `prepare` (the bf16 path's `certified.to_bf16`) turns each `[C, d]` chunk
  into the block that is scored plus statistics; their elementwise maxima over
  all chunks are returned too (None without `prepare`).
  """
  c = balanced(n, chunk_size)
  state, stats = [(None, None)] * len(q_batches), None
  # Chunks outer, queries inner: each chunk is read, transferred (and cast)
  # once. numpy: reads (a memmap) and transfers just this chunk; jax.Array: an
  # on-device slice (JAX lowers constant-size slices to one compiled op).
  for start, real in chunk_starts(n, c):
    block = jnp.asarray(corpus[real:real + c])
    if prepare is not None:
      block, st = prepare(block)
      stats = st if stats is None else jnp.maximum(stats, st)
    state = threaded_map(lambda b: jit_merge_chunk(*state[b], q_batches[b], block, start, real,
                                                   0, n, masked=real != start, **static),
                         range(len(q_batches)))
  return state, stats


def threaded_map(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
  """`[fn(x) for x in items]` on up to cpu_count threads, each waiting for its
  result: XLA:CPU then runs their steps at once (from one thread, in turn), so
  one batch's single-threaded TopK overlaps another's matmul (two bf16 steps
  of 512 x 100k: 1.2x faster)."""
  if len(items) < 2 or (os.cpu_count() or 1) < 2:
    return [fn(x) for x in items]
  with concurrent.futures.ThreadPoolExecutor(min(len(items), os.cpu_count())) as pool:
    return list(pool.map(lambda x: jax.block_until_ready(fn(x)), items))
