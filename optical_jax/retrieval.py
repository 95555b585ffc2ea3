"""Dense and late-interaction retrieval: index directories, top-k, MaxSim.

An index directory holds `.npy` embedding shards, `docids.txt` (one docid per
line, row i of the concatenated shards is line i) and `index.json` (dim, count,
dtype, shard list, similarity, and the caller's metadata such as the model id).
`index.json` is written last, so a directory without it is an unfinished build.

Search is exact by default: a jitted similarity matmul plus `jax.lax.top_k` per
corpus chunk, folded into a running top-k, so the score matrix never exceeds
`[query_batch_size, chunk_size]` whatever the corpus size. Every chunk has the
same shape (the last one is shifted back to end at row N and its already-seen
rows score -inf), so each jitted function compiles once. With a mesh the corpus
rows are sharded over its devices, each device runs the same chunked loop under
`jax.shard_map`, and the per-device top-k lists are merged.

Result conventions (all search functions): scores are float32, indices int32
row numbers, both `[num_queries, k]`, best first. Equal scores keep the lower
row index first (exact mode; `lax.top_k` is stable and every merge lists lower
rows first). When fewer than k rows exist, the tail is padded with score -inf
and index -1; `to_run` drops that padding. Rows scoring -inf are treated as
absent, and non-finite embeddings give unspecified results.
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
INDEX_FILE = "index.json"
DOCIDS_FILE = "docids.txt"
FORMAT_VERSION = 1
_SIMILARITIES = ("dot", "cos")
_DTYPES = ("float16", "float32")
# A docid may not hold whitespace: docids.txt is line-based and runs are
# written as whitespace-separated TREC lines downstream.
_WHITESPACE = re.compile(r"\s")
# Keeps an all-zero vector at zero under cosine instead of 0/0 = NaN.
_NORM_EPS = 1e-12


# ---------------------------------------------------------------- index files


@dataclasses.dataclass
class Index:
  """A loaded index directory.

  Attributes:
    path: the directory.
    shards: embedding shards, each `[rows_i, dim]`, memory-mapped (read-only)
      when loaded with `mmap=True`.
    docids: N docids; row i of the concatenated shards belongs to `docids[i]`.
    dim: embedding dimension.
    dtype: storage dtype, 'float16' or 'float32'.
    similarity: 'cos' (rows were L2-normalised at build time) or 'dot'.
    metadata: the caller's metadata from build time (e.g. model_id, config).
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
    if len(self.shards) == 1:
      return self.shards[0]
    return np.concatenate(self.shards, axis=0)

  def search(self, queries: np.ndarray, k: int, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """`topk(queries [Q, dim], self.embeddings, k)` with the index's similarity."""
    kwargs.setdefault("similarity", self.similarity)
    return topk(queries, self.embeddings, k, **kwargs)


def _validate_docids(docids: Sequence[str]) -> None:
  seen: dict[str, int] = {}
  for i, docid in enumerate(docids):
    if not isinstance(docid, str) or not docid or _WHITESPACE.search(docid):
      raise ValueError(f"docid {docid!r} at position {i} is empty, not a string or "
                       "contains whitespace/newlines; docids.txt holds one docid per line")
    if docid in seen:
      raise ValueError(f"duplicate docid {docid!r} at positions {seen[docid]} and {i}")
    seen[docid] = i


def build_index(encode_fn: Callable[[list[str]], np.ndarray], texts: Sequence[str],
                docids: Sequence[str], out_dir: str | os.PathLike, *, batch_size: int = 256,
                dtype: str = "float16", shard_size: int = 262_144, similarity: Similarity = "cos",
                metadata: dict[str, Any] | None = None, overwrite: bool = False,
                progress: bool = True) -> Index:
  """Encodes `texts` in batches and writes an index directory.

  Args:
    encode_fn: `list[str] -> [len(batch), dim]` array; any encoder callable.
    texts: N passages; `docids`: their N unique ids (no whitespace).
    out_dir: directory to write (created if needed).
    batch_size: texts per `encode_fn` call.
    dtype: storage dtype, 'float16' (half the disk) or 'float32'.
    shard_size: rows per `.npy` shard.
    similarity: 'cos' stores L2-normalised rows (so a plain inner product on
      them is cosine), 'dot' stores them as encoded.
    metadata: JSON-serialisable dict stored in `index.json` (model_id, config).
    overwrite: replace an existing index in `out_dir`.
    progress: show a tqdm bar.

  Returns:
    The written index, loaded with `load_index`.

  Raises:
    ValueError: length mismatch, empty input, bad or duplicate docids (checked
      before any encoding), bad dtype/similarity, an encoder output of the
      wrong shape or with non-finite values, float16 overflow.
    TypeError: metadata that is not JSON-serialisable.
    FileExistsError: `out_dir` already holds an index and not `overwrite`.
  """
  if len(texts) != len(docids):
    raise ValueError(f"{len(texts)} texts but {len(docids)} docids")
  if not texts:
    raise ValueError("no texts to index")
  if dtype not in _DTYPES or similarity not in _SIMILARITIES:
    raise ValueError(f"dtype must be one of {_DTYPES} and similarity one of {_SIMILARITIES}, "
                     f"got {dtype!r}, {similarity!r}")
  _validate_docids(docids)
  metadata = dict(metadata or {})
  try:
    json.dumps(metadata)
  except TypeError as e:
    raise TypeError(f"index metadata must be JSON-serialisable: {e}") from e
  out = pathlib.Path(out_dir)
  if (out / INDEX_FILE).exists() and not overwrite:
    raise FileExistsError(f"{out / INDEX_FILE} exists; pass overwrite=True to replace it")
  out.mkdir(parents=True, exist_ok=True)
  (out / INDEX_FILE).unlink(missing_ok=True)  # The directory is unfinished until rewritten.
  for stale in out.glob("embeddings-*.npy"):
    stale.unlink()

  shards: list[dict[str, Any]] = []
  pending: list[np.ndarray] = []
  dim = None

  def write_shard(rows: np.ndarray) -> None:
    name = f"embeddings-{len(shards):05d}.npy"
    np.save(out / name, rows)
    shards.append({"file": name, "rows": int(rows.shape[0])})

  with tqdm.tqdm(total=len(texts), desc="encode", unit="text", disable=not progress) as bar:
    for start in range(0, len(texts), batch_size):
      batch = list(texts[start:start + batch_size])
      emb = np.asarray(encode_fn(batch), dtype=np.float32)
      if emb.ndim != 2 or emb.shape[0] != len(batch) or (dim is not None and emb.shape[1] != dim):
        raise ValueError(f"encode_fn returned shape {emb.shape} for a batch of {len(batch)} "
                         f"texts at {start}; expected [{len(batch)}, {dim or 'dim'}]")
      if not np.isfinite(emb).all():
        raise ValueError(f"encode_fn returned non-finite values for texts {start}.."
                         f"{start + len(batch) - 1}")
      dim = emb.shape[1]
      if similarity == "cos":
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), _NORM_EPS)
      emb = emb.astype(dtype)
      if not np.isfinite(emb).all():
        raise ValueError(f"embeddings of texts {start}.. overflow {dtype}; use dtype='float32'")
      pending.append(emb)
      while sum(len(p) for p in pending) >= shard_size:
        rows = np.concatenate(pending)
        write_shard(rows[:shard_size])
        pending = [rows[shard_size:]]
      bar.update(len(batch))
  if sum(len(p) for p in pending):
    write_shard(np.concatenate(pending))

  (out / DOCIDS_FILE).write_text("".join(d + "\n" for d in docids), encoding="utf-8")
  info = {"format_version": FORMAT_VERSION, "dim": dim, "count": len(docids), "dtype": dtype,
          "similarity": similarity, "shards": shards, "docids_file": DOCIDS_FILE,
          "metadata": metadata}
  tmp = out / (INDEX_FILE + ".tmp")
  tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
  os.replace(tmp, out / INDEX_FILE)  # Atomic: a reader sees the whole file or none.
  return load_index(out)


