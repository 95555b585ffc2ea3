"""A BERT-family transformer encoder in Flax NNX.

One module covers the checkpoints OPTICAL users bring, as described by a Hugging
Face `config.json`:

* BERT / mBERT and the e5 models: absolute positions counted from 0, token-type
  embeddings, post-LayerNorm blocks, GELU;
* RoBERTa / XLM-R: the same blocks, with positions counted from
  `pad_token_id + 1` for real tokens (padding keeps position `pad_token_id`), as
  fairseq did.

Every parameter carries logical axis names (`vocab`, `embed`, `heads`, `kv`,
`mlp`) in its `out_sharding` metadata; `sharding.py` maps them onto a device
mesh. Variables are created without eager sharding so the encoder also builds
outside any mesh (tests, CPU, export).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from flax import nnx
import jax
import jax.numpy as jnp

from optical_jax.models import activations
from optical_jax.models import attention as attention_lib
from optical_jax.models import packing as packing_lib

# HF `model_type` -> how positions are counted. Everything else in these
# families is the same post-LN BERT block.
_POSITION_STYLE = {
    "bert": "absolute",
    "roberta": "offset",
    "xlm-roberta": "offset",
    "camembert": "offset",
}


class UnsupportedArchitectureError(ValueError):
  """The checkpoint's config describes a model this encoder cannot run."""


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """Architecture of a BERT-family encoder (the fields of an HF `config.json`).

  Attributes:
    vocab_size: rows of the word embedding.
    hidden_size: model width H.
    num_layers: transformer blocks.
    num_heads: attention heads N; `hidden_size % num_heads == 0`.
    intermediate_size: MLP width.
    max_positions: rows of the position embedding.
    type_vocab_size: rows of the token-type embedding (0: none).
    layer_norm_eps: LayerNorm epsilon.
    pad_token_id: the padding id; also the position padding for XLM-R.
    model_type: HF `model_type` ('bert', 'xlm-roberta', 'roberta', ...).
    hidden_act: HF activation name ('gelu', 'gelu_new', ...).
    dtype: activation / matmul dtype ('float32' or 'bfloat16').
    param_dtype: parameter storage dtype.
    attention: 'auto', 'xla', 'cudnn' or 'chunked' (`attention.ATTENTION`);
      resolved when the model runs, for the platform it runs on.
    attention_chunk_mib: 'chunked': float32 scores per chunk of a pass that is
      not differentiated (attention.py).
    attention_unrolled_chunks: 'chunked': up to this many chunks of such a pass
      run as independent ops, more in a loop (0: always a loop).
  """
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_positions: int
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  pad_token_id: int = 0
  model_type: str = "bert"
  hidden_act: str = "gelu"
  dtype: str = "float32"
  param_dtype: str = "float32"
  attention: str = "auto"
  attention_chunk_mib: float = 8.0
  attention_unrolled_chunks: int = 16

  def __post_init__(self):
    if self.model_type not in _POSITION_STYLE:
      raise UnsupportedArchitectureError(
          f"model_type {self.model_type!r} is not a BERT-family encoder this "
          f"package runs; supported: {sorted(_POSITION_STYLE)}")
    if self.hidden_act not in activations.ACTIVATIONS:
      raise UnsupportedArchitectureError(
          f"hidden_act {self.hidden_act!r} is not supported; supported: "
          f"{sorted(activations.ACTIVATIONS)}")
    if self.attention not in attention_lib.ATTENTION:
      raise ValueError(f"model.attention={self.attention!r}: expected one of "
                       f"{attention_lib.ATTENTION}")
    if not self.attention_chunk_mib > 0:
      raise ValueError(f"model.attention_chunk_mib={self.attention_chunk_mib!r}: expected > 0")
    if (not isinstance(self.attention_unrolled_chunks, int)
        or self.attention_unrolled_chunks < 0):
      raise ValueError(f"model.attention_unrolled_chunks={self.attention_unrolled_chunks!r}: "
                       "expected an integer >= 0")
    if self.hidden_size % self.num_heads:
      raise UnsupportedArchitectureError(
          f"hidden_size {self.hidden_size} is not divisible by num_heads "
          f"{self.num_heads}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def position_offset(self) -> int:
    """First position id of a real token (0 for BERT, pad + 1 for XLM-R)."""
    if _POSITION_STYLE[self.model_type] == "offset":
      return self.pad_token_id + 1
    return 0

  @property
  def max_length(self) -> int:
    """Longest input, special tokens included, the position table allows."""
    return self.max_positions - self.position_offset

  @classmethod
  def from_hf(cls, hf: Mapping[str, Any], **overrides) -> "EncoderConfig":
    """Builds the config from a parsed HF `config.json`.

    Raises:
      UnsupportedArchitectureError: for a model type or option we cannot run
        (decoders, relative position embeddings, ...).
    """
    model_type = hf.get("model_type")
    if model_type not in _POSITION_STYLE:
      archs = hf.get("architectures")
      raise UnsupportedArchitectureError(
          f"model_type {model_type!r} (architectures {archs}) is not a "
          f"BERT-family encoder; supported: {sorted(_POSITION_STYLE)}")
    pos_type = hf.get("position_embedding_type", "absolute")
    if pos_type != "absolute":
      raise UnsupportedArchitectureError(
          f"position_embedding_type {pos_type!r} is not supported (absolute only)")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
      raise UnsupportedArchitectureError("decoder / cross-attention configs are not encoders")
    try:
      fields = dict(
          vocab_size=hf["vocab_size"],
          hidden_size=hf["hidden_size"],
          num_layers=hf["num_hidden_layers"],
          num_heads=hf["num_attention_heads"],
          intermediate_size=hf["intermediate_size"],
          max_positions=hf["max_position_embeddings"],
          type_vocab_size=hf.get("type_vocab_size", 2),
          layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
          pad_token_id=hf.get("pad_token_id") or 0,
          model_type=model_type,
          hidden_act=hf.get("hidden_act", "gelu"),
      )
    except KeyError as e:
      raise UnsupportedArchitectureError(f"config.json lacks the key {e}") from None
    fields.update(overrides)
    return cls(**fields)

  def to_hf(self) -> dict[str, Any]:
    """The HF `config.json` dict PyTorch transformers loads this encoder from."""
    arch = {"bert": "BertModel", "roberta": "RobertaModel",
            "xlm-roberta": "XLMRobertaModel", "camembert": "CamembertModel"}
    return {
        "architectures": [arch[self.model_type]],
        "model_type": self.model_type,
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "num_hidden_layers": self.num_layers,
        "num_attention_heads": self.num_heads,
        "intermediate_size": self.intermediate_size,
        "max_position_embeddings": self.max_positions,
        "type_vocab_size": self.type_vocab_size,
        "layer_norm_eps": self.layer_norm_eps,
        "pad_token_id": self.pad_token_id,
        "hidden_act": self.hidden_act,
        "position_embedding_type": "absolute",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02,
    }


def _partitioned(init, axes):
  # Logical axes only: placement is decided by sharding.py, which creates the
  # model inside a jit with out_shardings derived from these names.
  return nnx.with_partitioning(init, axes, eager_sharding=False)


def _layer_norm(cfg: EncoderConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(
      cfg.hidden_size, epsilon=cfg.layer_norm_eps,
      dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype),
      scale_init=_partitioned(nnx.initializers.ones_init(), ("embed",)),
      bias_init=_partitioned(nnx.initializers.zeros_init(), ("embed",)),
      rngs=rngs)


class Embeddings(nnx.Module):
  """Word + position + token-type embeddings, then LayerNorm."""

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    init = nnx.initializers.normal(0.02)
    kw = dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)
    self.word = nnx.Embed(cfg.vocab_size, cfg.hidden_size,
                          embedding_init=_partitioned(init, ("vocab", "embed")), **kw)
    self.position = nnx.Embed(cfg.max_positions, cfg.hidden_size,
                              embedding_init=_partitioned(init, (None, "embed")), **kw)
    self.token_type = (
        nnx.Embed(cfg.type_vocab_size, cfg.hidden_size,
                  embedding_init=_partitioned(init, (None, "embed")), **kw)
        if cfg.type_vocab_size else None)
    self.norm = _layer_norm(cfg, rngs)

  def __call__(self, ids: jax.Array, mask: jax.Array,
               type_ids: jax.Array | None) -> jax.Array:
    """[B, L] ids and a right-padded [B, L] mask -> [B, L, H] embeddings.

    Written so that no gradient is a scatter on a `cfg.dtype` tensor (a bf16
    scatter-add is a compare-and-swap loop on NVIDIA GPUs, openxla/xla#26371):
    the word rows are gathered from the parameter-dtype table and cast after
    (the gradient scatters in that dtype); positions are a static slice of
    their table (the gradient is a pad); token types are a select over the
    few rows of theirs (the gradient a masked sum).

    Positions assume right padding, as every batch of this package has it:
    BERT counts from 0 at every position, XLM-R counts real tokens from
    `pad + 1` and puts padding at `pad` (fairseq's cumulative count over the
    mask, which a right-padded mask turns into a slice).
    """
    cfg = self.cfg
    dtype = jnp.dtype(cfg.dtype)
    length = ids.shape[1]
    x = jnp.take(self.word.embedding[...], ids, axis=0).astype(dtype)
    positions = self.position.embedding[...]
    start = cfg.position_offset
    rows = jax.lax.slice_in_dim(positions, start, start + length).astype(dtype)   # [L, H]
    if start:   # XLM-R: padding sits at position `pad`
      pad_row = positions[cfg.pad_token_id].astype(dtype)
      x = x + jnp.where(mask[..., None].astype(bool), rows[None], pad_row)
    else:
      x = x + rows[None]
    if self.token_type is not None:
      types = self.token_type.embedding[...].astype(dtype)              # [T, H]
      if type_ids is None or types.shape[0] == 1:
        x = x + types[0]
      else:
        picked = types[0]
        for t in range(1, types.shape[0]):
          picked = jnp.where((type_ids == t)[..., None], types[t], picked)
        x = x + picked
    return self.norm(x)


