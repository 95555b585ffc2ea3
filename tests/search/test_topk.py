"""Exact top-k (search/topk.py): float32 against brute force, chunking, ties, sharding, FAISS."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optical_jax.search import topk as topk_lib

from tests.search.exact import check_exact, vectors


@pytest.mark.parametrize("similarity", ["dot", "cos"])
@pytest.mark.parametrize("k,chunk_size", [(1, 53), (5, 10), (10, 7), (20, 64), (60, 16)])
def test_topk_matches_brute_force(similarity, k, chunk_size):
  q, x = vectors()
  got = topk_lib.topk(q, x, k, chunk_size=chunk_size, query_batch_size=3,
                       similarity=similarity)
  check_exact(got, q, x, k, similarity)


def test_topk_jax_array_corpus_and_float16():
  q, x = vectors()
  got = topk_lib.topk(q, jnp.asarray(x), 8, chunk_size=12)
  check_exact(got, q, x, 8, "dot")
  x16 = x.astype(np.float16)
  check_exact(topk_lib.topk(q, x16, 8, chunk_size=12), q, x16.astype(np.float32), 8, "dot")


def test_chunked_equals_unchunked():
  q, x = vectors(num_q=20, n=300, d=32, seed=1)
  one = topk_lib.topk(q, x, 25, chunk_size=300, query_batch_size=20)
  chunked = topk_lib.topk(q, x, 25, chunk_size=37, query_batch_size=6)
  np.testing.assert_array_equal(one[1], chunked[1])
  np.testing.assert_allclose(one[0], chunked[0], rtol=1e-6)


@pytest.mark.parametrize("sharded", [False, True])
def test_ties_lower_index_first(sharded):
  x = np.ones((10, 4), np.float32)
  x[[2, 7]] *= 2.0
  q = np.ones((2, 4), np.float32)
  devices = jax.devices() if sharded else None
  scores, idx = topk_lib.topk(q, x, 6, chunk_size=3, devices=devices)
  np.testing.assert_array_equal(idx, [[2, 7, 0, 1, 3, 4]] * 2)


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 45), chunk_size=st.integers(1, 50),
       query_batch_size=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_topk_property(n, k, chunk_size, query_batch_size, seed):
  # Small integer entries make dot products exact in float32 and full of ties,
  # so even the tie order must match the stable-argsort reference exactly.
  rng = np.random.default_rng(seed)
  q = rng.integers(-1, 2, (3, 3)).astype(np.float32)
  x = rng.integers(-1, 2, (n, 3)).astype(np.float32)
  got = topk_lib.topk(q, x, k, chunk_size=chunk_size, query_batch_size=query_batch_size)
  check_exact(got, q, x, k, "dot")


@pytest.mark.parametrize("n,k,chunk_size", [(203, 10, 8), (13, 20, 4), (5, 3, 16)])
def test_sharded_equals_single_device(n, k, chunk_size):
  assert len(jax.devices()) == 8, "tests/conftest.py should force 8 CPU devices"
  q, x = vectors(num_q=9, n=n, d=8, seed=3)
  single = topk_lib.topk(q, x, k, chunk_size=chunk_size, query_batch_size=4)
  mesh = jax.make_mesh((8,), ("corpus",), axis_types=(jax.sharding.AxisType.Auto,))
  sharded = topk_lib.topk(q, x, k, chunk_size=chunk_size, query_batch_size=4, mesh=mesh)
  np.testing.assert_array_equal(single[1], sharded[1])
  np.testing.assert_allclose(single[0], sharded[0], rtol=1e-6)
  mesh_2d = jax.make_mesh((2, 4), ("a", "b"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  np.testing.assert_array_equal(topk_lib.topk(q, x, k, mesh=mesh_2d)[1], single[1])
  via_devices = topk_lib.topk(q, jnp.asarray(x), k, chunk_size=chunk_size,
                               devices=jax.devices()[:4], similarity="cos")
  check_exact(via_devices, q, x, k, "cos")


@pytest.mark.parametrize("similarity", ["dot", "cos"])
def test_faiss_backend_equals_exact(similarity):
  pytest.importorskip("faiss", reason="faiss not installed (pip install faiss-cpu)")
  q, x = vectors(num_q=11, n=97, d=16, seed=6)
  ours = topk_lib.topk(q, x, 10, similarity=similarity)
  theirs = topk_lib.topk(q, x, 10, similarity=similarity, backend="faiss")
  np.testing.assert_array_equal(ours[1], theirs[1])
  np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5, atol=1e-5)
  padded = topk_lib.FaissIndex(x[:4]).search(q, 6)
  assert (padded[1][:, 4:] == -1).all() and np.isneginf(padded[0][:, 4:]).all()


def test_to_run_skips_padding():
  run = topk_lib.to_run(np.array([[2.0, -np.inf]]), np.array([[1, -1]]), ["q1"], ["d0", "d1"])
  assert run == {"q1": {"d1": 2.0}}
  with pytest.raises(ValueError, match="duplicate qids"):
    topk_lib.to_run(np.zeros((2, 1)), np.zeros((2, 1), int), ["q", "q"], ["d0"])
