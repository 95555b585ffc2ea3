"""bf16_certified top-k (search/certified.py): bf16 scores with a certified error bound,
float32 where the bound cannot separate; always the exact float32 top-k."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optical_jax.core import cpu
from optical_jax.search import certified
from optical_jax.search import topk as topk_lib

from tests.search.exact import brute_force, check_exact, vectors


def _fallbacks(caplog):
  """Queries bf16_certified searched again in float32, as its debug log counts them."""
  return sum(r.args[0] for r in caplog.records if "not certified" in r.getMessage())


def _certified(q, x, k, **kwargs):
  return topk_lib.topk(q, x, k, precision="bf16_certified", **kwargs)


@pytest.mark.parametrize("similarity", ["dot", "cos"])
@pytest.mark.parametrize("k,chunk_size,query_batch_size", [(1, 4000, 64), (10, 1500, 25),
                                                            (50, 4000, 64)])
def test_bf16_certified_matches_brute_force(similarity, k, chunk_size, query_batch_size, caplog):
  caplog.set_level(logging.DEBUG, logger=certified.__name__)
  q, x = vectors(num_q=60, n=4000, d=48, seed=11)
  x[::7] *= 3.0  # Row norms that differ matter for 'dot'.
  kwargs = dict(chunk_size=chunk_size, query_batch_size=query_batch_size, similarity=similarity)
  got = _certified(q, x, k, **kwargs)
  check_exact(got, q, x, k, similarity)
  np.testing.assert_array_equal(got[1], topk_lib.topk(q, x, k, precision="float32", **kwargs)[1])
  assert _fallbacks(caplog) <= 6  # The certificate, not the fallback, did the work.


@pytest.mark.parametrize("kind", ["jax", "float16", "memmap"])
def test_bf16_certified_corpus_kinds(kind, tmp_path):
  q, x = vectors(num_q=20, n=3000, d=24, seed=12)
  if kind == "float16":
    x = x.astype(np.float16)
  elif kind == "memmap":
    np.save(tmp_path / "x.npy", x)
    x = np.load(tmp_path / "x.npy", mmap_mode="r")
  corpus = jnp.asarray(x) if kind == "jax" else x
  for similarity in ("dot", "cos"):
    got = _certified(q, corpus, 15, chunk_size=1000, similarity=similarity)
    check_exact(got, q, np.asarray(x, np.float32), 15, similarity)


def test_bf16_certified_exact_ties_fall_back(caplog):
  # Small integers: exact in bf16 too, so the cut falls inside runs of exact
  # ties, which no certificate can separate: float32 decides, lower row first.
  caplog.set_level(logging.DEBUG, logger=certified.__name__)
  rng = np.random.default_rng(7)
  q = rng.integers(-2, 3, (40, 6)).astype(np.float32)
  x = rng.integers(-2, 3, (3000, 6)).astype(np.float32)
  got = _certified(q, x, 30, chunk_size=1100, query_batch_size=16)
  check_exact(got, q, x, 30, "dot")
  np.testing.assert_array_equal(got[0], brute_force(q, x, 30, "dot")[0])  # Exact integers.
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
  caplog.set_level(logging.DEBUG, logger=certified.__name__)
  q, x = _near_ties()
  bf16 = np.asarray(jnp.asarray(q).astype(jnp.bfloat16).astype(jnp.float32) @
                    jnp.asarray(x).astype(jnp.bfloat16).astype(jnp.float32).T)
  want = brute_force(q, x, 5, "dot")[1]
  assert (np.argsort(-bf16, axis=1, kind="stable")[:, :5] != want).any()  # Adversarial.
  # K = 13 > 10: the certificate holds (the 14th row is far below) and the
  # float32 re-scoring orders the ten.
  check_exact(_certified(q, x, 5, margin=8), q, x, 5, "dot")
  assert _fallbacks(caplog) == 0
  # K = 7 < 10: the cut falls among the ten, the certificate fails, float32 decides.
  check_exact(_certified(q, x, 5, margin=2), q, x, 5, "dot")
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
  check_exact(got, q, x, k, similarity)


def test_bf16_certified_is_the_default_where_it_pays(caplog):
  caplog.set_level(logging.DEBUG, logger=certified.__name__)
  q, x = vectors(num_q=512, n=4608, d=16, seed=13)  # k=1: K=17, N >= 256 (K + 1).
  check_exact(topk_lib.topk(q, x, 1), q, x, 1, "dot")
  assert bool(caplog.records) == (cpu.has_bf16_dots() and jax.default_backend() == "cpu")
  caplog.clear()
  topk_lib.topk(q[:511], x, 1)  # Too few queries to pay for the per-call cast.
  assert not caplog.records


def test_bf16_certified_rejects_approx_and_sharding():
  q, x = vectors()
  for kwargs in (dict(approx=True), dict(devices=jax.devices()[:2])):
    with pytest.raises(ValueError, match="single-device"):
      _certified(q, x, 3, **kwargs)
