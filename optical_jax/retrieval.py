"""Dense and late-interaction retrieval: index directories, top-k, MaxSim.

An index directory holds `.npy` embedding shards, `docids.txt` (line i names
row i) and `index.json` (dim, count, dtype, shards, similarity, the caller's
metadata such as the model id), written last: without it a build is unfinished.

Search is exact by default: a jitted matmul plus top-k per corpus chunk, folded
into a running top-k, so scores never take more than `[query_batch_size,
chunk_size]` whatever N. Chunks all have one shape (the last is shifted back to
end at row N, its re-read rows scoring -inf), so the step compiles once. With a
mesh, corpus rows are sharded over its devices, each runs the chunked loop
under `jax.shard_map`, and the per-device lists are merged.

Results: float32 scores and int32 row indices, `[num_queries, k]`, best first;
equal scores list the lower row first (exact mode: `lax.top_k` is stable and
every merge lists lower rows first). Past the N-th result, scores are -inf and
indices -1 (`to_run` drops them). Non-finite embeddings give unspecified results.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import pathlib
import re
from typing import Any, Callable, Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

log = logging.getLogger(__name__)

Similarity = Literal["dot", "cos"]
Array = np.ndarray | jax.Array
INDEX_FILE = "index.json"
DOCIDS_FILE = "docids.txt"
FORMAT_VERSION = 1
_SIMILARITIES = ("dot", "cos")
# docids.txt is line-based and runs become whitespace-separated TREC lines.
_WHITESPACE = re.compile(r"\s")
# Keeps an all-zero vector at zero under cosine instead of 0/0 = NaN.
_NORM_EPS = 1e-12


@dataclasses.dataclass
class Index:
  """A loaded index directory.

  Attributes:
    path: the directory.
    shards: `[rows_i, dim]` embedding shards (read-only memmaps if `mmap`).
    docids: N ids; row i of the concatenated shards is `docids[i]`.
    dim, dtype: embedding width and storage dtype ('float16' or 'float32').
    similarity: 'cos' (rows L2-normalised at build time) or 'dot'.
    metadata: the caller's build metadata (model_id, config, ...).
  """
  path: pathlib.Path
  shards: list[np.ndarray]
  docids: list[str]
  dim: int
  dtype: str
  similarity: str
  metadata: dict[str, Any]

  @property
  def count(self) -> int:
    return len(self.docids)

  @property
  def model_id(self) -> str | None:
    return self.metadata.get("model_id")

  @functools.cached_property
  def embeddings(self) -> np.ndarray:
    """`[N, dim]`: the only shard as is (still mapped), else a concatenated copy."""
    return self.shards[0] if len(self.shards) == 1 else np.concatenate(self.shards)

  def search(self, queries: Array, k: int, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """`topk(queries [Q, dim], self.embeddings, k, **kwargs)`, index similarity."""
    return topk(queries, self.embeddings, k, **{"similarity": self.similarity, **kwargs})


def build_index(encode_fn: Callable[[list[str]], np.ndarray], texts: Sequence[str],
                docids: Sequence[str], out_dir: str | os.PathLike, *, batch_size: int = 256,
                dtype: str = "float16", shard_size: int = 262_144, similarity: Similarity = "cos",
                metadata: dict[str, Any] | None = None, overwrite: bool = False,
                progress: bool = True) -> Index:
  """Encodes `texts` in batches (tqdm bar) and writes an index directory.

  Args:
    encode_fn: any encoder, `list[str] -> [len(batch), dim]` array.
    texts, docids: N passages and their unique ids (no whitespace).
    out_dir: directory to write (created if needed).
    batch_size: texts per `encode_fn` call; shard_size: rows per `.npy` file.
    dtype: storage dtype, 'float16' (half the disk) or 'float32'.
    similarity: 'cos' stores L2-normalised rows (so an inner product on them
      is cosine, e.g. for FAISS), 'dot' stores rows as encoded.
    metadata: JSON-serialisable, kept in `index.json` (model_id, config).
    overwrite: replace an index already in `out_dir`.
    progress: show the progress bar.

  Returns:
    The written index, as `load_index` reads it.

  Raises:
    ValueError: length mismatch, no texts, bad or duplicate docids (checked
      before encoding anything), bad dtype/similarity, encoder output of the
      wrong shape or non-finite, float16 overflow.
    TypeError: metadata that is not JSON-serialisable.
    FileExistsError: `out_dir` holds an index and `overwrite` is False.
  """
  if len(texts) != len(docids) or not texts:
    raise ValueError(f"need as many docids as texts, and some: {len(texts)}, {len(docids)}")
  if dtype not in ("float16", "float32") or similarity not in _SIMILARITIES:
    raise ValueError(f"bad dtype {dtype!r} or similarity {similarity!r}")
  seen: dict[str, int] = {}
  for i, docid in enumerate(docids):
    if not isinstance(docid, str) or not docid or _WHITESPACE.search(docid):
      raise ValueError(f"docid {docid!r} at position {i} is empty, not a string or has "
                       "whitespace/newlines; docids.txt holds one docid per line")
    if seen.setdefault(docid, i) != i:
      raise ValueError(f"duplicate docid {docid!r} at positions {seen[docid]} and {i}")
  metadata = dict(metadata or {})
  try:
    json.dumps(metadata)
  except TypeError as e:
    raise TypeError(f"index metadata must be JSON-serialisable: {e}") from e
  out = pathlib.Path(out_dir)
  if (out / INDEX_FILE).exists() and not overwrite:
    raise FileExistsError(f"{out / INDEX_FILE} exists; pass overwrite=True to replace it")
  out.mkdir(parents=True, exist_ok=True)
  (out / INDEX_FILE).unlink(missing_ok=True)  # Unfinished until rewritten.
  for stale in out.glob("embeddings-*.npy"):
    stale.unlink()

  shards, pending, dim = [], [], None

  def write_shard(rows: np.ndarray) -> None:
    shards.append({"file": f"embeddings-{len(shards):05d}.npy", "rows": len(rows)})
    np.save(out / shards[-1]["file"], rows)

  with tqdm.tqdm(total=len(texts), desc="encode", unit="text", disable=not progress) as bar:
    for start in range(0, len(texts), batch_size):
      batch = list(texts[start:start + batch_size])
      emb = np.asarray(encode_fn(batch), dtype=np.float32)
      if emb.ndim != 2 or len(emb) != len(batch) or emb.shape[1] != (dim or emb.shape[1]):
        raise ValueError(f"encode_fn gave shape {emb.shape} for texts {start}.. "
                         f"(batch of {len(batch)}, dim {dim or '?'})")
      if not np.isfinite(emb).all():
        raise ValueError(f"encode_fn gave non-finite values for texts {start}..")
      dim = emb.shape[1]
      if similarity == "cos":
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), _NORM_EPS)
      emb = emb.astype(dtype)
      if not np.isfinite(emb).all():
        raise ValueError(f"embeddings of texts {start}.. overflow {dtype}; use float32")
      pending.append(emb)
      while sum(map(len, pending)) >= shard_size:
        rows = np.concatenate(pending)
        write_shard(rows[:shard_size])
        pending = [rows[shard_size:]]
      bar.update(len(batch))
  if sum(map(len, pending)):
    write_shard(np.concatenate(pending))
  (out / DOCIDS_FILE).write_text("".join(d + "\n" for d in docids), encoding="utf-8")
  info = {"format_version": FORMAT_VERSION, "dim": dim, "count": len(docids), "dtype": dtype,
          "similarity": similarity, "shards": shards, "metadata": metadata}
  tmp = out / (INDEX_FILE + ".tmp")
  tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
  os.replace(tmp, out / INDEX_FILE)  # Atomic: readers see all of it or none.
  return load_index(out)


def load_index(path: str | os.PathLike, *, mmap: bool = True) -> Index:
  """Reads and validates an index directory written by `build_index`.

  `mmap=True` memory-maps the shards (read-only) instead of reading them.

  Raises:
    FileNotFoundError: no `index.json`, or a shard or `docids.txt` is missing
      (the message names the file).
    ValueError: a shard whose shape/dtype is not what `index.json` says, rows
      or docids that do not add up to its count, an unknown format version
      (the message names the file).
  """
  path = pathlib.Path(path)
  info_file, docids_file = path / INDEX_FILE, path / DOCIDS_FILE
  if not info_file.exists():
    raise FileNotFoundError(f"{info_file} not found: not an index, or an unfinished build")
  info = json.loads(info_file.read_text(encoding="utf-8"))
  if info.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{info_file}: format_version {info.get('format_version')!r}, "
                     f"this code reads {FORMAT_VERSION}")
  dim, count, dtype = info["dim"], info["count"], info["dtype"]
  shards = []
  for entry in info["shards"]:
    f = path / entry["file"]
    if not f.exists():
      raise FileNotFoundError(f"index shard {f} listed in {info_file} is missing")
    arr = np.load(f, mmap_mode="r" if mmap else None)
    if arr.shape != (entry["rows"], dim) or arr.dtype != np.dtype(dtype):
      raise ValueError(f"index shard {f} is {arr.dtype}{list(arr.shape)}; {info_file} "
                       f"says {dtype}[{entry['rows']}, {dim}]")
    shards.append(arr)
  if sum(map(len, shards)) != count:
    raise ValueError(f"shards in {info_file} hold {sum(map(len, shards))} rows, not {count}")
  if not docids_file.exists():
    raise FileNotFoundError(f"{docids_file} (the docids of {path}) is missing")
  text = docids_file.read_text(encoding="utf-8")
  docids = text[:-1].split("\n") if text else []
  if len(docids) != count:
    raise ValueError(f"{docids_file} has {len(docids)} docids; {info_file} says {count}")
  return Index(path, shards, docids, dim, dtype, info["similarity"], info.get("metadata", {}))


def check_compatible(index: Index, query_dim: int, model_id: str | None = None) -> None:
  """Raises ValueError if a query encoder cannot search `index`.

  The width must match, and so must the model id when both the caller and the
  index metadata have one (equal-width vectors of different models are not
  comparable). An index with no model id only logs a warning.
  """
  if query_dim != index.dim:
    raise ValueError(f"query encoder dim {query_dim} != index dim {index.dim} of {index.path} "
                     f"(built with model {index.model_id!r})")
  if model_id is not None and index.model_id not in (None, model_id):
    raise ValueError(f"query model {model_id!r} does not match model {index.model_id!r} "
                     f"that built the index at {index.path}")
  if model_id is not None and index.model_id is None:
    log.warning("index %s records no model_id to check %r against", index.path, model_id)


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


def _merge_chunk(run_s: jax.Array | None, run_i: jax.Array | None, q: jax.Array,
                 block: jax.Array, start: jax.Array, real_start: jax.Array, offset: jax.Array,
                 n: jax.Array, *, k: int, similarity: str, approx: bool, recall_target: float,
                 precision: Any) -> tuple[jax.Array, jax.Array]:
  """Folds chunk `block [C, d]` into the running `[B, k]` top-k `run_s, run_i`.

  `block` holds local rows `real_start..+C`, of which it owns those from
  `start` on (earlier ones were the previous chunk's); `offset` is the global
  index of local row 0 (on shards) and global rows >= `n` are padding. `q` is
  `[B, d]` float32 (unit rows for 'cos'); `run_s` is None before the first chunk.
  """
  c = block.shape[0]
  block = block.astype(jnp.float32)
  if similarity == "cos":
    block = block / jnp.maximum(jnp.linalg.norm(block, axis=-1, keepdims=True), _NORM_EPS)
  s = jnp.einsum("bd,cd->bc", q, block, precision=precision, preferred_element_type=jnp.float32)
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
                                                "precision"))
# A traced start row: one compile for all chunks (slicing a jax.Array with
# Python ints would compile a new slice per offset).
_take_rows = jax.jit(jax.lax.dynamic_slice_in_dim, static_argnums=(2,))


def _rows(x: Array, start: int, size: int) -> Array:
  """`x[start:start + size]`, on the device for jax.Arrays (no host round trip)."""
  return _take_rows(x, start, size) if isinstance(x, jax.Array) else x[start:start + size]


def _balanced(n: int, chunk_size: int) -> int:
  """Chunk length <= chunk_size splitting n rows evenly (100k rows in 65536-row
  chunks would re-score 31k rows in the shifted last chunk; 2 x 50k, none)."""
  return -(-n // -(-n // chunk_size))


def _chunk_starts(n: int, c: int) -> list[tuple[int, int]]:
  """(start, real_start) per c-row chunk, the last shifted back to end at row n.

  Shifting rather than padding keeps one chunk shape without copying the
  corpus; the rows it re-reads score -inf.
  """
  return [(s, min(s, n - c)) for s in range(0, n, c)]


def _as_f32(x: Array, similarity: str) -> np.ndarray:
  """`[M, d]` as float32 numpy, rows L2-normalised for 'cos'."""
  x = np.asarray(x, dtype=np.float32)
  if similarity == "cos":
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _NORM_EPS)
  return x


def _finish(parts: list[tuple[jax.Array, jax.Array]], num_q: int) -> tuple[np.ndarray, np.ndarray]:
  s = np.concatenate([np.asarray(p[0]) for p in parts])[:num_q]
  i = np.concatenate([np.asarray(p[1]) for p in parts])[:num_q]
  return s, np.where(np.isneginf(s), -1, i).astype(np.int32)


def topk(queries: Array, corpus: Array, k: int, *, chunk_size: int = 131_072,
         query_batch_size: int = 512, similarity: Similarity = "dot", approx: bool = False,
         recall_target: float = 0.95, precision: Any = None,
         mesh: jax.sharding.Mesh | None = None, devices: Sequence[jax.Device] | None = None,
         backend: Literal["jax", "faiss"] = "jax") -> tuple[np.ndarray, np.ndarray]:
  """The k best corpus rows for each query.

  Args:
    queries: `[Q, d]`.
    corpus: `[N, d]`, numpy (memory-mapped is fine: read a chunk at a time)
      or a jax.Array; any float dtype, scored in float32.
    k: results per query; if k > N the last k - N columns are -inf / -1.
    chunk_size, query_batch_size: corpus rows (per device when sharded) and
      queries per step; the step's score buffer is float32 `[query_batch_size,
      chunk_size]`, plus the same again while selecting.
    similarity: 'dot' (inner product) or 'cos' (both sides L2-normalised).
    approx: per chunk, `jax.lax.approx_max_k` (fast on TPU; exact or nearly
      on CPU/GPU), with no tie order.
    recall_target: what `approx_max_k` aims for.
    precision: `jax.lax.Precision` of the matmul (None: the backend default,
      reduced-precision passes on TPU and, with TF32, GPU).
    mesh: shard corpus rows over all this mesh's devices.
    devices: shard over these devices instead (a 1-D mesh).
    backend: 'jax', or 'faiss' (exact `faiss.IndexFlatIP`; ignores chunking,
      approx and sharding).

  Returns:
    `(scores [Q, k] float32, indices [Q, k] int32)` numpy arrays.

  Raises:
    ValueError: bad shapes, k < 1, unknown similarity or backend.
    ImportError: backend='faiss' without faiss.
  """
  if np.ndim(queries) != 2 or np.ndim(corpus) != 2 or queries.shape[1] != corpus.shape[1]:
    raise ValueError(f"need queries [Q, d], corpus [N, d]; got {queries.shape}, {corpus.shape}")
  if k < 1 or similarity not in _SIMILARITIES or backend not in ("jax", "faiss"):
    raise ValueError(f"bad k={k}, similarity={similarity!r} or backend={backend!r}")
  if backend == "faiss":
    return FaissIndex(corpus, similarity=similarity).search(queries, k)
  if mesh is None and devices is not None:
    mesh = jax.make_mesh((len(devices),), ("corpus",), devices=list(devices),
                         axis_types=(jax.sharding.AxisType.Auto,))
  num_q, n = queries.shape[0], corpus.shape[0]
  if num_q == 0 or n == 0:
    return np.full((num_q, k), -np.inf, np.float32), np.full((num_q, k), -1, np.int32)
  # Fixed-size query batches (the last zero-padded, trimmed in _finish): one compile.
  batch = min(query_batch_size, num_q)
  q = np.pad(_as_f32(queries, similarity), ((0, -num_q % batch), (0, 0)))
  q_batches = [q[i:i + batch] for i in range(0, len(q), batch)]
  static = dict(k=k, similarity=similarity, approx=approx, recall_target=recall_target,
                precision=precision)
  if mesh is not None:
    return _sharded_topk(q_batches, corpus, num_q, mesh, chunk_size, static)
  c = _balanced(n, chunk_size)
  state = [(None, None)] * len(q_batches)
  q_batches = [jnp.asarray(qb) for qb in q_batches]
  # Chunks outer, queries inner: each chunk is read and transferred once.
  for start, real in _chunk_starts(n, c):
    block = jnp.asarray(_rows(corpus, real, c))
    for b, qb in enumerate(q_batches):
      state[b] = _step(*state[b], qb, block, start, real, 0, n, **static)
  return _finish(state, num_q)


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


def _sharded_topk(q_batches: list[np.ndarray], corpus: Array, num_q: int,
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
  c = _balanced(n, doc_chunk_size) if n else 0
  q_tokens, q_mask = jnp.asarray(q_tokens), jnp.asarray(q_mask)
  for start, real in _chunk_starts(n, c) if n else []:
    s = _maxsim_block(q_tokens, q_mask, _rows(d_tokens, real, c), _rows(d_mask, real, c),
                      precision=precision)
    out[:, start:real + c] = np.asarray(s)[:, start - real:]
  return out


@functools.partial(jax.jit, static_argnames=("k", "precision"))
def _rerank_block(q_tok, q_mask, d_tok, d_mask, cand, *, k, precision=None):
  s = _maxsim_scores(q_tok, q_mask[:, None], d_tok, d_mask, "qid,qkjd->qkij", precision)
  valid = cand >= 0
  s, pos = jax.lax.top_k(jnp.where(valid, s, -jnp.inf), k)
  idx = jnp.take_along_axis(cand, pos, axis=1)
  return s, jnp.where(jnp.take_along_axis(valid, pos, axis=1), idx, -1)


def _gather_rows(x: Array, idx: np.ndarray) -> Array:
  """`x[idx]` for `idx` of any shape; on the device for jax.Arrays."""
  if isinstance(x, jax.Array):
    return jnp.take(x, jnp.asarray(idx), axis=0)
  return np.asarray(x[idx.ravel()]).reshape(idx.shape + x.shape[1:])


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
    parts.append(_rerank_block(qt[b:b + batch], qm[b:b + batch], _gather_rows(d_tokens, safe),
                               _gather_rows(d_mask, safe), cb, k=k, precision=precision))
  scores = np.concatenate([np.asarray(p[0]) for p in parts])[:num_q]
  return scores, np.concatenate([np.asarray(p[1]) for p in parts])[:num_q].astype(np.int32)


class FaissIndex:
  """Exact inner-product search with `faiss.IndexFlatIP` (CPU).

  For 'cos', copies of corpus and queries are L2-normalised. Equal scores have
  no guaranteed order.

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
    x = np.ascontiguousarray(_as_f32(corpus, similarity))
    self.index = faiss.IndexFlatIP(x.shape[1])
    self.index.add(x)

  def search(self, queries: Array, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`queries [Q, d]` -> `(scores [Q, k] float32, indices [Q, k] int32)`, -inf/-1 padded."""
    s, i = self.index.search(np.ascontiguousarray(_as_f32(queries, self.similarity)), k)
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
