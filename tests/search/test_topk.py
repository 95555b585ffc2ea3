"""Tests for optical_jax.retrieval: top-k (float32, bf16_certified), sharding, FAISS, indexes."""
import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optical_jax.search import certified
from optical_jax.search import chunks
from optical_jax.search import index as index_lib
from optical_jax.search import topk as topk_lib


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
  got = topk_lib.topk(q, x, k, chunk_size=chunk_size, query_batch_size=3,
                       similarity=similarity)
  _check_exact(got, q, x, k, similarity)


def test_topk_jax_array_corpus_and_float16():
  q, x = _data()
  got = topk_lib.topk(q, jnp.asarray(x), 8, chunk_size=12)
  _check_exact(got, q, x, 8, "dot")
  x16 = x.astype(np.float16)
  _check_exact(topk_lib.topk(q, x16, 8, chunk_size=12), q, x16.astype(np.float32), 8, "dot")


def test_chunked_equals_unchunked():
  q, x = _data(num_q=20, n=300, d=32, seed=1)
  one = topk_lib.topk(q, x, 25, chunk_size=300, query_batch_size=20)
  chunked = topk_lib.topk(q, x, 25, chunk_size=37, query_batch_size=6)
  np.testing.assert_array_equal(one[1], chunked[1])
  np.testing.assert_allclose(one[0], chunked[0], rtol=1e-6)


@pytest.mark.parametrize("chunk_size", [6000, 2500, 1999])
def test_topk_wide_chunks_with_ties(chunk_size):
  # Wide chunks take the grouped top-k path; integer-valued embeddings make
  # many exact ties, which must still come out lower index first.
  rng = np.random.default_rng(7)
  q = rng.integers(-2, 3, (6, 4)).astype(np.float32)
  x = rng.integers(-2, 3, (6000, 4)).astype(np.float32)
  assert chunks.group_size(chunks.balanced(6000, chunk_size), 30) > 1
  _check_exact(topk_lib.topk(q, x, 30, chunk_size=chunk_size), q, x, 30, "dot")


def test_step_compiles_once_per_shape():
  q, x = _data(num_q=4, n=1000, d=11, seed=8)  # d=11: shapes no other test uses.
  before = chunks.jit_merge_chunk._cache_size()
  topk_lib.topk(q, x, 5, chunk_size=64)  # 16 chunks of 63 rows, the last one shifted.
  # One compile for the first chunk (nothing to merge), one for the middle
  # ones, one for the shifted last one (masked): not one per chunk.
  assert chunks.jit_merge_chunk._cache_size() == before + 3
  topk_lib.topk(q, x + 1.0, 5, chunk_size=64)
  assert chunks.jit_merge_chunk._cache_size() == before + 3


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
  _check_exact(got, q, x, k, "dot")


