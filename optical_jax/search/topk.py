"""Dense retrieval: exact (or approximate) top-k over a corpus, FAISS.

Index directories are in `index.py`. Search is exact by default: a jitted
matmul plus top-k per corpus chunk, folded into a running top-k, so scores
never take more than `[query_batch_size, chunk_size]` whatever N. Chunks all have one shape (the last is shifted back to
end at row N, its re-read rows scoring -inf), so the step compiles once. With a
mesh, corpus rows are sharded over its devices, each runs the chunked loop
under `jax.shard_map`, and the per-device lists are merged. On CPUs with bf16
dot instructions, large searches score in bfloat16 and prove their float32
top-k exact (`topk`, precision='bf16_certified').

Results: float32 scores and int32 row indices, `[num_queries, k]`, best first;
equal scores list the lower row first (exact mode: `lax.top_k` is stable and
every merge lists lower rows first). Past the N-th result, scores are -inf and
indices -1 (`to_run` drops them). Non-finite embeddings give unspecified results.
Late interaction (MaxSim) is in `late_interaction.py`; the chunk engine in
`chunks.py`, the certified bf16 path in `certified.py`.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from optical_jax.core import cpu
from optical_jax.search import certified as certified_lib
from optical_jax.search import chunks
from optical_jax.search.chunks import Array
from optical_jax.search.chunks import Similarity

log = logging.getLogger(__name__)


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
  if k < 1 or similarity not in chunks.SIMILARITIES or backend not in ("jax", "faiss"):
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
                            and cpu.has_bf16_dots())
  # Balanced batches: 600 queries in 2 x 300, not 2 x 512 (424 padding).
  qf, batch = chunks.f32_rows(queries, similarity, np), chunks.balanced(num_q, query_batch_size)
  static = dict(k=k, similarity=similarity, approx=approx, recall_target=recall_target,
                precision="float32" if certified else precision)
  if mesh is not None:
    return _sharded_topk(chunks.batches(qf, batch), corpus, num_q, mesh, chunk_size, static)
  if certified:
    return certified_lib.certified_topk(qf, corpus, batch, chunk_size, static, num_cand)
  return chunks.finish(chunks.chunked(chunks.batches(qf, batch), corpus, n, chunk_size, static)[0],
                       num_q)


@functools.lru_cache(maxsize=32)
def _sharded_search_fn(mesh: jax.sharding.Mesh, per: int, c: int, k: int, similarity: str,
                       approx: bool, recall_target: float, precision: Any) -> Callable:
  """Jitted `(q [B, d], corpus [D * per, d] row-sharded, n) -> top-k`, per config."""
  axes = tuple(mesh.axis_names)
  static = dict(k=k, similarity=similarity, approx=approx, recall_target=recall_target,
                precision=precision)
  num_chunks = len(chunks.chunk_starts(per, c))

  def local(q: jax.Array, shard: jax.Array, n: jax.Array) -> tuple[jax.Array, jax.Array]:
    offset = jax.lax.axis_index(axes) * per
    init = (jnp.full((q.shape[0], k), -jnp.inf), jnp.full((q.shape[0], k), -1, jnp.int32))
    # The carry turns device-varying (it depends on axis_index); its initial
    # value must say so too, or shard_map's varying-axes check rejects the loop.
    init = jax.lax.pcast(init, axes, to="varying")

    def body(j, carry):
      real = jnp.minimum(j * c, per - c)  # As chunks.chunk_starts: the last ends at `per`.
      block = jax.lax.dynamic_slice_in_dim(shard, real, c)
      return chunks.merge_chunk(*carry, q, block, j * c, real, offset, n, **static)

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
  search = _sharded_search_fn(mesh, per, chunks.balanced(per, chunk_size), **static)
  replicated = NamedSharding(mesh, P())
  n_dev = jax.device_put(np.int32(n), replicated)
  return chunks.finish([search(jax.device_put(qb, replicated), corpus, n_dev) for qb in q_batches],
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
    if similarity not in chunks.SIMILARITIES:
      raise ValueError(f"similarity must be one of {chunks.SIMILARITIES}, got {similarity!r}")
    self.similarity = similarity
    x = np.ascontiguousarray(chunks.f32_rows(corpus, similarity, np))
    self.index = faiss.IndexFlatIP(x.shape[1])
    self.index.add(x)

  def search(self, queries: Array, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`queries [Q, d]` -> `(scores [Q, k] float32, indices [Q, k] int32)`, -inf/-1 padded."""
    s, i = self.index.search(np.ascontiguousarray(chunks.f32_rows(queries, self.similarity, np)), k)
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
