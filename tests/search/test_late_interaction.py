"""MaxSim scoring and re-ranking (search/late_interaction.py) against a plain loop."""
import jax.numpy as jnp
import numpy as np

from optical_jax.search import late_interaction


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
  got = late_interaction.maxsim(qt, qm, dt, dm, doc_chunk_size=5)
  want = _maxsim_loop(qt, qm, dt, dm)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
  assert np.isneginf(got[:4, 3]).all() and (got[4] == 0).all()


def test_rerank_equals_maxsim_on_candidates():
  rng = np.random.default_rng(5)
  qt, qm = _tokens(7, 5, 8, rng)
  dt, dm = _tokens(40, 6, 8, rng)
  cand = np.stack([rng.permutation(40)[:10] for _ in range(7)]).astype(np.int32)
  cand[2, 7:] = -1
  scores, idx = late_interaction.rerank_maxsim(qt, qm, dt, dm, cand, query_batch_size=3)
  full = late_interaction.maxsim(qt, qm, dt, dm)
  for row in range(7):
    real = cand[row][cand[row] >= 0]
    order = real[np.argsort(-full[row, real], kind="stable")]
    np.testing.assert_array_equal(idx[row, :len(real)], order)
    np.testing.assert_allclose(scores[row, :len(real)], full[row, order], rtol=1e-5)
    assert np.all(idx[row, len(real):] == -1)
  top3 = late_interaction.rerank_maxsim(qt, qm, jnp.asarray(dt), jnp.asarray(dm), cand, k=3)
  np.testing.assert_array_equal(top3[1], idx[:, :3])