@pytest.mark.parametrize("n,k,chunk_size", [(203, 10, 8), (13, 20, 4), (5, 3, 16)])
def test_sharded_equals_single_device(n, k, chunk_size):
  assert len(jax.devices()) == 8, "tests/conftest.py should force 8 CPU devices"
  q, x = _data(num_q=9, n=n, d=8, seed=3)
  single = topk_lib.topk(q, x, k, chunk_size=chunk_size, query_batch_size=4)
  mesh = jax.make_mesh((8,), ("corpus",), axis_types=(jax.sharding.AxisType.Auto,))
  sharded = topk_lib.topk(q, x, k, chunk_size=chunk_size, query_batch_size=4, mesh=mesh)
  np.testing.assert_array_equal(single[1], sharded[1])
  np.testing.assert_allclose(single[0], sharded[0], rtol=1e-6)
  mesh_2d = jax.make_mesh((2, 4), ("a", "b"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  np.testing.assert_array_equal(topk_lib.topk(q, x, k, mesh=mesh_2d)[1], single[1])
  via_devices = topk_lib.topk(q, jnp.asarray(x), k, chunk_size=chunk_size,
                               devices=jax.devices()[:4], similarity="cos")
  _check_exact(via_devices, q, x, k, "cos")


def _fallbacks(caplog):
  """Queries bf16_certified searched again in float32, as its debug log counts them."""
  return sum(r.args[0] for r in caplog.records if "not certified" in r.getMessage())


def _certified(q, x, k, **kwargs):
  return topk_lib.topk(q, x, k, precision="bf16_certified", **kwargs)


@pytest.mark.parametrize("similarity", ["dot", "cos"])
@pytest.mark.parametrize("k,chunk_size,query_batch_size", [(1, 4000, 64), (10, 1500, 25),
                                                            (50, 4000, 64)])
def test_bf16_certified_matches_brute_force(similarity, k, chunk_size, query_batch_size, caplog):
  caplog.set_level(logging.DEBUG, logger=topk_lib.__name__)
  q, x = _data(num_q=60, n=4000, d=48, seed=11)
  x[::7] *= 3.0  # Row norms that differ matter for 'dot'.
  kwargs = dict(chunk_size=chunk_size, query_batch_size=query_batch_size, similarity=similarity)
  got = _certified(q, x, k, **kwargs)
  _check_exact(got, q, x, k, similarity)
  np.testing.assert_array_equal(got[1], topk_lib.topk(q, x, k, precision="float32", **kwargs)[1])
  assert _fallbacks(caplog) <= 6  # The certificate, not the fallback, did the work.


@pytest.mark.parametrize("kind", ["jax", "float16", "memmap"])
def test_bf16_certified_corpus_kinds(kind, tmp_path):
  q, x = _data(num_q=20, n=3000, d=24, seed=12)
  if kind == "float16":
    x = x.astype(np.float16)
  elif kind == "memmap":
    np.save(tmp_path / "x.npy", x)
    x = np.load(tmp_path / "x.npy", mmap_mode="r")
  corpus = jnp.asarray(x) if kind == "jax" else x
  for similarity in ("dot", "cos"):
    got = _certified(q, corpus, 15, chunk_size=1000, similarity=similarity)
    _check_exact(got, q, np.asarray(x, np.float32), 15, similarity)


def test_bf16_certified_exact_ties_fall_back(caplog):
  # Small integers: exact in bf16 too, so the cut falls inside runs of exact
  # ties, which no certificate can separate: float32 decides, lower row first.
  caplog.set_level(logging.DEBUG, logger=topk_lib.__name__)
  rng = np.random.default_rng(7)
  q = rng.integers(-2, 3, (40, 6)).astype(np.float32)
  x = rng.integers(-2, 3, (3000, 6)).astype(np.float32)
  got = _certified(q, x, 30, chunk_size=1100, query_batch_size=16)
  _check_exact(got, q, x, 30, "dot")
  np.testing.assert_array_equal(got[0], _brute_force(q, x, 30, "dot")[0])  # Exact integers.
  assert _fallbacks(caplog) > 0


def _near_ties(seed=3, d=32):
  """Ten rows bf16 cannot tell apart (1e-4 apart) far above 1990 others."""
  rng = np.random.default_rng(seed)
  base = rng.standard_normal(d).astype(np.float32)
  x = 0.1 * rng.standard_normal((2000, d)).astype(np.float32)
  x[rng.choice(2000, 10, replace=False)] = base + 1e-4 * rng.standard_normal((10, d))
  q = (base + 0.01 * rng.standard_normal((8, d))).astype(np.float32)
  return q, x


def test_bf16_certified_orders_what_bf16_cannot(caplog):
  caplog.set_level(logging.DEBUG, logger=topk_lib.__name__)
  q, x = _near_ties()
  bf16 = np.asarray(jnp.asarray(q).astype(jnp.bfloat16).astype(jnp.float32) @
                    jnp.asarray(x).astype(jnp.bfloat16).astype(jnp.float32).T)
  want = _brute_force(q, x, 5, "dot")[1]
  assert (np.argsort(-bf16, axis=1, kind="stable")[:, :5] != want).any()  # Adversarial.
  # K = 13 > 10: the certificate holds (the 14th row is far below) and the
  # float32 re-scoring orders the ten.
  _check_exact(_certified(q, x, 5, margin=8), q, x, 5, "dot")
  assert _fallbacks(caplog) == 0
  # K = 7 < 10: the cut falls among the ten, the certificate fails, float32 decides.
  _check_exact(_certified(q, x, 5, margin=2), q, x, 5, "dot")
  assert _fallbacks(caplog) == len(q)


def _halfway(rng, num, exps, signs):
  """Rows +-(1 + 2^-8) 2^e: halfway between bf16 values, so round-to-even drops
  2^-8 of each, the worst case; signs shared with the queries add the errors up."""
  return (signs * (1 + 2.0**-8) * 2.0**exps).astype(np.float32)


@pytest.mark.parametrize("kind", ["isotropic", "clustered", "halfway"])
def test_bf16_error_bound_holds(kind):
  rng = np.random.default_rng(5)
  d = 64
  if kind == "halfway":  # The bound is tight here: equal-sign products, |x| ~ |q|.
    exps, signs = rng.integers(-3, 4, d), rng.choice([-1.0, 1.0], d)
    q = _halfway(rng, 6, exps + rng.integers(0, 2, (6, d)), signs)
    rows = _halfway(rng, 500, exps + rng.integers(0, 2, (500, d)), signs)
    x = np.concatenate([rows, -rows])  # Mean exactly 0: H = I, z = x.
  else:
    offset = 5.0 * rng.standard_normal(d) if kind == "clustered" else 0.0
    x = (offset + rng.standard_normal((1000, d)) * np.exp(rng.standard_normal((1000, 1))))
    q = offset + rng.standard_normal((6, d))
    x, q = x.astype(np.float32), q.astype(np.float32)
  frame = certified._frame(x, "dot")
  z, stats = certified.to_bf16(jnp.asarray(x), jnp.asarray(frame), similarity="dot")
  v = frame[:, 2].astype(np.float64)
  w = (q - 2 * np.outer(q @ v, v)).astype(np.float32)
  wb = jnp.asarray(w).astype(jnp.bfloat16)
  b = jnp.einsum("qd,nd->qn", wb, z, preferred_element_type=jnp.float32)
  bound = certified._bf16_bound(q, w, np.asarray(wb, np.float32), frame,
                                np.asarray(stats, np.float64))
  qmu = q.astype(np.float64) @ frame[:, 0].astype(np.float64)
  err = np.abs(np.asarray(b, np.float64) + qmu[:, None] - q.astype(np.float64) @ x.T)
  assert (err < (bound - qmu)[:, None]).all()
  if kind == "halfway":
    assert err.max() > 0.9 * (bound - qmu).max()  # Tight: the worst case is reached.


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 300), k=st.integers(1, 40), margin=st.integers(0, 30),
       chunk_size=st.integers(20, 300), offset=st.sampled_from([0.0, 3.0]),
       similarity=st.sampled_from(["dot", "cos"]), seed=st.integers(0, 2**16))
