"""Batch inference: many texts through a model, fast.

Texts are sorted by length before batching, so most batches fall into a short
length bucket (Bible verses and queries are far shorter than 512 tokens), then
the results are put back in input order. Batches have a fixed row count and a
bucketed length, so the jitted encoder compiles once per bucket.
"""
from __future__ import annotations

from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from optical_jax import text
from optical_jax.models import heads as heads_lib


@nnx.jit
def _pooled(model: heads_lib.TextModel, ids: jax.Array, mask: jax.Array) -> jax.Array:
  return model(ids, mask).astype(jnp.float32)


def encode_texts(model: heads_lib.TextModel, tokenizer: text.Tokenizer, texts: Sequence[str],
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
  out = None
  bar = tqdm.tqdm(total=len(texts), desc=desc or "encoding", unit="text",
                  disable=not progress, leave=False)
  for start in range(0, len(texts), batch_size):
    idx = order[start:start + batch_size]
    batch = tokenizer.encode([texts[i] for i in idx], prefix=prefix, max_length=max_length,
                             batch_size=batch_size)
    vecs = np.asarray(_pooled(model, jnp.asarray(batch.ids), jnp.asarray(batch.mask)))
    if out is None:
      out = np.empty((len(texts), vecs.shape[1]), np.float32)
    out[idx] = vecs[:len(idx)]
    bar.update(len(idx))
  bar.close()
  return out
