"""Token packing: an encoder's per-token work on the real tokens only.

A training batch is right-padded to one length so the step compiles once, but
its texts are shorter: on the demo's Chichewa-English Bible pairs at 64 tokens,
29% of the source positions and 38% of the English ones are padding, and a
padded encoder spends that share of its matmuls on them. Everything in a BERT
block except attention acts on each token alone (the projections, the MLP,
LayerNorm, the residuals), so those run on the batch's real tokens gathered
into `[C, ...]` rows (C >= the real tokens, one budget per run); attention
reads `[B, L]` rows again and is unpacked around. On real positions the result
is the padded encoder's, to float rounding.

Packing and unpacking are both gathers, and on the real tokens each is the
other's transpose, so each is the other's derivative (custom VJPs): neither
direction has a scatter, which on NVIDIA GPUs is a compare-and-swap loop in
bfloat16 (openxla/xla#26371).

The host decides the shape: `pack_index(mask, capacity)` lists the real
positions (what `data/batches.py` adds to a batch as `<side>_pack`), and
`capacity` is the budget of packed rows a run compiles for.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

# Packed budgets are rounded up to a multiple of this many rows (matmul tiles).
ROW_MULTIPLE = 16


def pack_index(mask: np.ndarray, capacity: int) -> np.ndarray | None:
  """Where each packed row comes from, or None if the batch does not fit.

  Args:
    mask: [B, L] 1 on real tokens.
    capacity: packed rows C.

  Returns:
    int32 [C]: the flat positions (row-major in [B * L]) of the real tokens in
    order, then -1 for the empty rows; None when the batch has more than C
    real tokens (it then runs padded).
  """
  flat = np.flatnonzero(np.asarray(mask).reshape(-1))
  if flat.size > capacity:
    return None
  out = np.full(capacity, -1, np.int32)
  out[:flat.size] = flat
  return out


def capacity(real_tokens: np.ndarray, positions: int) -> int | None:
  """The packed budget for batches like these, or None where packing saves nothing.

  Args:
    real_tokens: real tokens per sampled batch (int array).
    positions: B * L, the padded batch's positions.

  Returns:
    the largest sample rounded up to `ROW_MULTIPLE` (a later batch over it runs
    padded, a second compiled shape); None if that is not below `positions`.
  """
  need = int(np.max(real_tokens))
  cap = ROW_MULTIPLE * math.ceil(max(need, 1) / ROW_MULTIPLE)
  return cap if cap < positions else None


def _take(x: jax.Array, index: jax.Array, keep: jax.Array) -> jax.Array:
  """x[index] along axis 0 where `keep`, else 0 (out-of-range indices clipped)."""
  rows = jnp.take(x, index, axis=0, mode="clip")
  return jnp.where(keep.reshape(keep.shape + (1,) * (x.ndim - 1)), rows, 0)


@jax.custom_vjp
def _pack(x, source, slot, real):
  return _take(x, source, source >= 0)


@jax.custom_vjp
def _unpack(x, source, slot, real):
  return _take(x, slot, real)


def _pack_fwd(x, source, slot, real):
  return _pack(x, source, slot, real), (source, slot, real)


def _pack_bwd(res, g):
  return (_unpack(g, *res), None, None, None)


def _unpack_fwd(x, source, slot, real):
  return _unpack(x, source, slot, real), (source, slot, real)


def _unpack_bwd(res, g):
  return (_pack(g, *res), None, None, None)


_pack.defvjp(_pack_fwd, _pack_bwd)
_unpack.defvjp(_unpack_fwd, _unpack_bwd)


@dataclasses.dataclass(frozen=True)
class Packing:
  """The map between a padded batch [B, L] and its packed tokens [C].

  Attributes:
    source: int32 [C], the flat position of each packed row, -1 for empty rows
      (`pack_index`).
    slot: int32 [B * L], the packed row of each position (meaningless at
      padding).
    real: bool [B * L], the mask, flat.
    shape: (B, L).
  """
  source: jax.Array
  slot: jax.Array
  real: jax.Array
  shape: tuple[int, int]

  @classmethod
  def create(cls, source: jax.Array, mask: jax.Array) -> "Packing":
    """From a `pack_index` array [C] and the batch's [B, L] mask (inside jit)."""
    real = mask.reshape(-1).astype(bool)
    slot = jnp.cumsum(real, dtype=jnp.int32) - 1
    return cls(source.astype(jnp.int32), slot, real, tuple(mask.shape))

  def pack(self, x: jax.Array) -> jax.Array:
    """[B, L, ...] -> [C, ...]: the real tokens in order, zeros after."""
    flat = x.reshape((-1,) + x.shape[2:])
    return _pack(flat, self.source, self.slot, self.real)

  def unpack(self, x: jax.Array) -> jax.Array:
    """[C, ...] -> [B, L, ...], zeros at padding."""
    return _unpack(x, self.source, self.slot, self.real).reshape(self.shape + x.shape[1:])