def load_index(path: str | os.PathLike, *, mmap: bool = True) -> Index:
  """Reads and validates an index directory written by `build_index`.

  Args:
    path: the directory.
    mmap: memory-map the shards (read-only) instead of reading them into RAM.

  Raises:
    FileNotFoundError: no `index.json`, or a listed shard or `docids.txt` is
      missing (the message names the file).
    ValueError: a shard whose shape/dtype differs from `index.json`, shard rows
      or docid lines that do not add up to the recorded count, an unknown
      format version (the message names the file).
  """
  path = pathlib.Path(path)
  info_file = path / INDEX_FILE
  if not info_file.exists():
    raise FileNotFoundError(f"{info_file} not found: not an index directory, or its build "
                            "did not finish")
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
      raise ValueError(f"index shard {f} is {arr.dtype}{list(arr.shape)}, but {info_file} "
                       f"says {dtype}[{entry['rows']}, {dim}]")
    shards.append(arr)
  rows = sum(len(s) for s in shards)
  if rows != count:
    raise ValueError(f"shards listed in {info_file} hold {rows} rows, count says {count}")
  docids_file = path / info.get("docids_file", DOCIDS_FILE)
  if not docids_file.exists():
    raise FileNotFoundError(f"{docids_file} (the docids of {path}) is missing")
  text = docids_file.read_text(encoding="utf-8")
  docids = text[:-1].split("\n") if text else []
  if len(docids) != count:
    raise ValueError(f"{docids_file} has {len(docids)} docids but {info_file} says {count}")
  return Index(path=path, shards=shards, docids=docids, dim=dim, dtype=dtype,
               similarity=info["similarity"], metadata=info.get("metadata", {}))


