"""Tests for optical_jax.retrieval: top-k, sharding, MaxSim, FAISS, index files."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optical_jax import retrieval


def _data(num_q=7, n=53, d=16, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((num_q, d)).astype(np.float32),
          rng.standard_normal((n, d)).astype(np.float32))


def _brute_force(q, x, k, similarity):
  """Reference: full score matrix, stable argsort (lower index first on ties)."""
  if similarity == "cos":
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
  s = q.astype(np.float64) @ x.astype(np.float64).T
  order = np.argsort(-s, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(s, order, axis=1), order


def _check_exact(got, q, x, k, similarity):
  scores, idx = got
  want_s, want_i = _brute_force(q, x, k, similarity)
  kk = min(k, x.shape[0])
  assert scores.shape == idx.shape == (q.shape[0], k)
  np.testing.assert_array_equal(idx[:, :kk], want_i)
  np.testing.assert_allclose(scores[:, :kk], want_s, rtol=1e-5, atol=1e-5)
  # k > N: the tail is padding.
  assert np.all(idx[:, kk:] == -1) and np.all(np.isneginf(scores[:, kk:]))


@pytest.mark.parametrize("similarity", ["dot", "cos"])
@pytest.mark.parametrize("k,chunk_size", [(1, 53), (5, 10), (10, 7), (20, 64), (60, 16)])
def test_topk_matches_brute_force(similarity, k, chunk_size):
  q, x = _data()
  got = retrieval.topk(q, x, k, chunk_size=chunk_size, query_batch_size=3,
                       similarity=similarity)
  _check_exact(got, q, x, k, similarity)


def test_topk_jax_array_corpus_and_float16():
  q, x = _data()
  got = retrieval.topk(q, jnp.asarray(x), 8, chunk_size=12)
  _check_exact(got, q, x, 8, "dot")
  x16 = x.astype(np.float16)
  _check_exact(retrieval.topk(q, x16, 8, chunk_size=12), q, x16.astype(np.float32), 8, "dot")


def test_chunked_equals_unchunked():
  q, x = _data(num_q=20, n=300, d=32, seed=1)
  one = retrieval.topk(q, x, 25, chunk_size=300, query_batch_size=20)
  chunked = retrieval.topk(q, x, 25, chunk_size=37, query_batch_size=6)
  np.testing.assert_array_equal(one[1], chunked[1])
  np.testing.assert_allclose(one[0], chunked[0], rtol=1e-6)


@pytest.mark.parametrize("chunk_size", [6000, 2500, 1999])
def test_topk_wide_chunks_with_ties(chunk_size):
  # Wide chunks take the grouped top-k path; integer-valued embeddings make
  # many exact ties, which must still come out lower index first.
  rng = np.random.default_rng(7)
  q = rng.integers(-2, 3, (6, 4)).astype(np.float32)
  x = rng.integers(-2, 3, (6000, 4)).astype(np.float32)
  assert retrieval._group_size(retrieval._balanced(6000, chunk_size), 30) > 1
  _check_exact(retrieval.topk(q, x, 30, chunk_size=chunk_size), q, x, 30, "dot")


def test_step_compiles_once_per_shape():
  q, x = _data(num_q=4, n=1000, d=11, seed=8)  # d=11: shapes no other test uses.
  before = retrieval._step._cache_size()
  retrieval.topk(q, x, 5, chunk_size=64)  # 16 chunks, the last one shifted.
  # One compile for the first chunk (nothing to merge), one for all the rest.
  assert retrieval._step._cache_size() == before + 2
  retrieval.topk(q, x + 1.0, 5, chunk_size=64)
  assert retrieval._step._cache_size() == before + 2


@pytest.mark.parametrize("sharded", [False, True])
def test_ties_lower_index_first(sharded):
  x = np.ones((10, 4), np.float32)
  x[[2, 7]] *= 2.0
  q = np.ones((2, 4), np.float32)
  devices = jax.devices() if sharded else None
  scores, idx = retrieval.topk(q, x, 6, chunk_size=3, devices=devices)
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
  got = retrieval.topk(q, x, k, chunk_size=chunk_size, query_batch_size=query_batch_size)
  _check_exact(got, q, x, k, "dot")


@pytest.mark.parametrize("n,k,chunk_size", [(203, 10, 8), (13, 20, 4), (5, 3, 16)])
def test_sharded_equals_single_device(n, k, chunk_size):
  assert len(jax.devices()) == 8, "tests/conftest.py should force 8 CPU devices"
  q, x = _data(num_q=9, n=n, d=8, seed=3)
  single = retrieval.topk(q, x, k, chunk_size=chunk_size, query_batch_size=4)
  mesh = jax.make_mesh((8,), ("corpus",), axis_types=(jax.sharding.AxisType.Auto,))
  sharded = retrieval.topk(q, x, k, chunk_size=chunk_size, query_batch_size=4, mesh=mesh)
  np.testing.assert_array_equal(single[1], sharded[1])
  np.testing.assert_allclose(single[0], sharded[0], rtol=1e-6)
  mesh_2d = jax.make_mesh((2, 4), ("a", "b"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  np.testing.assert_array_equal(retrieval.topk(q, x, k, mesh=mesh_2d)[1], single[1])
  via_devices = retrieval.topk(q, jnp.asarray(x), k, chunk_size=chunk_size,
                               devices=jax.devices()[:4], similarity="cos")
  _check_exact(via_devices, q, x, k, "cos")


def _tokens(num, length, d, rng, empty_rows=()):
  tok = rng.standard_normal((num, length, d)).astype(np.float32)
  lengths = rng.integers(1, length + 1, size=num)
  lengths[list(empty_rows)] = 0
  mask = np.arange(length)[None, :] < lengths[:, None]
  tok[~mask] = 100.0  # Garbage in padded slots must never count.
  return tok, mask


def _maxsim_loop(qt, qm, dt, dm):
  out = np.zeros((len(qt), len(dt)), np.float64)
  for a in range(len(qt)):
    for b in range(len(dt)):
      total = 0.0
      for i in np.flatnonzero(qm[a]):
        real = np.flatnonzero(dm[b])
        total += max((float(qt[a, i] @ dt[b, j]) for j in real), default=-np.inf)
      out[a, b] = total
  return out


def test_maxsim_matches_loop():
  rng = np.random.default_rng(4)
  qt, qm = _tokens(5, 6, 8, rng, empty_rows=[4])
  dt, dm = _tokens(23, 9, 8, rng, empty_rows=[3])
  got = retrieval.maxsim(qt, qm, dt, dm, doc_chunk_size=5)
  want = _maxsim_loop(qt, qm, dt, dm)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
  assert np.isneginf(got[:4, 3]).all() and (got[4] == 0).all()


def test_rerank_equals_maxsim_on_candidates():
  rng = np.random.default_rng(5)
  qt, qm = _tokens(7, 5, 8, rng)
  dt, dm = _tokens(40, 6, 8, rng)
  cand = np.stack([rng.permutation(40)[:10] for _ in range(7)]).astype(np.int32)
  cand[2, 7:] = -1
  scores, idx = retrieval.rerank_maxsim(qt, qm, dt, dm, cand, query_batch_size=3)
  full = retrieval.maxsim(qt, qm, dt, dm)
  for row in range(7):
    real = cand[row][cand[row] >= 0]
    order = real[np.argsort(-full[row, real], kind="stable")]
    np.testing.assert_array_equal(idx[row, :len(real)], order)
    np.testing.assert_allclose(scores[row, :len(real)], full[row, order], rtol=1e-5)
    assert np.all(idx[row, len(real):] == -1)
  top3 = retrieval.rerank_maxsim(qt, qm, jnp.asarray(dt), jnp.asarray(dm), cand, k=3)
  np.testing.assert_array_equal(top3[1], idx[:, :3])


@pytest.mark.parametrize("similarity", ["dot", "cos"])
def test_faiss_backend_equals_exact(similarity):
  pytest.importorskip("faiss", reason="faiss not installed (pip install faiss-cpu)")
  q, x = _data(num_q=11, n=97, d=16, seed=6)
  ours = retrieval.topk(q, x, 10, similarity=similarity)
  theirs = retrieval.topk(q, x, 10, similarity=similarity, backend="faiss")
  np.testing.assert_array_equal(ours[1], theirs[1])
  np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5, atol=1e-5)
  padded = retrieval.FaissIndex(x[:4]).search(q, 6)
  assert (padded[1][:, 4:] == -1).all() and np.isneginf(padded[0][:, 4:]).all()


def test_to_run_skips_padding():
  run = retrieval.to_run(np.array([[2.0, -np.inf]]), np.array([[1, -1]]), ["q1"], ["d0", "d1"])
  assert run == {"q1": {"d1": 2.0}}
  with pytest.raises(ValueError, match="duplicate qids"):
    retrieval.to_run(np.zeros((2, 1)), np.zeros((2, 1), int), ["q", "q"], ["d0"])


class _FakeEncoder:
  """Deterministic per text (seeded by a stable hash), 12 dims."""

  def __call__(self, texts):
    self.calls = getattr(self, "calls", 0) + 1
    return np.stack([np.random.default_rng(sum(map(ord, t))).standard_normal(12) for t in texts])


def _build(tmp_path, n=23, **kwargs):
  texts = [f"passage number {i}" for i in range(n)]
  docids = [f"doc{i}" for i in range(n)]
  kwargs.setdefault("metadata", {"model_id": "fake/enc-12", "config": {"pool": "mean"}})
  return retrieval.build_index(_FakeEncoder(), texts, docids, tmp_path / "idx", batch_size=5,
                               shard_size=10, progress=False, **kwargs), texts


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_index_round_trip(tmp_path, dtype):
  index, texts = _build(tmp_path, dtype=dtype, similarity="cos")
  loaded = retrieval.load_index(tmp_path / "idx")
  assert [len(s) for s in loaded.shards] == [10, 10, 3]
  assert loaded.docids == [f"doc{i}" for i in range(23)] and loaded.count == 23
  assert loaded.metadata["config"] == {"pool": "mean"} and loaded.model_id == "fake/enc-12"
  want = _FakeEncoder()(texts)
  want /= np.linalg.norm(want, axis=1, keepdims=True)
  tol = 1e-3 if dtype == "float16" else 1e-6
  np.testing.assert_allclose(loaded.embeddings.astype(np.float32), want, atol=tol)
  _, idx = loaded.search(want[:3], 1)
  np.testing.assert_array_equal(idx[:, 0], [0, 1, 2])
  retrieval.check_compatible(loaded, 12, "fake/enc-12")


def test_duplicate_and_bad_docids(tmp_path):
  enc = _FakeEncoder()
  with pytest.raises(ValueError, match="duplicate docid 'b'"):
    retrieval.build_index(enc, ["x", "y", "z"], ["a", "b", "b"], tmp_path / "i", progress=False)
  with pytest.raises(ValueError, match="whitespace"):
    retrieval.build_index(enc, ["x", "y"], ["a", "b\nc"], tmp_path / "i", progress=False)
  assert not hasattr(enc, "calls")  # Rejected before any encoding.


def test_missing_shard_and_count_mismatch(tmp_path):
  _build(tmp_path)
  (tmp_path / "idx" / "embeddings-00001.npy").unlink()
  with pytest.raises(FileNotFoundError, match="embeddings-00001.npy"):
    retrieval.load_index(tmp_path / "idx")
  _build(tmp_path, overwrite=True)
  info = json.loads((tmp_path / "idx" / "index.json").read_text())
  info["count"] = 24
  (tmp_path / "idx" / "index.json").write_text(json.dumps(info))
  with pytest.raises(ValueError, match="index.json"):
    retrieval.load_index(tmp_path / "idx")
  with pytest.raises(FileExistsError):
    _build(tmp_path)


def test_incompatible_query_encoder(tmp_path):
  index, _ = _build(tmp_path)
  with pytest.raises(ValueError, match="dim 16"):
    retrieval.check_compatible(index, 16, "fake/enc-12")
  with pytest.raises(ValueError, match="other/model"):
    retrieval.check_compatible(index, 12, "other/model")