class SelfAttention(nnx.Module):
  """Multi-head self-attention: projections here, the attention itself by the
  implementation `cfg.attention` resolves to (attention.py)."""

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    n, d, h = cfg.num_heads, cfg.head_dim, cfg.hidden_size
    init = nnx.initializers.normal(0.02)
    zeros = nnx.initializers.zeros_init()
    kw = dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)

    def proj():
      return nnx.LinearGeneral(
          h, (n, d), kernel_init=_partitioned(init, ("embed", "heads", "kv")),
          bias_init=_partitioned(zeros, ("heads", "kv")), **kw)

    self.query, self.key, self.value = proj(), proj(), proj()
    self.out = nnx.LinearGeneral(
        (n, d), h, axis=(-2, -1),
        kernel_init=_partitioned(init, ("heads", "kv", "embed")),
        bias_init=_partitioned(zeros, ("embed",)), **kw)

  def __call__(self, x: jax.Array, mask: jax.Array,
               packing: packing_lib.Packing | None = None) -> jax.Array:
    """[B, L, H] (or packed [C, H]) and a [B, L] key mask -> x's shape."""
    q, k, v = self.query(x), self.key(x), self.value(x)      # [B, L, N, D] (or [C, N, D])
    if packing is not None:
      q, k, v = (packing.unpack(t) for t in (q, k, v))
    cfg = self.cfg
    impl = attention_lib.attention_implementation(cfg.attention, cfg.dtype, cfg.head_dim)
    out = attention_lib.attend(q, k, v, mask, implementation=impl,
                               chunk_mib=cfg.attention_chunk_mib,
                               unrolled_chunks=cfg.attention_unrolled_chunks)
    return self.out(out if packing is None else packing.pack(out))