def check_compatible(index: Index, query_dim: int, model_id: str | None = None) -> None:
  """Raises ValueError if a query encoder cannot search `index`.

  The dimension must match; so must the model id when both the index metadata
  and the caller have one (vectors of different models of equal width are
  meaningless to compare). An index without a recorded model id only logs a
  warning, since nothing can be checked.
  """
  if query_dim != index.dim:
    raise ValueError(f"query encoder dim {query_dim} != index dim {index.dim} of {index.path} "
                     f"(built with model {index.model_id!r})")
  if model_id is not None and index.model_id is not None and model_id != index.model_id:
    raise ValueError(f"query model {model_id!r} does not match model {index.model_id!r} "
                     f"that built the index at {index.path}")
  if model_id is not None and index.model_id is None:
    log.warning("index %s records no model_id; cannot check it against %r", index.path, model_id)


# ------------------------------------------------------------------- top-k


def _unit(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), _NORM_EPS)


def _merge_chunk(run_s: jax.Array, run_i: jax.Array, q: jax.Array, block: jax.Array,
                 start: jax.Array, real_start: jax.Array, offset: jax.Array, n: jax.Array, *,
                 k: int, similarity: str, approx: bool, recall_target: float,
                 precision: Any) -> tuple[jax.Array, jax.Array]:
  """Folds one corpus chunk into a running top-k.

  Args:
    run_s, run_i: running `[B, k]` scores and global row indices.
    q: `[B, d]` float32 queries (already unit-norm for 'cos').
    block: `[C, d]` corpus rows `real_start .. real_start + C` (local rows).
    start: first local row this chunk is responsible for; rows before it
      (`real_start <= row < start`) were scored by the previous chunk.
    offset: global index of local row 0 (non-zero on corpus shards).
    n: global corpus size; global rows >= n are padding.
  """
  c = block.shape[0]
  block = block.astype(jnp.float32)
  if similarity == "cos":
    block = _unit(block)
  s = jnp.einsum("bd,cd->bc", q, block, precision=precision, preferred_element_type=jnp.float32)
  rows = real_start + jnp.arange(c, dtype=jnp.int32)
  s = jnp.where((rows >= start) & (rows + offset < n), s, -jnp.inf)
  kc = min(k, c)
  if approx:
    cs, ci = jax.lax.approx_max_k(s, kc, recall_target=recall_target)
  else:
    cs, ci = jax.lax.top_k(s, kc)
  ci = ci.astype(jnp.int32) + real_start + offset
  # The running list holds lower rows than this chunk; listing it first makes
  # top_k's lower-position-first tie rule a lower-row-first rule overall.
  ms, pos = jax.lax.top_k(jnp.concatenate([run_s, cs], axis=1), k)
  return ms, jnp.take_along_axis(jnp.concatenate([run_i, ci], axis=1), pos, axis=1)


_STATIC = ("k", "similarity", "approx", "recall_target", "precision")
_step = jax.jit(_merge_chunk, static_argnames=_STATIC)
# Traced start index: one compile for every chunk (a Python slice of a
# jax.Array would compile a new slice per distinct offset).
_take_rows = jax.jit(jax.lax.dynamic_slice_in_dim, static_argnums=(2,))


