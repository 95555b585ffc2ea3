"""Texts through a model, fast: pooled vectors, or token vectors for MaxSim.

Texts are sorted by length before batching, so most batches fall into a short
length bucket (Bible verses and queries are far shorter than 512 tokens), then
the results are put back in input order. Batches have a fixed row count and a
bucketed length, so the jitted encoder compiles once per bucket.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import pathlib
from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from optical_jax.core import cpu
from optical_jax.models import heads as heads_lib
from optical_jax.models import tokenizer as tokenizer_lib

log = logging.getLogger(__name__)


# The model goes in split (graph definition static, arrays as a pytree), split
# once per call of `encode_texts`: passing the module itself to a jitted
# function walks its whole graph on every batch: 3 ms of host time per call for
# e5-small on a 2-core AMD EPYC (0.4 ms split), time a fast device spends idle.
# Compiled with the CPU-dependent options of a forward program (core/cpu.py).
@functools.partial(cpu.jit_forward, static_argnums=0)
def _pooled(graphdef: nnx.GraphDef, state: nnx.State, ids: jax.Array,
            mask: jax.Array) -> jax.Array:
  return nnx.merge(graphdef, state)(ids, mask).astype(jnp.float32)


def encode_texts(model: heads_lib.TextModel, tokenizer: tokenizer_lib.Tokenizer,
                 texts: Sequence[str],
                 *, prefix: str = "", batch_size: int = 64, max_length: int | None = None,
                 desc: str | None = None, progress: bool = True) -> np.ndarray:
  """Pooled retrieval vectors of `texts`.

  Args:
    model: the encoder with its head (student, teacher, document side).
    tokenizer: its tokenizer.
    texts: N texts.
    prefix: prepended to each text ("query: " / "passage: " for e5).
    batch_size: rows per forward pass (the last batch is padded to it).
    max_length: token limit (default: the tokenizer's).
    desc: progress-bar label; `progress=False` hides the bar.

  Returns:
    [N, D] float32 vectors in the order of `texts`.
  """
  if not len(texts):
    raise ValueError("no texts to encode")
  # Length in characters is a good proxy for token count and costs nothing.
  order = np.argsort([len(t) for t in texts], kind="stable")
  graphdef, state = nnx.split(model)
  out = None
  bar = tqdm.tqdm(total=len(texts), desc=desc or "encoding", unit="text",
                  disable=not progress, leave=False)
  pending = None   # the batch on the device while the next one is tokenised

  def collect(idx, vecs):
    nonlocal out
    vecs = np.asarray(vecs)
    if out is None:
      out = np.empty((len(texts), vecs.shape[1]), np.float32)
    out[idx] = vecs[:len(idx)]
    bar.update(len(idx))

  for start in range(0, len(texts), batch_size):
    idx = order[start:start + batch_size]
    batch = tokenizer.encode([texts[i] for i in idx], prefix=prefix, max_length=max_length,
                             batch_size=batch_size)
    vecs = _pooled(graphdef, state, jnp.asarray(batch.ids), jnp.asarray(batch.mask))
    if pending is not None:
      collect(*pending)
    pending = (idx, vecs)
  collect(*pending)
  bar.close()
  return out


def fingerprint(model: heads_lib.TextModel, texts: Sequence[str], **settings) -> str:
  """A hash of the model's parameters (names, dtypes, bytes), the texts and
  `settings`: what determines `encode_texts`' output (about 0.5 s for e5-small)."""
  h = hashlib.sha256()
  for path, value in sorted(nnx.to_flat_state(nnx.state(model, nnx.Param)),
                            key=lambda kv: str(kv[0])):
    arr = np.asarray(value.get_value())
    h.update(f"{path}:{arr.dtype}:{arr.shape}".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
  h.update(repr(sorted(settings.items())).encode())
  for t in texts:
    h.update(t.encode("utf-8") + b"\0")
  return h.hexdigest()[:32]


def encode_texts_cached(cache_dir: str | os.PathLike, model: heads_lib.TextModel,
                        tokenizer: tokenizer_lib.Tokenizer, texts: Sequence[str], *,
                        prefix: str = "",
                        batch_size: int = 64, max_length: int | None = None,
                        **kwargs) -> np.ndarray:
  """`encode_texts`, stored in `cache_dir` under the `fingerprint` of its inputs.

  A frozen teacher encodes the same documents in every run of a grid; this
  encodes them once. The file is written by rename, so a crash leaves no
  half-written entry, and runs that race write the same bytes.
  """
  backend = getattr(tokenizer, "backend", None)
  if hasattr(backend, "to_str"):
    # Without the truncation / padding state, which encoding itself changes.
    spec = {k: v for k, v in json.loads(backend.to_str()).items()
            if k not in ("truncation", "padding")}
    vocab = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
  else:
    vocab = repr(backend)
  key = fingerprint(model, texts, prefix=prefix, max_length=max_length, tokenizer=vocab)
  path = pathlib.Path(cache_dir) / f"vectors-{key}.npy"
  if path.exists():
    log.info("document vectors from the cache: %s", path)
    return np.load(path)
  vecs = encode_texts(model, tokenizer, texts, prefix=prefix, batch_size=batch_size,
                      max_length=max_length, **kwargs)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
  np.save(tmp, vecs)
  os.replace(tmp, path)
  return vecs


@functools.partial(cpu.jit_forward, static_argnums=0)
def _token_vectors(graphdef: nnx.GraphDef, state: nnx.State, ids: jax.Array,
                   mask: jax.Array) -> jax.Array:
  # L2-normalised last-layer token vectors, as the late-interaction teacher scores them.
  model = nnx.merge(graphdef, state)
  tokens = model.head.tokens(model.encoder(ids, mask))
  return heads_lib.l2_normalize(tokens.astype(jnp.float32))


def encode_tokens(model: heads_lib.TextModel, tokenizer: tokenizer_lib.Tokenizer,
                  texts: Sequence[str], *, prefix: str = "", batch_size: int = 64,
                  max_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """L2-normalised token vectors of `texts` for MaxSim.

  Returns:
    `(tokens [N, L, D] float32, mask [N, L] int32)`, L the longest length
    bucket used: N * L * D * 4 bytes, for small collections.
  """
  parts = []
  graphdef, state = nnx.split(model)
  for start in range(0, len(texts), batch_size):
    enc = tokenizer.encode(list(texts[start:start + batch_size]), prefix=prefix,
                           max_length=max_length, batch_size=batch_size)
    vecs = np.asarray(_token_vectors(graphdef, state, jnp.asarray(enc.ids),
                                     jnp.asarray(enc.mask)))
    parts.append((vecs[:enc.num_texts], enc.mask[:enc.num_texts]))
  length = max(m.shape[1] for _, m in parts)
  tokens = np.concatenate([np.pad(v, ((0, 0), (0, length - v.shape[1]), (0, 0)))
                           for v, _ in parts])
  mask = np.concatenate([np.pad(m, ((0, 0), (0, length - m.shape[1]))) for _, m in parts])
  return tokens, mask
