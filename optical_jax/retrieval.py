"""Dense retrieval: exact (or approximate) top-k over a corpus, FAISS.

Index directories are in `optical_jax.index` (re-exported here). Search is exact by default: a jitted matmul plus top-k per corpus chunk, folded
into a running top-k, so scores never take more than `[query_batch_size,
chunk_size]` whatever N. Chunks all have one shape (the last is shifted back to
end at row N, its re-read rows scoring -inf), so the step compiles once. With a
mesh, corpus rows are sharded over its devices, each runs the chunked loop
under `jax.shard_map`, and the per-device lists are merged. On CPUs with bf16
dot instructions, large searches score in bfloat16 and prove their float32
top-k exact (`topk`, precision='bf16_certified').

Results: float32 scores and int32 row indices, `[num_queries, k]`, best first;
equal scores list the lower row first (exact mode: `lax.top_k` is stable and
every merge lists lower rows first). Past the N-th result, scores are -inf and
indices -1 (`to_run` drops them). Non-finite embeddings give unspecified results.
Late interaction (MaxSim) is in `optical_jax.late_interaction`.
"""
from __future__ import annotations

import concurrent.futures
import functools
import logging
import os
import pathlib
from typing import Any, Callable, Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

log = logging.getLogger(__name__)

Similarity = Literal["dot", "cos"]
Array = np.ndarray | jax.Array
_SIMILARITIES = ("dot", "cos")
# Keeps an all-zero vector at zero under cosine instead of 0/0 = NaN.
_NORM_EPS = 1e-12


def _group_size(width: int, k: int) -> int:
  """Group size for `_wide_top_k`: a power of two near sqrt(width / k), or 1 (plain)."""
  m = 1 << max(0, round(np.log2(max(width / k, 1)) / 2))
  return m if m >= 8 and width // m >= 4 * k else 1


