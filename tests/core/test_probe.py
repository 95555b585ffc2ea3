"""The intent classifier (core/probe.py): it separates clusters, its loss is numpy's, it is
seeded, it refuses bad labels."""
import numpy as np
import pytest

from optical_jax.core import probe

from tests import defaults


def gaussian_clusters(seed: int, n_per_class: int, dim: int = 16, classes: int = 5):
  """Separable clusters (centres 6 noise std apart on average) on a narrow cone of
  unit vectors, as e5's pooled vectors are: mean cosine between any two ~0.8."""
  rng = np.random.default_rng(seed)
  centres = np.random.default_rng(123).normal(0.0, 3.0, (classes, dim))
  labels = np.repeat(np.arange(classes), n_per_class)
  x = centres[labels] + rng.normal(size=(len(labels), dim))
  x[:, 0] += 25.0
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


@pytest.mark.parametrize("hidden,scaling", [(0, "global"), (16, "global"), (0, "feature")])
def test_head_separates_gaussian_clusters(hidden, scaling):
  x, y = gaussian_clusters(0, 40)
  x_test, y_test = gaussian_clusters(1, 100)
  cos = x_test @ x_test.T
  assert cos[~np.eye(len(x_test), dtype=bool)].mean() > 0.7
  cfg = defaults.head_config(hidden=hidden, lr=1e-2, epochs=20, batch_size=32, scaling=scaling)
  params = probe.train_classifier(x, y, cfg, seed=0)
  assert probe.accuracy(probe.predict(params, x_test), y_test) > 0.97
  # Trained: far below the uniform prediction's cross-entropy log(5).
  assert float(probe.cross_entropy(params, x_test, y_test)) < 0.3 * np.log(5)
  # What the head sees of the training vectors: centred, variance 1 on average
  # ('global') or in every feature ('feature').
  seen = (x - params["mean"]) * params["inv_std"]
  np.testing.assert_allclose(seen.mean(0), 0.0, atol=1e-4)
  var = seen.var(0)
  # (up to the epsilon that keeps a constant feature finite)
  np.testing.assert_allclose(var.mean() if scaling == "global" else var, 1.0, rtol=1e-2)


def numpy_cross_entropy(params, x, y, w):
  h = (x - params["mean"]) * params["inv_std"]
  for layer in params["layers"][:-1]:
    h = np.maximum(h @ layer["w"] + layer["b"], 0.0)
  z = h @ params["layers"][-1]["w"] + params["layers"][-1]["b"]
  z = z.astype(np.float64)
  log_norm = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
  nll = log_norm - z[np.arange(len(y)), y]
  return float((nll * w).sum() / w.sum())


@pytest.mark.parametrize("hidden", [0, 3])
def test_cross_entropy_matches_numpy(hidden):
  rng = np.random.default_rng(7)
  d, c, n = 5, 4, 6
  sizes = [d] + ([hidden] if hidden else []) + [c]
  params = {"mean": rng.normal(size=d).astype(np.float32),
            "inv_std": rng.uniform(0.5, 2.0, d).astype(np.float32),
            "layers": [{"w": rng.normal(size=(a, b)).astype(np.float32),
                        "b": rng.normal(size=b).astype(np.float32)}
                       for a, b in zip(sizes[:-1], sizes[1:])]}
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = rng.integers(0, c, n)
  w = np.array([1.0, 0.0, 2.0, 1.0, 0.5, 0.0], np.float32)
  ones = np.ones(n, np.float32)
  np.testing.assert_allclose(float(probe.cross_entropy(params, x, y)),
                             numpy_cross_entropy(params, x, y, ones), rtol=1e-5)
  np.testing.assert_allclose(float(probe.cross_entropy(params, x, y, w)),
                             numpy_cross_entropy(params, x, y, w), rtol=1e-5)
  # The predictions are the argmax of the same logits.
  z = np.asarray(probe.logits(params, x))
  np.testing.assert_array_equal(probe.predict(params, x), z.argmax(1))


def test_head_training_is_deterministic_in_the_seed():
  x, y = gaussian_clusters(0, 10)
  cfg = defaults.head_config(hidden=8, lr=1e-2, epochs=3, batch_size=16)
  a, b = (probe.train_classifier(x, y, cfg, seed=3) for _ in range(2))
  c = probe.train_classifier(x, y, cfg, seed=4)
  flat = lambda p: np.concatenate([np.ravel(l[k]) for l in p["layers"] for k in ("w", "b")])
  np.testing.assert_array_equal(flat(a), flat(b))
  assert not np.array_equal(flat(a), flat(c))


def test_bad_labels_and_unknowns():
  x = np.zeros((3, 2), np.float32)
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
    probe.train_classifier(x, np.array([0, 1, 2]), defaults.head_config(), 0, num_classes=2)
  with pytest.raises(ValueError, match=r"labels must lie"):
    probe.train_classifier(x, np.array([0, probe.UNKNOWN, 1]), defaults.head_config(), 0)
  predicted, labels = np.array([0, 1, 2, 1]), np.array([0, probe.UNKNOWN, 2, 0])
  assert probe.accuracy(predicted, labels) == 2 / 4
  assert probe.accuracy(predicted, labels, exclude_unknown=True) == 2 / 3
  with pytest.raises(ValueError, match="no utterances to score with an intent"):
    probe.accuracy(predicted[1:2], labels[1:2], exclude_unknown=True)
