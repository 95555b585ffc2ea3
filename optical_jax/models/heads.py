"""Heads on top of the encoder: pooling, an optional projection, normalisation.

A retrieval model is an `Encoder` plus a `Head`:

* dense retrieval (e5, sentence-transformers): mean pooling over real tokens (or
  the first token, CLS), L2-normalised;
* late interaction (ColBERT): every token projected to a small dimension (e.g.
  128) and L2-normalised, scored with MaxSim.

`TextModel` ties the two together and is what the rest of the package calls.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from flax import nnx
import jax
import jax.numpy as jnp

from optical_jax.models import encoder as encoder_lib

Pooling = Literal["mean", "cls"]


@dataclasses.dataclass(frozen=True)
class HeadConfig:
  """How token embeddings become retrieval vectors.

  Attributes:
    pooling: 'mean' over real tokens, or 'cls' (the first token).
    projection_dim: if set, a linear map H -> projection_dim applied to every
      token before pooling (ColBERT-style); None keeps H.
    projection_bias: whether that projection has a bias (ColBERT's has none).
    normalize: L2-normalise pooled vectors and projected tokens.
  """
  pooling: Pooling = "mean"
  projection_dim: int | None = None
  projection_bias: bool = False
  normalize: bool = True

  def __post_init__(self):
    if self.pooling not in ("mean", "cls"):
      raise ValueError(f"head.pooling must be 'mean' or 'cls', got {self.pooling!r}")


def mean_pool(tokens: jax.Array, mask: jax.Array) -> jax.Array:
  """[B, L, D] tokens, [B, L] mask -> [B, D] mean over real tokens.

  A row without real tokens (batch padding) pools to zeros, not NaN.
  """
  m = mask.astype(tokens.dtype)[..., None]
  total = jnp.sum(tokens * m, axis=1)
  return total / jnp.maximum(jnp.sum(m, axis=1), 1)


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """Unit vectors along `axis`; zero vectors stay zero."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=axis, keepdims=True))
  return (x / jnp.maximum(norm, eps)).astype(x.dtype)


class Head(nnx.Module):
  """Projection (optional), pooling and normalisation."""

  def __init__(self, cfg: HeadConfig, hidden_size: int, *, dtype="float32",
               param_dtype="float32", rngs: nnx.Rngs):
    self.cfg = cfg
    self.projection = None if not cfg.projection_dim else nnx.Linear(
        hidden_size, cfg.projection_dim, use_bias=cfg.projection_bias,
        dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype),
        kernel_init=nnx.with_partitioning(
            nnx.initializers.lecun_normal(), ("embed", None), eager_sharding=False),
        bias_init=nnx.with_partitioning(
            nnx.initializers.zeros_init(), (None,), eager_sharding=False),
        rngs=rngs)

  def tokens(self, tokens: jax.Array) -> jax.Array:
    """[B, L, H] -> [B, L, D]: projected (and normalised) token vectors."""
    if self.projection is not None:
      tokens = self.projection(tokens)
      if self.cfg.normalize:
        tokens = l2_normalize(tokens)
    return tokens

  def pool(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """[B, L, H] encoder output, [B, L] mask -> [B, D] retrieval vectors.

    Pools first, then projects and normalises, as sentence-transformers'
    Pooling -> Dense -> Normalize does (for mean or CLS pooling the linear map
    commutes with pooling), so an exported model embeds identically there.
    """
    pooled = mean_pool(tokens, mask) if self.cfg.pooling == "mean" else tokens[:, 0]
    if self.projection is not None:
      pooled = self.projection(pooled)
    return l2_normalize(pooled) if self.cfg.normalize else pooled


class TextModel(nnx.Module):
  """An encoder with its retrieval head.

  Attributes:
    encoder: the transformer.
    head: pooling / projection / normalisation.
    name: where the weights came from (a path or hub id), for index metadata.
  """

  def __init__(self, enc_cfg: encoder_lib.EncoderConfig, head_cfg: HeadConfig,
               *, rngs: nnx.Rngs, name: str = ""):
    self.encoder = encoder_lib.Encoder(enc_cfg, rngs=rngs)
    self.head = Head(head_cfg, enc_cfg.hidden_size, dtype=enc_cfg.dtype,
                     param_dtype=enc_cfg.param_dtype, rngs=rngs)
    self.name = name

  def token_embeddings(self, ids: jax.Array, mask: jax.Array,
                       type_ids: jax.Array | None = None, *,
                       output_layer: int | None = None) -> jax.Array:
    """[B, L] -> [B, L, H] encoder token embeddings (before the head)."""
    return self.encoder(ids, mask, type_ids, output_layer=output_layer)

  def __call__(self, ids: jax.Array, mask: jax.Array,
               type_ids: jax.Array | None = None) -> jax.Array:
    """[B, L] -> [B, D] pooled retrieval vectors."""
    return self.head.pool(self.encoder(ids, mask, type_ids), mask)
