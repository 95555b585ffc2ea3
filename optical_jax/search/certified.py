"""Exact top-k from a bfloat16 pass: score in bf16, prove the float32 top-k.

On CPUs with bf16 dot instructions (AVX512_BF16, AMX) a bf16 matmul runs about
twice as fast as XLA's float32 one. The bf16 pass keeps K = k + margin
candidates per query; they are re-scored in float32 and a rigorous bound on the
bf16 error (`bf16_bound`) proves that no other row reaches the top-k; the
queries it cannot prove (near-ties at the cut) are searched again in float32.
Results equal float32 scoring's, tie order included.
"""
from __future__ import annotations

import functools
import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optical_jax.search import chunks
from optical_jax.search.chunks import Array

log = logging.getLogger(__name__)


def _frame(corpus: Array, similarity: str) -> np.ndarray:
  """`[d, 3]` float32 columns mu, u, v: the mean of <= 4096 spread rows, and a
  reflection H = I - 2 v v^T with H e_1 = u = mu / ||mu|| (else H = I, u = e_1).

  As q . x = Hq . H(x - mu) + q . mu, the bf16 pass scores z = H(x - mu), small
  where rows cluster, against Hq, whose large coordinate (along mu) meets z's
  small first one: on e5-like corpora (cosines ~0.8 +- 0.02) that shrinks the
  bound of `_certify` ~3x; without it most of their queries fail it.
  """
  mu = chunks.f32_rows(corpus[::-(-len(corpus) // 4096)], similarity, np).mean(0, np.float64)
  e1, norm = np.eye(1, len(mu))[0], np.linalg.norm(mu)
  v = (mu / norm if norm > 0 else e1) - e1
  v = (v / np.linalg.norm(v) if np.linalg.norm(v) > 1e-3 else 0 * v).astype(np.float32)
  return np.stack([mu, e1 - 2.0 * v * v[0], v], axis=1).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("similarity",))
def to_bf16(block: jax.Array, frame: jax.Array, similarity: str) -> tuple[jax.Array, jax.Array]:
  """`[C, d]` rows x as scored -> (bf16 z = H(x - mu), `[3]` maxima over rows of
  ||x - mu||^2 = ||z||^2, |u . (x - mu)| = |z_1| and ||x||^2)."""
  dot = functools.partial(jnp.dot, precision=jax.lax.Precision.HIGHEST)
  x, (mu, u, v) = chunks.f32_rows(block, similarity), frame.T
  xw, xx = dot(x, frame), jnp.sum(x * x, axis=1)
  z = x - mu - 2 * (xw[:, 2] - dot(v, mu))[:, None] * v
  # ||x - mu||^2 expanded: XLA:CPU sums x * x as fast as it casts, (x - mu)^2
  # 3x slower. `_bf16_bound` covers the rounding of z and of these statistics.
  return z.astype(jnp.bfloat16), jnp.stack([
      jnp.max(xx - 2 * xw[:, 0]) + dot(mu, mu), jnp.max(jnp.abs(xw[:, 1] - dot(u, mu))),
      xx.max()])


def _certify(q: np.ndarray, w: np.ndarray, wb: np.ndarray, corpus: Array, frame: np.ndarray,
             cand_s: np.ndarray, cand_i: np.ndarray, stats: np.ndarray, k: int,
             similarity: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Re-scores K bf16 candidates in float32; proves which top-k are exact.

  Let r_j be row j's float32 score and b_j its bf16 one, fl(w_bf . z_bf_j).
  As |b_j + q . mu - r_j| < delta for all j (`_bf16_bound`), a row outside the
  candidates, with b_j <= t, the (K+1)-th bf16 score, has r_j < t + q . mu +
  delta: if the k-th re-scored candidate reaches that, no such row is in the
  top-k or ties into it.

  Args:
    q, w, wb: `[Q, d]` float32 queries (unit rows for 'cos'), Hq, and the
      float32 values of the bf16 Hq that were scored.
    corpus: as given to `topk`; only candidate rows are read.
    frame, stats: `_frame`'s columns; `to_bf16`'s statistics.
    cand_s, cand_i: `[Q, K + 1]` best bf16 scores (best first) and their rows.

  Returns:
    `(scores [Q, k], rows [Q, k], ok [Q] bool)`: the float32 top-k candidates,
    ties lower row first; ok where they are the exact top-k.
  """
  num_q, num_cand = q.shape[0], cand_s.shape[1] - 1
  idx = cand_i[:, :num_cand]
  rows = np.maximum(idx, 0)  # -1 (padding) reads row 0, scored -inf below.
  if isinstance(corpus, jax.Array) and {dev.platform for dev in corpus.devices()} != {"cpu"}:
    corpus = jnp.take(corpus, jnp.asarray(rows.ravel()), axis=0)  # Only these travel.
    rows = np.arange(idx.size).reshape(idx.shape)
  corpus, r = np.asarray(corpus), np.empty(idx.shape, np.float32)  # CPU: a view, no copy.
  for j in range(num_q):  # A query's rows stay in cache: 3x faster than one bulk gather.
    x = np.take(corpus, rows[j], axis=0).astype(np.float32, copy=False)
    r[j] = x @ q[j]
    if similarity == "cos":
      r[j] /= np.maximum(np.sqrt(np.einsum("kd,kd->k", x, x)), chunks.NORM_EPS)
  # -inf candidates are masked or missing rows; + 0.0 turns -0.0 into 0.0.
  r = np.where(cand_s[:, :num_cand] > -np.inf, r + 0.0, -np.inf)
  order = np.lexsort((idx, -r))[:, :k]
  s, idx = np.take_along_axis(r, order, 1), np.take_along_axis(idx, order, 1)
  t = cand_s[:, num_cand] + _bf16_bound(q, w, wb, frame, stats)
  return s, idx, (cand_s[:, num_cand] == -np.inf) | (s[:, k - 1] > t)


def _bf16_bound(q: np.ndarray, w: np.ndarray, wb: np.ndarray, frame: np.ndarray,
                stats: np.ndarray) -> np.ndarray:
  """`[Q]` float64 q . mu + delta, |b_j + q . mu - r_j| < delta for all rows j.

  Proof. Let e_j = q . x_j exactly (x_j exactly normalised for 'cos'). Float32
  sums of d terms in any order err by <= g sum |terms|, g = (d+1)u/(1-(d+1)u),
  u = 2^-24: |r_j - e_j| <= 2g ||q|| X, X = max ||x_j|| (2g: 'cos' rows are
  normalised here and in `to_bf16`, rounding differently), and e_j = w . z_j
  + q . mu within 6g ||q|| (X + ||mu||) (rounding of w, z). bf16 products are
  exact in float32 and summed in float32; round-to-nearest bf16 moves each
  z_ji by <= 2^-8 |z_ji|. With dw = w_bf - w, C = max ||z_j||, P = max |z_j1|
  and Cauchy-Schwarz over coordinates 2..d:
    |b_j - w . z_j| <= (1 + 2^-8) (|dw_1| P + ||dw_2:|| C)
                       + 2^-8 (|w_1| P + ||w_2:|| C) + 2g ||w_bf|| C,
  ~2^-7.5 ||q|| C (P << C where rows cluster along mu). delta pads C, P and
  the g terms for the rounding of the statistics, norms, q . mu and t + delta,
  and adds 2^-125 (d + sqrt(d) (||q|| + C)) for denormals flushed to zero.
  """
  d = q.shape[1]
  q, w, wb, mu = (a.astype(np.float64) for a in (q, w, wb, frame[:, 0]))
  g, m = (d + 1) * 2.0**-24 / (1 - (d + 1) * 2.0**-24), np.linalg.norm(mu)
  xn = np.sqrt(stats[2] * (1 + g))
  pad = 4 * g * (xn + m)  # Rounding in z = H(x - mu) and in the statistics.
  c = np.sqrt(max(stats[0], 0.0) + pad * (xn + m)) * (1 + g) + pad
  p = stats[1] * (1 + g) + pad
  qn, wbn = np.linalg.norm(q, axis=1), np.linalg.norm(wb, axis=1)
  (dw1, dw2), (w1, w2) = ((np.abs(a[:, 0]), np.linalg.norm(a[:, 1:], axis=1)) for a in (wb - w, w))
  delta = ((1 + 2.0**-8) * (dw1 * p + dw2 * c) + 2.0**-8 * (w1 * p + w2 * c)
           + 2 * g * wbn * c + 8 * g * qn * (xn + m))
  return q @ mu + delta * (1 + 2 * g) + 2.0**-125 * (d + d**0.5 * (qn + c))


def certified_topk(qf: np.ndarray, corpus: Array, batch: int, chunk_size: int,
                    static: dict[str, Any], num_cand: int) -> tuple[np.ndarray, np.ndarray]:
  """`topk`'s 'bf16_certified' path: `qf [Q, d]` float32 queries, `num_cand` = K."""
  (num_q, n), k = (len(qf), len(corpus)), static["k"]
  frame = _frame(corpus, static["similarity"])
  v = frame[:, 2].astype(np.float64)
  w = (qf - 2 * np.outer(qf @ v, v)).astype(np.float32)  # Hq
  wb = [b.astype(jnp.bfloat16) for b in chunks.batches(w, batch)]
  state, stats = chunks.chunked(
      wb, corpus, n, chunk_size, {**static, "k": num_cand + 1, "precision": None},
      prepare=functools.partial(to_bf16, frame=jnp.asarray(frame),
                                similarity=static["similarity"]))
  qp, wp = (np.pad(a, ((0, len(wb) * batch - num_q), (0, 0))) for a in (qf, w))
  parts = chunks.threaded_map(lambda b: _certify(  # numpy, mostly without the GIL.
      qp[b * batch:][:batch], wp[b * batch:][:batch], np.asarray(wb[b], np.float32), corpus,
      frame, np.asarray(state[b][0]), np.asarray(state[b][1]), np.asarray(stats, np.float64), k,
      static["similarity"]), range(len(state)))
  s, i, ok = (np.concatenate([p[j] for p in parts])[:num_q] for j in range(3))
  i, fail = np.where(np.isneginf(s), -1, i).astype(np.int32), np.flatnonzero(~ok)
  log.debug("bf16_certified: %d of %d queries not certified, re-searched in float32",
            fail.size, num_q)
  if fail.size:  # Power-of-two batches: few shapes to compile, whatever the count.
    fq = chunks.batches(qf[fail], min(batch, max(8, 1 << (fail.size - 1).bit_length())))
    s[fail], i[fail] = chunks.finish(chunks.chunked(fq, corpus, n, chunk_size, static)[0],
                                     fail.size)
  return s, i
