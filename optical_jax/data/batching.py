"""Deterministic, resumable order of training examples.

The examples of step `s` are a pure function of `(num_examples, batch_size,
seed, s)`: the stream of examples is epoch 0's permutation, then epoch 1's, and
so on, each drawn from `np.random.default_rng([seed, epoch])`, and step `s`
takes positions `[s * batch_size, (s + 1) * batch_size)` of that stream. So a
batch may straddle two epochs, nothing is dropped, and a run resumed at step `s`
sees exactly the batches an uninterrupted run saw, with no data-loader state to
checkpoint beyond the step.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np


@functools.lru_cache(maxsize=4)
def _permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  # Consecutive steps reuse one epoch's permutation (two at a boundary); caching
  # a few keeps a step O(batch_size) instead of O(num_examples).
  perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
  perm.setflags(write=False)  # shared by every caller
  return perm


@dataclasses.dataclass(frozen=True)
class BatchOrder:
  """Which examples each training step uses.

  Attributes:
    num_examples: dataset size, >= 1.
    batch_size: global batch size (all hosts together), >= 1; may exceed
      `num_examples` (a batch then spans several epochs).
    seed: >= 0 (NumPy seed sequences take no negative entropy).

  Raises:
    ValueError: (at construction) a value out of range.
  """
  num_examples: int
  batch_size: int
  seed: int

  def __post_init__(self):
    for name in ("num_examples", "batch_size", "seed"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if self.num_examples < 1 or self.batch_size < 1:
      raise ValueError(f"num_examples and batch_size must be >= 1, got "
                       f"{self.num_examples} and {self.batch_size}")
    if self.seed < 0:
      raise ValueError(f"seed must be >= 0, got {self.seed}")

  def indices(self, step: int, process_index: int = 0, process_count: int = 1
              ) -> np.ndarray:
    """Example indices of `step`, or of one host's part of it.

    Args:
      step: the 0-based training step, >= 0.
      process_index: this host, in `[0, process_count)`.
      process_count: hosts sharing the global batch; must divide `batch_size`.

    Returns:
      int64 `[batch_size // process_count]`: host `i` gets the `i`-th contiguous
      slice of the global batch, so the slices of all hosts, concatenated in
      host order, are the global batch.

    Raises:
      ValueError: a negative step, a bad process index, or a batch size that
        `process_count` does not divide.
    """
    if step < 0:
      raise ValueError(f"step must be >= 0, got {step}")
    if process_count < 1 or not 0 <= process_index < process_count:
      raise ValueError(f"need 0 <= process_index < process_count, got {process_index} "
                       f"and {process_count}")
    if self.batch_size % process_count:
      raise ValueError(f"the global batch size {self.batch_size} does not divide "
                       f"among {process_count} processes")
    per_host = self.batch_size // process_count
    start = int(step) * self.batch_size + process_index * per_host
    positions = np.arange(start, start + per_host, dtype=np.int64)
    epochs, offsets = np.divmod(positions, self.num_examples)
    out = np.empty(per_host, np.int64)
    for epoch in range(int(epochs[0]), int(epochs[-1]) + 1):
      mask = epochs == epoch
      out[mask] = _permutation(self.num_examples, self.seed, epoch)[offsets[mask]]
    return out

  def position(self, step: int) -> dict[str, int]:
    """Where `step`'s batch starts in the stream, for checkpoint metadata.

    Returns:
      JSON-able `{"step", "epoch", "offset"}`: the batch of `step` starts at
      position `offset` of epoch `epoch`'s permutation. Pass the number of
      steps done to record where a resumed run continues.
    """
    epoch, offset = divmod(int(step) * self.batch_size, self.num_examples)
    return {"step": int(step), "epoch": epoch, "offset": offset}
