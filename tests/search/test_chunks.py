"""Chunked top-k (search/chunks.py): wide chunks take the grouped path, ties included; one
compile per shape, not per chunk."""
import numpy as np
import pytest

from optical_jax.search import chunks
from optical_jax.search import topk as topk_lib

from tests.search.exact import check_exact, vectors


@pytest.mark.parametrize("chunk_size", [6000, 2500, 1999])
def test_topk_wide_chunks_with_ties(chunk_size):
  # Wide chunks take the grouped top-k path; integer-valued embeddings make
  # many exact ties, which must still come out lower index first.
  rng = np.random.default_rng(7)
  q = rng.integers(-2, 3, (6, 4)).astype(np.float32)
  x = rng.integers(-2, 3, (6000, 4)).astype(np.float32)
  assert chunks.group_size(chunks.balanced(6000, chunk_size), 30) > 1
  check_exact(topk_lib.topk(q, x, 30, chunk_size=chunk_size), q, x, 30, "dot")


def test_step_compiles_once_per_shape():
  q, x = vectors(num_q=4, n=1000, d=11, seed=8)  # d=11: shapes no other test uses.
  before = chunks.jit_merge_chunk._cache_size()
  topk_lib.topk(q, x, 5, chunk_size=64)  # 16 chunks of 63 rows, the last one shifted.
  # One compile for the first chunk (nothing to merge), one for the middle
  # ones, one for the shifted last one (masked): not one per chunk.
  assert chunks.jit_merge_chunk._cache_size() == before + 3
  topk_lib.topk(q, x + 1.0, 5, chunk_size=64)
  assert chunks.jit_merge_chunk._cache_size() == before + 3