def _wide_top_k(s: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """`jax.lax.top_k(s [B, C], k)`: same values, indices and tie order, faster for C >> k.

  XLA:CPU's TopK is a single-threaded partial sort, slow over wide rows. Cut a
  row into groups of m: only the k groups with the largest maxima can hold a
  top-k element (any other has k groups whose maxima beat it or tie it from a
  lower index), so a vectorised max pass plus top_k over C/m maxima and over
  k*m candidates replaces top_k over C. Candidate groups go in index order and
  the < m tail columns last, so the stable top_k keeps lower-index-first ties.
  """
  b, c = s.shape
  m = _group_size(c, k)
  if m == 1:
    return jax.lax.top_k(s, k)
  g = c // m
  groups = s[:, :g * m].reshape(b, g, m)
  gid = jnp.sort(jax.lax.top_k(groups.max(axis=-1), k)[1], axis=1)
  cand = jnp.take_along_axis(groups, gid[:, :, None], axis=1).reshape(b, k * m)
  vals, pos = jax.lax.top_k(jnp.concatenate([cand, s[:, g * m:]], axis=1), k)
  in_groups = jnp.take_along_axis(gid, jnp.minimum(pos // m, k - 1), axis=1) * m + pos % m
  return vals, jnp.where(pos < k * m, in_groups, g * m + pos - k * m)


def _f32_rows(x: Array, similarity: str, xp: Any = jnp) -> Array:
  """`[..., d]` rows in float32, L2-normalised for 'cos'; `xp`: jnp or np."""
  x = xp.asarray(x, dtype=xp.float32)
  if similarity == "cos":
    x = x / xp.maximum(xp.linalg.norm(x, axis=-1, keepdims=True), _NORM_EPS)
  return x


def _merge_chunk(run_s: jax.Array | None, run_i: jax.Array | None, q: jax.Array,
                 block: jax.Array, start: jax.Array, real_start: jax.Array, offset: jax.Array,
                 n: jax.Array, *, k: int, similarity: str, approx: bool, recall_target: float,
                 precision: Any, masked: bool = True) -> tuple[jax.Array, jax.Array]:
  """Folds chunk `block [C, d]` into the running `[B, k]` top-k `run_s, run_i`.

  `block` holds local rows `real_start..+C`, of which it owns those from
  `start` on (earlier ones were the previous chunk's); `offset` is the global
  index of local row 0 (on shards) and global rows >= `n` are padding. `q` is
  `[B, d]` float32 (unit rows for 'cos'), or bfloat16 with a `_to_bf16` block;
  `run_s` is None before the first chunk. `masked=False` skips masking (a pass
  over the scores) for chunks that own all their rows and hold no padding.
  """
  c = block.shape[0]
  if q.dtype != jnp.bfloat16:  # bf16 queries come with blocks `_to_bf16` prepared.
    block = _f32_rows(block, similarity)
  s = jnp.einsum("bd,cd->bc", q, block, precision=precision, preferred_element_type=jnp.float32)
  if masked:
    rows = real_start + jnp.arange(c, dtype=jnp.int32)
    s = jnp.where((rows >= start) & (rows + offset < n), s, -jnp.inf)
  kc = min(k, c)
  if approx:
    cs, ci = jax.lax.approx_max_k(s, kc, recall_target=recall_target)
  else:
    cs, ci = _wide_top_k(s, kc)
  ci = ci.astype(jnp.int32) + real_start + offset
  if run_s is None:  # First chunk: nothing to merge (saves a top_k call).
    pad = ((0, 0), (0, k - kc))
    return jnp.pad(cs, pad, constant_values=-jnp.inf), jnp.pad(ci, pad, constant_values=-1)
  # The running list holds lower rows than this chunk; listing it first turns
  # top_k's lower-position-first tie rule into lower-row-first.
  ms, pos = jax.lax.top_k(jnp.concatenate([run_s, cs], axis=1), k)
  return ms, jnp.take_along_axis(jnp.concatenate([run_i, ci], axis=1), pos, axis=1)


_step = jax.jit(_merge_chunk, static_argnames=("k", "similarity", "approx", "recall_target",
                                                "precision", "masked"))


def _balanced(n: int, chunk_size: int) -> int:
  """Chunk length <= chunk_size splitting n rows evenly (100k rows in 65536-row
  chunks would re-score 31k rows in the shifted last chunk; 2 x 50k, none)."""
  return -(-n // -(-n // chunk_size))


def _chunk_starts(n: int, c: int) -> list[tuple[int, int]]:
  """(start, real_start) per c-row chunk, the last shifted back to end at row n
  (one shape without copying the corpus; the rows it re-reads score -inf)."""
  return [(s, min(s, n - c)) for s in range(0, n, c)]


def _batches(x: np.ndarray, batch: int) -> list[jax.Array]:
  """`[M, d]` in `batch`-row device arrays, the last zero-padded: one shape, one compile."""
  x = np.pad(x, ((0, -len(x) % batch), (0, 0)))
  return [jnp.asarray(x[i:i + batch]) for i in range(0, len(x), batch)]


def _finish(parts: list[tuple[Any, Any]], num_q: int) -> tuple[np.ndarray, np.ndarray]:
  s = np.concatenate([np.asarray(p[0]) for p in parts])[:num_q]
  i = np.concatenate([np.asarray(p[1]) for p in parts])[:num_q]
  return s, np.where(np.isneginf(s), -1, i).astype(np.int32)


def topk(queries: Array, corpus: Array, k: int, *, chunk_size: int = 131_072,
         query_batch_size: int = 512, similarity: Similarity = "dot", approx: bool = False,
         recall_target: float = 0.95, precision: Any = None, margin: int | None = None,
         mesh: jax.sharding.Mesh | None = None, devices: Sequence[jax.Device] | None = None,
         backend: Literal["jax", "faiss"] = "jax") -> tuple[np.ndarray, np.ndarray]:
  """The k best corpus rows for each query.

  precision='bf16_certified' scores in bfloat16 (2x XLA's float32 matmul on
  CPUs with AVX512_BF16), re-scores each query's best K = k + margin rows in
  float32 and proves no other row reaches the top-k (`_certify`), searching
  again in float32 the queries it cannot prove (near-ties at the cut): results
  are float32 scoring's, tie order included. Being exact, it is the default
  where it measured faster (1.05-1.2x float32 in benchmarks/search.py): x86
  bf16 CPUs, one device, no approx, >= 512 queries (it casts the corpus per
  call) and N >= 256 (K + 1).

  Args:
    queries: `[Q, d]`.
    corpus: `[N, d]` numpy (memory-mapped is fine: read a chunk at a time) or
      jax.Array, any float dtype, scored in float32.
    k: results per query; if k > N the last k - N columns are -inf / -1.
    chunk_size, query_batch_size: corpus rows (per device when sharded) and
      queries per step, which scores float32 `[query_batch_size, chunk_size]`.
    similarity: 'dot' (inner product) or 'cos' (both sides L2-normalised).
    approx, recall_target: per chunk, `jax.lax.approx_max_k` aiming at that
      recall (fast on TPU; exact or nearly on CPU/GPU), with no tie order.
    precision: 'bf16_certified'; None (above, else the backend default: lower
      on TPU and TF32 GPUs); a matmul `jax.lax.Precision` or name ('float32').
    margin: bf16_certified's extra candidates, default max(k, 16): fewer send
      more queries back to float32, more cost time.
    mesh, devices: shard corpus rows over this mesh's or these devices.
    backend: 'jax', or 'faiss' (exact `faiss.IndexFlatIP`; ignores chunking,
      approx, precision and sharding).

  Returns:
    `(scores [Q, k] float32, indices [Q, k] int32)` numpy arrays.

  Raises:
    ValueError: bad shapes, k < 1, unknown similarity or backend,
      'bf16_certified' with approx or sharding.
    ImportError: backend='faiss' without faiss.
  """
  if np.ndim(queries) != 2 or np.ndim(corpus) != 2 or queries.shape[1] != corpus.shape[1]:
    raise ValueError(f"need queries [Q, d], corpus [N, d]; got {queries.shape}, {corpus.shape}")
  if k < 1 or similarity not in _SIMILARITIES or backend not in ("jax", "faiss"):
    raise ValueError(f"bad k={k}, similarity={similarity!r} or backend={backend!r}")
  certified = isinstance(precision, str) and precision == "bf16_certified"
  if certified and (approx or mesh is not None or devices is not None):
    raise ValueError("precision='bf16_certified' is for exact, single-device search")
  if backend == "faiss":
    return FaissIndex(corpus, similarity=similarity).search(queries, k)
  if mesh is None and devices is not None:
    mesh = jax.make_mesh((len(devices),), ("corpus",), devices=list(devices),
                         axis_types=(jax.sharding.AxisType.Auto,))
  (num_q, n), num_cand = (len(queries), len(corpus)), k + (max(k, 16) if margin is None else margin)
  if num_q == 0 or n == 0:
    return np.full((num_q, k), -np.inf, np.float32), np.full((num_q, k), -1, np.int32)
  certified = certified or (precision is None and not approx and mesh is None and num_q >= 512
                            and n >= 256 * (num_cand + 1) and jax.default_backend() == "cpu"
                            and _cpu_has_bf16())
  # Balanced batches: 600 queries in 2 x 300, not 2 x 512 (424 padding).
  qf, batch = _f32_rows(queries, similarity, np), _balanced(num_q, query_batch_size)
  static = dict(k=k, similarity=similarity, approx=approx, recall_target=recall_target,
                precision="float32" if certified else precision)
  if mesh is not None:
    return _sharded_topk(_batches(qf, batch), corpus, num_q, mesh, chunk_size, static)
  if certified:
    return _certified_topk(qf, corpus, batch, chunk_size, static, num_cand)
  return _finish(_chunked(_batches(qf, batch), corpus, n, chunk_size, static)[0], num_q)


def _chunked(q_batches: list[jax.Array], corpus: Array, n: int, chunk_size: int,
             static: dict[str, Any], frame: jax.Array | None = None) -> tuple[list[Any], Any]:
  """Single-device chunk loop: `[B, k]` top-k per query batch, and with a
  `_frame` (bf16 batches) `_to_bf16`'s statistics, maxima over all chunks."""
  c = _balanced(n, chunk_size)
  state, stats = [(None, None)] * len(q_batches), None
  # Chunks outer, queries inner: each chunk is read, transferred (and cast)
  # once. numpy: reads (a memmap) and transfers just this chunk; jax.Array: an
  # on-device slice (JAX lowers constant-size slices to one compiled op).
  for start, real in _chunk_starts(n, c):
    block = jnp.asarray(corpus[real:real + c])
    if frame is not None:
      block, st = _to_bf16(block, frame, similarity=static["similarity"])
      stats = st if stats is None else jnp.maximum(stats, st)
    state = _map(lambda b: _step(*state[b], q_batches[b], block, start, real, 0, n,
                                 masked=real != start, **static), range(len(q_batches)))
  return state, stats


def _map(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
  """`[fn(x) for x in items]` on up to cpu_count threads, each waiting for its
  result: XLA:CPU then runs their steps at once (from one thread, in turn), so
  one batch's single-threaded TopK overlaps another's matmul (two bf16 steps
  of 512 x 100k: 1.2x faster)."""
  if len(items) < 2 or (os.cpu_count() or 1) < 2:
    return [fn(x) for x in items]
  with concurrent.futures.ThreadPoolExecutor(min(len(items), os.cpu_count())) as pool:
    return list(pool.map(lambda x: jax.block_until_ready(fn(x)), items))


@functools.cache
def _cpu_has_bf16() -> bool:
  """Whether this x86 CPU has bf16 dots (AVX512_BF16, AMX-BF16); XLA emulates them elsewhere."""
  try:
    flags = set(pathlib.Path("/proc/cpuinfo").read_bytes().split())
  except OSError:
    return False
  return bool(flags & {b"avx512_bf16", b"amx_bf16"})


def _frame(corpus: Array, similarity: str) -> np.ndarray:
  """`[d, 3]` float32 columns mu, u, v: the mean of <= 4096 spread rows, and a
  reflection H = I - 2 v v^T with H e_1 = u = mu / ||mu|| (else H = I, u = e_1).

  As q . x = Hq . H(x - mu) + q . mu, the bf16 pass scores z = H(x - mu), small
  where rows cluster, against Hq, whose large coordinate (along mu) meets z's
  small first one: on e5-like corpora (cosines ~0.8 +- 0.02) that shrinks the
  bound of `_certify` ~3x; without it most of their queries fail it.
  """
  mu = _f32_rows(corpus[::-(-len(corpus) // 4096)], similarity, np).mean(0, np.float64)
  e1, norm = np.eye(1, len(mu))[0], np.linalg.norm(mu)
  v = (mu / norm if norm > 0 else e1) - e1
  v = (v / np.linalg.norm(v) if np.linalg.norm(v) > 1e-3 else 0 * v).astype(np.float32)
  return np.stack([mu, e1 - 2.0 * v * v[0], v], axis=1).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("similarity",))
def _to_bf16(block: jax.Array, frame: jax.Array, similarity: str) -> tuple[jax.Array, jax.Array]:
  """`[C, d]` rows x as scored -> (bf16 z = H(x - mu), `[3]` maxima over rows of
  ||x - mu||^2 = ||z||^2, |u . (x - mu)| = |z_1| and ||x||^2)."""
  dot = functools.partial(jnp.dot, precision=jax.lax.Precision.HIGHEST)
  x, (mu, u, v) = _f32_rows(block, similarity), frame.T
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
    frame, stats: `_frame`'s columns; `_to_bf16`'s statistics.
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
      r[j] /= np.maximum(np.sqrt(np.einsum("kd,kd->k", x, x)), _NORM_EPS)
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
  normalised here and in `_to_bf16`, rounding differently), and e_j = w . z_j
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


def _certified_topk(qf: np.ndarray, corpus: Array, batch: int, chunk_size: int,
                    static: dict[str, Any], num_cand: int) -> tuple[np.ndarray, np.ndarray]:
  """`topk`'s 'bf16_certified' path: `qf [Q, d]` float32 queries, `num_cand` = K."""
  (num_q, n), k = (len(qf), len(corpus)), static["k"]
  frame = _frame(corpus, static["similarity"])
  v = frame[:, 2].astype(np.float64)
  w = (qf - 2 * np.outer(qf @ v, v)).astype(np.float32)  # Hq
  wb = [b.astype(jnp.bfloat16) for b in _batches(w, batch)]
  state, stats = _chunked(wb, corpus, n, chunk_size, {**static, "k": num_cand + 1,
                                                      "precision": None}, jnp.asarray(frame))
  qp, wp = (np.pad(a, ((0, len(wb) * batch - num_q), (0, 0))) for a in (qf, w))
  parts = _map(lambda b: _certify(  # numpy, mostly without the GIL.
      qp[b * batch:][:batch], wp[b * batch:][:batch], np.asarray(wb[b], np.float32), corpus,
      frame, np.asarray(state[b][0]), np.asarray(state[b][1]), np.asarray(stats, np.float64), k,
      static["similarity"]), range(len(state)))
  s, i, ok = (np.concatenate([p[j] for p in parts])[:num_q] for j in range(3))
  i, fail = np.where(np.isneginf(s), -1, i).astype(np.int32), np.flatnonzero(~ok)
  log.debug("bf16_certified: %d of %d queries not certified, re-searched in float32",
            fail.size, num_q)
  if fail.size:  # Power-of-two batches: few shapes to compile, whatever the count.
    fq = _batches(qf[fail], min(batch, max(8, 1 << (fail.size - 1).bit_length())))
    s[fail], i[fail] = _finish(_chunked(fq, corpus, n, chunk_size, static)[0], fail.size)
  return s, i


@functools.lru_cache(maxsize=32)
def _sharded_search_fn(mesh: jax.sharding.Mesh, per: int, c: int, k: int, similarity: str,
                       approx: bool, recall_target: float, precision: Any) -> Callable:
  """Jitted `(q [B, d], corpus [D * per, d] row-sharded, n) -> top-k`, per config."""
  axes = tuple(mesh.axis_names)
  static = dict(k=k, similarity=similarity, approx=approx, recall_target=recall_target,
                precision=precision)
  num_chunks = len(_chunk_starts(per, c))

  def local(q: jax.Array, shard: jax.Array, n: jax.Array) -> tuple[jax.Array, jax.Array]:
    offset = jax.lax.axis_index(axes) * per
    init = (jnp.full((q.shape[0], k), -jnp.inf), jnp.full((q.shape[0], k), -1, jnp.int32))
    # The carry turns device-varying (it depends on axis_index); its initial
    # value must say so too, or shard_map's varying-axes check rejects the loop.
    init = jax.lax.pcast(init, axes, to="varying")

    def body(j, carry):
      real = jnp.minimum(j * c, per - c)  # As _chunk_starts: the last ends at `per`.
      block = jax.lax.dynamic_slice_in_dim(shard, real, c)
      return _merge_chunk(*carry, q, block, j * c, real, offset, n, **static)

    return jax.lax.fori_loop(0, num_chunks, body, init)

  # Device lists concatenate in device (= row range) order, so the stable
  # top_k below keeps lower rows first.
  per_device = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axes, None), P()),
                             out_specs=(P(None, axes), P(None, axes)))
  replicated = NamedSharding(mesh, P())

  @functools.partial(jax.jit, out_shardings=(replicated, replicated))
  def search(q: jax.Array, corpus: jax.Array, n: jax.Array) -> tuple[jax.Array, jax.Array]:
    s, i = per_device(q, corpus, n)  # [B, D * k]
    ms, pos = jax.lax.top_k(s, k)
    return ms, jnp.take_along_axis(i, pos, axis=1)

  return search


def _sharded_topk(q_batches: list[jax.Array], corpus: Array, num_q: int,
                  mesh: jax.sharding.Mesh, chunk_size: int,
                  static: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
  """`topk` with corpus rows split evenly over `mesh` (zero rows pad the split)."""
  n, num_dev = corpus.shape[0], mesh.size
  per = -(-n // num_dev)
  if per * num_dev != n:
    pad = ((0, per * num_dev - n), (0, 0))
    corpus = jnp.pad(corpus, pad) if isinstance(corpus, jax.Array) else np.pad(corpus, pad)
  corpus = jax.device_put(corpus, NamedSharding(mesh, P(tuple(mesh.axis_names), None)))
  search = _sharded_search_fn(mesh, per, _balanced(per, chunk_size), **static)
  replicated = NamedSharding(mesh, P())
  n_dev = jax.device_put(np.int32(n), replicated)
  return _finish([search(jax.device_put(qb, replicated), corpus, n_dev) for qb in q_batches],
                 num_q)


class FaissIndex:
  """Exact inner-product search with `faiss.IndexFlatIP` (CPU); for 'cos' on
  L2-normalised copies. Equal scores have no guaranteed order.

  Raises:
    ImportError: faiss is not installed (the message says how to install it).
  """

  def __init__(self, corpus: Array, similarity: Similarity = "dot"):
    try:
      import faiss  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError("the FAISS backend needs faiss: pip install faiss-cpu") from e
    if similarity not in _SIMILARITIES:
      raise ValueError(f"similarity must be one of {_SIMILARITIES}, got {similarity!r}")
    self.similarity = similarity
    x = np.ascontiguousarray(_f32_rows(corpus, similarity, np))
    self.index = faiss.IndexFlatIP(x.shape[1])
    self.index.add(x)

  def search(self, queries: Array, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`queries [Q, d]` -> `(scores [Q, k] float32, indices [Q, k] int32)`, -inf/-1 padded."""
    s, i = self.index.search(np.ascontiguousarray(_f32_rows(queries, self.similarity, np)), k)
    # FAISS pads missing results with index -1 and score -FLT_MAX; use -inf.
    return np.where(i < 0, -np.inf, s).astype(np.float32), i.astype(np.int32)


def to_run(scores: np.ndarray, indices: np.ndarray, qids: Sequence[str],
           docids: Sequence[str]) -> dict[str, dict[str, float]]:
  """`[Q, k]` results to a run `{qid: {docid: score}}` (ir-measures style), -1s dropped.

  Raises:
    ValueError: shapes that disagree with `len(qids)`, or duplicate qids.
  """
  scores, indices = np.asarray(scores), np.asarray(indices)
  if scores.shape != indices.shape or scores.ndim != 2 or len(qids) != len(scores):
    raise ValueError(f"scores {scores.shape}, indices {indices.shape} and {len(qids)} qids "
                     "do not match")
  if len(set(qids)) != len(qids):
    raise ValueError("duplicate qids")
  return {qid: {docids[j]: float(s) for s, j in zip(row_s, row_i) if j >= 0}
          for qid, row_s, row_i in zip(qids, scores, indices)}


_REEXPORTS = {"maxsim": "late_interaction", "rerank_maxsim": "late_interaction",
              "Index": "index", "build_index": "index", "load_index": "index",
              "check_compatible": "index", "INDEX_FILE": "index", "DOCIDS_FILE": "index",
              "FORMAT_VERSION": "index"}


def __getattr__(name: str) -> Any:
  """Re-exports the index and late-interaction APIs, lazily: those modules import this one."""
  if name in _REEXPORTS:
    import importlib  # pylint: disable=g-import-not-at-top
    return getattr(importlib.import_module(f"optical_jax.{_REEXPORTS[name]}"), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