def _rows(x: np.ndarray | jax.Array, start: int, size: int) -> np.ndarray | jax.Array:
  """`x[start:start + size]`, on the device for jax.Arrays (no host round trip)."""
  if isinstance(x, jax.Array):
    return _take_rows(x, start, size)
  return x[start:start + size]


def _chunk_starts(n: int, c: int) -> list[tuple[int, int]]:
  """(start, real_start) per chunk of c rows: the last one shifted back to end at n.

  Shifting (instead of padding the last chunk) keeps every chunk the same
  shape without copying the corpus; the rows it re-reads score -inf.
  """
  return [(s, min(s, n - c)) for s in range(0, n, c)]


def _prepare_queries(queries: np.ndarray | jax.Array, similarity: str) -> np.ndarray:
  q = np.asarray(queries, dtype=np.float32)
  if similarity == "cos":
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), _NORM_EPS)
  return q


def _query_batches(q: np.ndarray, size: int) -> list[np.ndarray]:
  """Splits `[Q, d]` into batches of `size` rows, zero-padding the last one."""
  pad = -len(q) % size
  q = np.pad(q, ((0, pad), (0, 0)))
  return [q[i:i + size] for i in range(0, len(q), size)]


def _finish(parts: list[tuple[jax.Array, jax.Array]], num_q: int) -> tuple[np.ndarray, np.ndarray]:
  s = np.concatenate([np.asarray(p[0]) for p in parts])[:num_q]
  i = np.concatenate([np.asarray(p[1]) for p in parts])[:num_q]
  return s, np.where(np.isneginf(s), -1, i).astype(np.int32)


def topk(queries: np.ndarray | jax.Array, corpus: np.ndarray | jax.Array, k: int, *,
         chunk_size: int = 32_768, query_batch_size: int = 1024, similarity: Similarity = "dot",
         approx: bool = False, recall_target: float = 0.95, precision: Any = None,
         mesh: jax.sharding.Mesh | None = None, devices: Sequence[jax.Device] | None = None,
         backend: Literal["jax", "faiss"] = "jax") -> tuple[np.ndarray, np.ndarray]:
  """The k best corpus rows for each query.

  Args:
    queries: `[Q, d]`.
    corpus: `[N, d]`, a numpy array (memory-mapped is fine: it is read one
      chunk at a time) or a jax.Array; any float dtype, scored in float32.
    k: results per query; if k > N the last k - N columns are -inf / -1.
    chunk_size: corpus rows scored per step (per device when sharded).
    query_batch_size: queries per step; the score buffer is
      `[query_batch_size, chunk_size]` float32.
    similarity: 'dot' (inner product) or 'cos' (both sides L2-normalised).
    approx: per chunk, use `jax.lax.approx_max_k` (fast on TPU; on CPU/GPU it
      is exact or near exact). Ties then have no guaranteed order.
    recall_target: recall `approx_max_k` aims for.
    precision: `jax.lax.Precision` for the matmul (None: the backend default,
      which on GPU/TPU may be reduced-precision float32 passes).
    mesh: shard corpus rows over all of this mesh's devices.
    devices: instead of `mesh`, shard over these devices (a 1-D mesh).
    backend: 'jax', or 'faiss' (exact `faiss.IndexFlatIP`; ignores the
      chunking, approx and sharding arguments).

  Returns:
    `(scores [Q, k] float32, indices [Q, k] int32)` numpy arrays, best first,
    lower index first among equal scores (exact modes).

  Raises:
    ValueError: bad shapes, k < 1, unknown similarity or backend.
    ImportError: backend='faiss' without faiss installed.
  """
  if np.ndim(queries) != 2 or np.ndim(corpus) != 2 or queries.shape[1] != corpus.shape[1]:
    raise ValueError(f"need queries [Q, d] and corpus [N, d], got {queries.shape} and "
                     f"{corpus.shape}")
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
  batch = min(query_batch_size, num_q)
  q_batches = _query_batches(_prepare_queries(queries, similarity), batch)
  static = dict(k=k, similarity=similarity, approx=approx, recall_target=recall_target,
                precision=precision)
  if mesh is not None:
    return _sharded_topk(q_batches, corpus, num_q, mesh, chunk_size, static)
  c = min(chunk_size, n)
  init = (jnp.full((batch, k), -jnp.inf, jnp.float32), jnp.full((batch, k), -1, jnp.int32))
  state = [init] * len(q_batches)
  q_dev = [jnp.asarray(q) for q in q_batches]
  # Corpus chunks outer, queries inner: each chunk is read/transferred once.
  for start, real in _chunk_starts(n, c):
    block = jnp.asarray(_rows(corpus, real, c))
    for b, q in enumerate(q_dev):
      state[b] = _step(*state[b], q, block, start, real, 0, n, **static)
  return _finish(state, num_q)