def test_bf16_certified_property(n, k, margin, chunk_size, offset, similarity, seed):
  rng = np.random.default_rng(seed)
  x = (offset + rng.standard_normal((n, 8))).astype(np.float32)
  q = (offset + rng.standard_normal((5, 8))).astype(np.float32)
  got = _certified(q, x, k, margin=margin, chunk_size=chunk_size, query_batch_size=3,
                   similarity=similarity)
  _check_exact(got, q, x, k, similarity)


def test_bf16_certified_is_the_default_where_it_pays(caplog):
  caplog.set_level(logging.DEBUG, logger=topk_lib.__name__)
  q, x = _data(num_q=512, n=4608, d=16, seed=13)  # k=1: K=17, N >= 256 (K + 1).
  _check_exact(topk_lib.topk(q, x, 1), q, x, 1, "dot")
  assert bool(caplog.records) == (certified.cpu_has_bf16() and jax.default_backend() == "cpu")
  caplog.clear()
  topk_lib.topk(q[:511], x, 1)  # Too few queries to pay for the per-call cast.
  assert not caplog.records


def test_bf16_certified_rejects_approx_and_sharding():
  q, x = _data()
  for kwargs in (dict(approx=True), dict(devices=jax.devices()[:2])):
    with pytest.raises(ValueError, match="single-device"):
      _certified(q, x, 3, **kwargs)


