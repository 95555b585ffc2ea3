"""The exact top-k every search test compares with: the full score matrix in float64,
stable argsort (lower index first on ties)."""
import numpy as np


def vectors(num_q=7, n=53, d=16, seed=0):
  """(queries [num_q, d], corpus [n, d]): seeded standard normal float32."""
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((num_q, d)).astype(np.float32),
          rng.standard_normal((n, d)).astype(np.float32))


def brute_force(q, x, k, similarity):
  """Reference: full score matrix, stable argsort (lower index first on ties)."""
  if similarity == "cos":
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
  s = q.astype(np.float64) @ x.astype(np.float64).T
  order = np.argsort(-s, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(s, order, axis=1), order


def check_exact(got, q, x, k, similarity):
  """`got` (scores, indices) is the exact top-k of `q` over `x`, padded past N."""
  scores, idx = got
  want_s, want_i = brute_force(q, x, k, similarity)
  kk = min(k, x.shape[0])
  assert scores.shape == idx.shape == (q.shape[0], k)
  np.testing.assert_array_equal(idx[:, :kk], want_i)
  np.testing.assert_allclose(scores[:, :kk], want_s, rtol=1e-5, atol=1e-5)
  # k > N: the tail is padding.
  assert np.all(idx[:, kk:] == -1) and np.all(np.isneginf(scores[:, kk:]))