@functools.lru_cache(maxsize=32)
def _sharded_search_fn(mesh: jax.sharding.Mesh, per: int, c: int, k: int, similarity: str,
                       approx: bool, recall_target: float, precision: Any) -> Callable:
  """Jitted `(q [B, d], corpus [D * per, d] row-sharded, n) -> top-k`, cached per config."""
  axes = tuple(mesh.axis_names)
  static = dict(k=k, similarity=similarity, approx=approx, recall_target=recall_target,
                precision=precision)
  num_chunks = len(_chunk_starts(per, c))

  def local(q: jax.Array, shard: jax.Array, n: jax.Array) -> tuple[jax.Array, jax.Array]:
    offset = jax.lax.axis_index(axes) * per
    batch = q.shape[0]
    init = (jnp.full((batch, k), -jnp.inf, jnp.float32), jnp.full((batch, k), -1, jnp.int32))
    # The loop carry becomes device-varying (it depends on axis_index), so its
    # initial value must be declared varying too or shard_map's type check fails.
    init = jax.lax.pcast(init, axes, to="varying")

    def body(j, carry):
      start = j * c
      real = jnp.minimum(start, per - c)  # As _chunk_starts: the last chunk ends at `per`.
      block = jax.lax.dynamic_slice_in_dim(shard, real, c)
      return _merge_chunk(*carry, q, block, start, real, offset, n, **static)

    return jax.lax.fori_loop(0, num_chunks, body, init)

  # Per-device lists concatenate in device (= row-range) order, so the final
  # stable top_k keeps the lower-row-first tie rule.
  per_device = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axes, None), P()),
                             out_specs=(P(None, axes), P(None, axes)))
  replicated = NamedSharding(mesh, P())

  @functools.partial(jax.jit, out_shardings=(replicated, replicated))
  def search(q: jax.Array, corpus: jax.Array, n: jax.Array) -> tuple[jax.Array, jax.Array]:
    s, i = per_device(q, corpus, n)  # [B, D * k]
    ms, pos = jax.lax.top_k(s, k)
    return ms, jnp.take_along_axis(i, pos, axis=1)

  return search