@pytest.mark.parametrize("similarity", ["dot", "cos"])
def test_faiss_backend_equals_exact(similarity):
  pytest.importorskip("faiss", reason="faiss not installed (pip install faiss-cpu)")
  q, x = _data(num_q=11, n=97, d=16, seed=6)
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


class _FakeEncoder:
  """Deterministic per text (seeded by a stable hash), 12 dims."""

  def __call__(self, texts):
    self.calls = getattr(self, "calls", 0) + 1
    return np.stack([np.random.default_rng(sum(map(ord, t))).standard_normal(12) for t in texts])


def _build(tmp_path, n=23, **kwargs):
  texts = [f"passage number {i}" for i in range(n)]
  docids = [f"doc{i}" for i in range(n)]
  kwargs.setdefault("metadata", {"model_id": "fake/enc-12", "config": {"pool": "mean"}})
  return index_lib.build_index(_FakeEncoder(), texts, docids, tmp_path / "idx", batch_size=5,
                               shard_size=10, progress=False, **kwargs), texts


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_index_round_trip(tmp_path, dtype):
  index, texts = _build(tmp_path, dtype=dtype, similarity="cos")
  loaded = index_lib.load_index(tmp_path / "idx")
  assert [len(s) for s in loaded.shards] == [10, 10, 3]
  assert loaded.docids == [f"doc{i}" for i in range(23)] and loaded.count == 23
  assert loaded.metadata["config"] == {"pool": "mean"} and loaded.model_id == "fake/enc-12"
  want = _FakeEncoder()(texts)
  want /= np.linalg.norm(want, axis=1, keepdims=True)
  tol = 1e-3 if dtype == "float16" else 1e-6
  np.testing.assert_allclose(loaded.embeddings.astype(np.float32), want, atol=tol)
  _, idx = loaded.search(want[:3], 1)
  np.testing.assert_array_equal(idx[:, 0], [0, 1, 2])
  index_lib.check_compatible(loaded, 12, "fake/enc-12")


def test_duplicate_and_bad_docids(tmp_path):
  enc = _FakeEncoder()
  with pytest.raises(ValueError, match="duplicate docid 'b'"):
    index_lib.build_index(enc, ["x", "y", "z"], ["a", "b", "b"], tmp_path / "i", progress=False)
  with pytest.raises(ValueError, match="whitespace"):
    index_lib.build_index(enc, ["x", "y"], ["a", "b\nc"], tmp_path / "i", progress=False)
  assert not hasattr(enc, "calls")  # Rejected before any encoding.


def test_missing_shard_and_count_mismatch(tmp_path):
  _build(tmp_path)
  (tmp_path / "idx" / "embeddings-00001.npy").unlink()
  with pytest.raises(FileNotFoundError, match="embeddings-00001.npy"):
    index_lib.load_index(tmp_path / "idx")
  _build(tmp_path, overwrite=True)
  info = json.loads((tmp_path / "idx" / "index.json").read_text())
  info["count"] = 24
  (tmp_path / "idx" / "index.json").write_text(json.dumps(info))
  with pytest.raises(ValueError, match="index.json"):
    index_lib.load_index(tmp_path / "idx")
  with pytest.raises(FileExistsError):
    _build(tmp_path)


def test_incompatible_query_encoder(tmp_path):
  index, _ = _build(tmp_path)
  with pytest.raises(ValueError, match="dim 16"):
    index_lib.check_compatible(index, 16, "fake/enc-12")
  with pytest.raises(ValueError, match="other/model"):
    index_lib.check_compatible(index, 12, "other/model")