class Block(nnx.Module):
  """Post-LayerNorm transformer block: LN(x + attn(x)), then LN(x + mlp(x))."""

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    init = nnx.initializers.normal(0.02)
    zeros = nnx.initializers.zeros_init()
    kw = dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)
    self.attention = SelfAttention(cfg, rngs=rngs)
    self.attention_norm = _layer_norm(cfg, rngs)
    self.mlp_in = nnx.Linear(cfg.hidden_size, cfg.intermediate_size,
                             kernel_init=_partitioned(init, ("embed", "mlp")),
                             bias_init=_partitioned(zeros, ("mlp",)), **kw)
    self.mlp_out = nnx.Linear(cfg.intermediate_size, cfg.hidden_size,
                              kernel_init=_partitioned(init, ("mlp", "embed")),
                              bias_init=_partitioned(zeros, ("embed",)), **kw)
    self.mlp_norm = _layer_norm(cfg, rngs)
    self.activation = activations.ACTIVATIONS[cfg.hidden_act]

  def __call__(self, x: jax.Array, mask: jax.Array,
               packing: packing_lib.Packing | None = None) -> jax.Array:
    x = self.attention_norm(x + self.attention(x, mask, packing))
    return self.mlp_norm(x + self.mlp_out(self.activation(self.mlp_in(x))))