def _sharded_topk(q_batches: list[np.ndarray], corpus: np.ndarray | jax.Array, num_q: int,
                  mesh: jax.sharding.Mesh, chunk_size: int,
                  static: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
  """`topk` with corpus rows split evenly over `mesh` (zero rows pad the split)."""
  n, num_dev = corpus.shape[0], mesh.size
  per = -(-n // num_dev)
  rows_sharding = NamedSharding(mesh, P(tuple(mesh.axis_names), None))
  if per * num_dev != n:
    pad = ((0, per * num_dev - n), (0, 0))
    corpus = jnp.pad(corpus, pad) if isinstance(corpus, jax.Array) else np.pad(corpus, pad)
  corpus = jax.device_put(corpus, rows_sharding)
  search = _sharded_search_fn(mesh, per, min(chunk_size, per), **static)
  replicated = NamedSharding(mesh, P())
  n_dev = jax.device_put(np.int32(n), replicated)
  return _finish([search(jax.device_put(q, replicated), corpus, n_dev) for q in q_batches],
                 num_q)


# ------------------------------------------------------------ late interaction


def _maxsim_scores(q_tok: jax.Array, q_mask: jax.Array, d_tok: jax.Array, d_mask: jax.Array,
                   spec: str, precision: Any) -> jax.Array:
  """Sum over real query tokens of the max over real doc tokens of q . d.

  `spec` gives `[B, M, Lq, Ld]` similarities; `q_mask` is `[B, 1, Lq]` and
  `d_mask` `[B or 1, M, Ld]`, so the result is `[B, M]`.
  """
  sim = jnp.einsum(spec, q_tok.astype(jnp.float32), d_tok.astype(jnp.float32),
                   precision=precision, preferred_element_type=jnp.float32)  # [..., Lq, Ld]
  d_mask = d_mask[..., None, :].astype(bool)
  best = jnp.max(jnp.where(d_mask, sim, -jnp.inf), axis=-1)  # [..., Lq]; -inf: empty doc.
  # where, not multiply: -inf * 0 (padded query token, empty doc) would be NaN.
  return jnp.sum(jnp.where(q_mask.astype(bool), best, 0.0), axis=-1)


@functools.partial(jax.jit, static_argnames=("precision",))
def _maxsim_block(q_tok, q_mask, d_tok, d_mask, precision=None) -> jax.Array:
  return _maxsim_scores(q_tok, q_mask[:, None], d_tok, d_mask[None], "qid,njd->qnij", precision)


def maxsim(q_tokens: np.ndarray | jax.Array, q_mask: np.ndarray | jax.Array,
           d_tokens: np.ndarray | jax.Array, d_mask: np.ndarray | jax.Array, *,
           doc_chunk_size: int = 128, precision: Any = None) -> np.ndarray:
  """ColBERT late-interaction (MaxSim) scores of every query against every doc.

  score[q, n] = sum over real query tokens i of max over real doc tokens j of
  `q_tokens[q, i] . d_tokens[n, j]`. Padded tokens (mask 0) never count. A doc
  with no real tokens scores -inf (against a query with any real token); a
  query with no real tokens scores 0 against every doc.

  Args:
    q_tokens: `[Q, Lq, d]`; q_mask: `[Q, Lq]` (1/True on real tokens).
    d_tokens: `[N, Ld, d]`; d_mask: `[N, Ld]`. numpy (memory-mapped is fine)
      or jax arrays.
    doc_chunk_size: docs per jitted step; the step holds a float32
      `[Q, doc_chunk_size, Lq, Ld]` similarity tensor.
    precision: `jax.lax.Precision` for the token matmul.

  Returns:
    `[Q, N]` float32 numpy scores.

  Raises:
    ValueError: inconsistent shapes.
  """
  (num_q, lq, dim), (n, ld, d_dim) = q_tokens.shape, d_tokens.shape
  if dim != d_dim or q_mask.shape != (num_q, lq) or d_mask.shape != (n, ld):
    raise ValueError(f"inconsistent shapes q {q_tokens.shape} / {q_mask.shape}, "
                     f"d {d_tokens.shape} / {d_mask.shape}")
  out = np.empty((num_q, n), np.float32)
  if n == 0:
    return out
  c = min(doc_chunk_size, n)
  q_tokens, q_mask = jnp.asarray(q_tokens), jnp.asarray(q_mask)
  for start, real in _chunk_starts(n, c):
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


def _gather_rows(x: np.ndarray | jax.Array, idx: np.ndarray) -> np.ndarray | jax.Array:
  """`x[idx]` for `idx` of any shape; on the device for jax.Arrays."""
  if isinstance(x, jax.Array):
    return jnp.take(x, jnp.asarray(idx), axis=0)
  return np.asarray(x[idx.ravel()]).reshape(idx.shape + x.shape[1:])


def rerank_maxsim(q_tokens: np.ndarray | jax.Array, q_mask: np.ndarray | jax.Array,
                  d_tokens: np.ndarray | jax.Array, d_mask: np.ndarray | jax.Array,
                  candidates: np.ndarray, *, k: int | None = None, query_batch_size: int = 32,
                  precision: Any = None) -> tuple[np.ndarray, np.ndarray]:
  """Re-ranks per-query candidate rows (e.g. a dense top-k) by MaxSim.

  Args:
    q_tokens, q_mask: `[Q, Lq, d]`, `[Q, Lq]` query tokens and mask.
    d_tokens, d_mask: `[N, Ld, d]`, `[N, Ld]` token embeddings of the whole
      corpus; only candidate rows are read (fine for memory-mapped arrays).
    candidates: `[Q, K]` int row indices, -1 for padding (as `topk` returns).
    k: results to keep per query (default K).
    query_batch_size: queries per jitted step; the step gathers
      `[query_batch_size, K, Ld, d]` doc tokens.
    precision: `jax.lax.Precision` for the token matmul.

  Returns:
    `(scores [Q, k] float32, indices [Q, k] int32)`: candidates sorted by
    MaxSim (same values as `maxsim`), ties in candidate order; -1 candidates
    go last with score -inf and index -1.

  Raises:
    ValueError: candidates not `[Q, K]`, or a candidate >= N.
  """
  cand = np.asarray(candidates).astype(np.int32)
  num_q, n = q_tokens.shape[0], d_tokens.shape[0]
  if cand.ndim != 2 or cand.shape[0] != num_q or (cand.size and cand.max() >= n):
    raise ValueError(f"candidates {cand.shape} must be [{num_q}, K] rows < {n}")
  k = cand.shape[1] if k is None else min(k, cand.shape[1])
  batch = max(1, min(query_batch_size, num_q))
  pad = -num_q % batch  # Padding queries have only -1 candidates; trimmed below.
  qt = np.pad(np.asarray(q_tokens, np.float32), ((0, pad), (0, 0), (0, 0)))
  qm = np.pad(np.asarray(q_mask), ((0, pad), (0, 0)))
  cand = np.pad(cand, ((0, pad), (0, 0)), constant_values=-1)
  parts = []
  for b in range(0, len(cand), batch):
    cb = cand[b:b + batch]
    safe = np.maximum(cb, 0)  # -1 would wrap to the last row; its score is masked anyway.
    parts.append(_rerank_block(qt[b:b + batch], qm[b:b + batch], _gather_rows(d_tokens, safe),
                               _gather_rows(d_mask, safe), cb, k=k, precision=precision))
  scores = np.concatenate([np.asarray(p[0]) for p in parts])[:num_q]
  return scores, np.concatenate([np.asarray(p[1]) for p in parts])[:num_q].astype(np.int32)


# ----------------------------------------------------------------- FAISS, runs


def _import_faiss():
  try:
    import faiss  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("the FAISS backend needs faiss: pip install faiss-cpu") from e
  return faiss


class FaissIndex:
  """Exact inner-product search with `faiss.IndexFlatIP` (CPU).

  For 'cos' both corpus and queries are L2-normalised (copies; inputs are not
  modified). Equal scores have no guaranteed order.

  Raises:
    ImportError: faiss is not installed (the message says how to install it).
  """

  def __init__(self, corpus: np.ndarray | jax.Array, similarity: Similarity = "dot"):
    faiss = _import_faiss()
    if similarity not in _SIMILARITIES:
      raise ValueError(f"similarity must be one of {_SIMILARITIES}, got {similarity!r}")
    self.similarity = similarity
    x = _prepare_queries(corpus, similarity)  # float32, unit rows for 'cos'.
    self.index = faiss.IndexFlatIP(x.shape[1])
    self.index.add(np.ascontiguousarray(x))

  def search(self, queries: np.ndarray | jax.Array, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`queries [Q, d]` -> `(scores [Q, k] float32, indices [Q, k] int32)`, -inf/-1 padded."""
    q = np.ascontiguousarray(_prepare_queries(queries, self.similarity))
    s, i = self.index.search(q, k)
    # FAISS pads missing results with index -1 and score -FLT_MAX; use -inf.
    return np.where(i < 0, -np.inf, s).astype(np.float32), i.astype(np.int32)


def to_run(scores: np.ndarray, indices: np.ndarray, qids: Sequence[str],
           docids: Sequence[str]) -> dict[str, dict[str, float]]:
  """Search results `[Q, k]` to a run `{qid: {docid: score}}` (ir-measures style).

  Index -1 (padding) is skipped.

  Raises:
    ValueError: shapes that disagree with `len(qids)`, or duplicate qids.
  """
  scores, indices = np.asarray(scores), np.asarray(indices)
  if scores.shape != indices.shape or scores.ndim != 2 or len(qids) != scores.shape[0]:
    raise ValueError(f"scores {scores.shape} / indices {indices.shape} do not match "
                     f"{len(qids)} qids")
  if len(set(qids)) != len(qids):
    raise ValueError("duplicate qids")
  return {qid: {docids[j]: float(s) for s, j in zip(row_s, row_i) if j >= 0}
          for qid, row_s, row_i in zip(qids, scores, indices)}
