"""Index directories: a corpus encoded once, searched many times.

An index directory holds `.npy` embedding shards, `docids.txt` (line i names
row i) and `index.json` (dim, count, dtype, shards, similarity, the caller's
metadata such as the model id), written last: without it a build is unfinished.
A query encoder of another width or model id is refused (`check_compatible`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import pathlib
import re
from typing import Any, Callable, Sequence

import numpy as np
import tqdm

from optical_jax.search.chunks import Array
from optical_jax.search.chunks import NORM_EPS
from optical_jax.search.chunks import SIMILARITIES
from optical_jax.search.chunks import Similarity
from optical_jax.search.topk import topk

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
DOCIDS_FILE = "docids.txt"
FORMAT_VERSION = 1
# docids.txt is line-based and runs become whitespace-separated TREC lines.
_WHITESPACE = re.compile(r"\s")


@dataclasses.dataclass
class Index:
  """A loaded index directory.

  Attributes:
    path: the directory; metadata: the caller's build metadata (model_id, ...).
    shards: `[rows_i, dim]` embedding shards (read-only memmaps if `mmap`).
    docids: N ids; row i of the concatenated shards is `docids[i]`.
    dim, dtype: embedding width and storage dtype ('float16' or 'float32').
    similarity: 'cos' (rows L2-normalised at build time) or 'dot'.
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
  if dtype not in ("float16", "float32") or similarity not in SIMILARITIES:
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
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), NORM_EPS)
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
  """Reads and validates an index directory written by `build_index`; `mmap=True`
  memory-maps the shards (read-only) instead of reading them.

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
