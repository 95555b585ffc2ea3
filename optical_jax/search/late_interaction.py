"""ColBERT-style late interaction (MaxSim): full scoring and candidate re-ranking.

score(q, n) = sum over real query tokens i of the max over real doc tokens j of
`q_tokens[q, i] . d_tokens[n, j]`. `maxsim` scores every query against every
doc a chunk of docs at a time; `rerank_maxsim` re-ranks per-query candidate rows
(e.g. a dense `topk.topk`). Both read only the doc rows they need, so the
doc arrays may be memory-mapped.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optical_jax.search import chunks

Array = np.ndarray | jax.Array


def _maxsim_scores(q_tok: jax.Array, q_mask: jax.Array, d_tok: jax.Array, d_mask: jax.Array,
                   spec: str, precision: Any) -> jax.Array:
  """Sum over real query tokens of the max over real doc tokens of q . d.

  `spec` gives `[B, M, Lq, Ld]` similarities; with `q_mask [B, 1, Lq]` and
  `d_mask [B or 1, M, Ld]` the result is `[B, M]`.
  """
  sim = jnp.einsum(spec, q_tok.astype(jnp.float32), d_tok.astype(jnp.float32),
                   precision=precision, preferred_element_type=jnp.float32)
  best = jnp.max(jnp.where(d_mask[..., None, :].astype(bool), sim, -jnp.inf), axis=-1)
  # where, not a multiply: -inf (empty doc) * 0 (padded query token) is NaN.
  return jnp.sum(jnp.where(q_mask.astype(bool), best, 0.0), axis=-1)


@functools.partial(jax.jit, static_argnames=("precision",))
def _maxsim_block(q_tok, q_mask, d_tok, d_mask, precision=None) -> jax.Array:
  return _maxsim_scores(q_tok, q_mask[:, None], d_tok, d_mask[None], "qid,njd->qnij", precision)


def maxsim(q_tokens: Array, q_mask: Array, d_tokens: Array, d_mask: Array, *,
           doc_chunk_size: int = 128, precision: Any = None) -> np.ndarray:
  """ColBERT late-interaction (MaxSim) scores of every query against every doc.

  score[q, n] = sum over real query tokens i of the max over real doc tokens j
  of `q_tokens[q, i] . d_tokens[n, j]`; padded tokens (mask 0) never count. A
  doc with no real tokens scores -inf (0 for a query with no real tokens, which
  scores 0 against every doc).

  Args:
    q_tokens, q_mask: `[Q, Lq, d]`, `[Q, Lq]` (1/True on real tokens).
    d_tokens, d_mask: `[N, Ld, d]`, `[N, Ld]`; numpy (memory-mapped is fine)
      or jax arrays.
    doc_chunk_size: docs per jitted step, which holds a float32
      `[Q, doc_chunk_size, Lq, Ld]` similarity tensor.
    precision: `jax.lax.Precision` of the token matmul.

  Returns:
    `[Q, N]` float32 numpy scores.

  Raises:
    ValueError: inconsistent shapes.
  """
  (num_q, lq, dim), (n, ld, d_dim) = q_tokens.shape, d_tokens.shape
  if dim != d_dim or q_mask.shape != (num_q, lq) or d_mask.shape != (n, ld):
    raise ValueError(f"inconsistent shapes: queries {q_tokens.shape}, {q_mask.shape}; "
                     f"docs {d_tokens.shape}, {d_mask.shape}")
  out = np.empty((num_q, n), np.float32)
  # One chunk shape for all chunks (the last shifted back), so one compile.
  c = chunks.balanced(n, doc_chunk_size) if n else 0
  q_tokens, q_mask = jnp.asarray(q_tokens), jnp.asarray(q_mask)
  for start, real in chunks.chunk_starts(n, c) if n else []:
    s = _maxsim_block(q_tokens, q_mask, d_tokens[real:real + c], d_mask[real:real + c],
                      precision=precision)
    out[:, start:real + c] = np.asarray(s)[:, start - real:]
  return out


def _gather_rows(x: Array, idx: np.ndarray) -> Array:
  """`x[idx]` for `idx` of any shape; on the device for jax.Arrays."""
  if isinstance(x, jax.Array):
    return jnp.take(x, jnp.asarray(idx), axis=0)
  return np.asarray(x[idx.ravel()]).reshape(idx.shape + x.shape[1:])


@functools.partial(jax.jit, static_argnames=("k", "precision"))
def _rerank_block(q_tok, q_mask, d_tok, d_mask, cand, *, k, precision=None):
  s = _maxsim_scores(q_tok, q_mask[:, None], d_tok, d_mask, "qid,qkjd->qkij", precision)
  valid = cand >= 0
  s, pos = jax.lax.top_k(jnp.where(valid, s, -jnp.inf), k)
  idx = jnp.take_along_axis(cand, pos, axis=1)
  return s, jnp.where(jnp.take_along_axis(valid, pos, axis=1), idx, -1)


def rerank_maxsim(q_tokens: Array, q_mask: Array, d_tokens: Array, d_mask: Array,
                  candidates: np.ndarray, *, k: int | None = None, query_batch_size: int = 32,
                  precision: Any = None) -> tuple[np.ndarray, np.ndarray]:
  """Re-ranks per-query candidate rows (e.g. a dense top-k) by MaxSim.

  Args:
    q_tokens, q_mask: `[Q, Lq, d]`, `[Q, Lq]`, as for `maxsim`.
    d_tokens, d_mask: `[N, Ld, d]`, `[N, Ld]` for the whole corpus; only
      candidate rows are read (fine for memory-mapped arrays).
    candidates: `[Q, K]` int rows, -1 for padding (as `topk` returns them).
    k: results kept per query (default K).
    query_batch_size: queries per jitted step, which gathers
      `[query_batch_size, K, Ld, d]` doc tokens.
    precision: `jax.lax.Precision` of the token matmul.

  Returns:
    `(scores [Q, k] float32, indices [Q, k] int32)`: candidates by MaxSim
    (the values `maxsim` gives), ties in candidate order, -1 candidates last
    with score -inf.

  Raises:
    ValueError: candidates not `[Q, K]`, or a candidate >= N.
  """
  cand = np.asarray(candidates).astype(np.int32)
  num_q, n = q_tokens.shape[0], d_tokens.shape[0]
  if cand.ndim != 2 or cand.shape[0] != num_q or (cand.size and cand.max() >= n):
    raise ValueError(f"candidates {cand.shape} must be [{num_q}, K] rows < {n}")
  k = cand.shape[1] if k is None else min(k, cand.shape[1])
  batch = max(1, min(query_batch_size, num_q))
  pad = -num_q % batch  # Padding queries get only -1 candidates; trimmed below.
  qt = np.pad(np.asarray(q_tokens, np.float32), ((0, pad), (0, 0), (0, 0)))
  qm = np.pad(np.asarray(q_mask), ((0, pad), (0, 0)))
  cand = np.pad(cand, ((0, pad), (0, 0)), constant_values=-1)
  parts = []
  for b in range(0, len(cand), batch):
    cb = cand[b:b + batch]
    safe = np.maximum(cb, 0)  # -1 would read the last row; its score is masked anyway.
    parts.append(_rerank_block(qt[b:b + batch], qm[b:b + batch],
                               _gather_rows(d_tokens, safe), _gather_rows(d_mask, safe), cb,
                               k=k, precision=precision))
  scores = np.concatenate([np.asarray(p[0]) for p in parts])[:num_q]
  return scores, np.concatenate([np.asarray(p[1]) for p in parts])[:num_q].astype(np.int32)