class Encoder(nnx.Module):
  """The transformer encoder: token ids -> contextual token embeddings.

  Attributes:
    cfg: the architecture.
    embeddings: word/position/type embeddings and their LayerNorm.
    layers: the `cfg.num_layers` blocks, bottom first.
  """

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embeddings = Embeddings(cfg, rngs=rngs)
    self.layers = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])

  def hidden_states(self, ids: jax.Array, mask: jax.Array,
                    type_ids: jax.Array | None = None, *,
                    num_layers: int | None = None,
                    pack: jax.Array | None = None) -> list[jax.Array]:
    """All hidden states: the embedding output, then each block's, bottom up.

    Args:
      ids: [B, L] int token ids.
      mask: [B, L] 1 for real tokens, 0 for padding.
      type_ids: [B, L] token types, zeros when None.
      num_layers: run only this many blocks (default all).
      pack: int32 [C] from `packing.pack_index(mask, C)`: the blocks run on the
        real tokens only (packing.py); the states come back as [B, L, H].

    Returns:
      `num_layers + 1` arrays [B, L, H] in `cfg.dtype` (values at padding
      positions carry no meaning; use `mask`).
    """
    x = self.embeddings(ids, mask, type_ids)
    packing = None if pack is None else packing_lib.Packing.create(pack, mask)
    if packing is not None:
      x = packing.pack(x)
    states = [x]
    for layer in self.layers[:num_layers]:
      x = layer(x, mask, packing)
      states.append(x)
    return states if packing is None else [packing.unpack(s) for s in states]

  def __call__(self, ids: jax.Array, mask: jax.Array,
               type_ids: jax.Array | None = None, *,
               output_layer: int | None = None, pack: jax.Array | None = None) -> jax.Array:
    """[B, L] ids and mask -> [B, L, H] token embeddings of one layer.

    `output_layer` is 1-based (0: the embedding output; negative counts from
    the top, -1 the last block); the blocks above it are not run. `pack`: as
    in `hidden_states`.
    """
    stop = self.layer_index(output_layer)
    return self.hidden_states(ids, mask, type_ids, num_layers=stop, pack=pack)[stop]

  def layer_index(self, layer: int | None) -> int:
    """A 1-based or negative layer number -> index into `hidden_states`."""
    n = self.cfg.num_layers
    if layer is None:
      return n
    if not -n - 1 <= layer <= n:
      raise ValueError(f"layer {layer} out of range for {n} layers")
    return layer % (n + 1)
