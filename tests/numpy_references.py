"""Numpy references that test modules of several layers check against."""
import numpy as np


def unit(x):
  """`x` scaled to unit length along the last axis (zero stays zero)."""
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def triple_loss(q, qm, p, pm, n, nm, scoring, temperature, valid):
  """The teacher's InfoNCE over (query, positive, hard negative) triples, one loop
  per score: every positive and negative of the batch is each query's candidate,
  rows and columns of invalid triples are left out.

  Args:
    q, p, n: pooled vectors `[B, D]` (dense) or token vectors `[B, L, D]`.
    qm, pm, nm: token masks for late interaction (None for dense).
    scoring: 'dense' (cosine) or 'late_interaction' (ColBERT MaxSim).

  Returns:
    (mean loss over the valid rows, the score matrix `[B, 2B]`).
  """
  docs = np.concatenate([p, n])
  dmasks = None if pm is None else np.concatenate([pm, nm])
  b = len(q)
  s = np.zeros((b, 2 * b))
  for i in range(b):
    for j in range(2 * b):
      if scoring == "dense":
        s[i, j] = unit(q[i]) @ unit(docs[j])
      else:   # ColBERT MaxSim over the real tokens only
        qi = unit(q[i])[qm[i].astype(bool)]
        dj = unit(docs[j])[dmasks[j].astype(bool)]
        s[i, j] = (qi @ dj.T).max(axis=1).sum()
  cols = np.concatenate([valid, valid])
  losses = []
  for i in np.flatnonzero(valid):
    z = s[i, cols] / temperature
    label = int(cols[:i].sum())        # column i among the kept columns
    top = z.max()
    losses.append(top + np.log(np.exp(z - top).sum()) - z[label])
  return float(np.mean(losses)), s
