"""Calibration metrics on synthetic scorers with known answers."""
import math
import struct

import numpy as np
import pytest

from optical_jax.evaluation import calibration

from tests.evaluation.test_metrics import QRELS, RUN


def test_ece_of_a_calibrated_scorer_is_small():
  n, bins = 200_000, 15
  rng = np.random.default_rng(0)
  p = rng.uniform(size=n)
  y = rng.uniform(size=n) < p
  # In bin b, accuracy - confidence has mean 0 and sd <= 0.5 / sqrt(n_b). With
  # every bin within 5 sd, ECE <= sum (n_b / n) 2.5 / sqrt(n_b) <= 2.5 sqrt(B / n)
  # (Cauchy-Schwarz) = 0.022 here.
  bound = 2.5 * math.sqrt(bins / n)
  assert calibration.expected_calibration_error(p, y, bins) < bound
  assert calibration.expected_calibration_error(p, y, bins, strategy="quantile") < bound


def test_ece_and_brier_of_an_overconfident_scorer():
  n = 100_000
  rng = np.random.default_rng(0)
  y = rng.uniform(size=n) < 0.7  # truth: 0.7 everywhere
  p = np.full(n, 0.95)  # claimed: 0.95 everywhere
  frac = y.mean()
  sd = math.sqrt(0.7 * 0.3 / n)
  for strategy in ("uniform", "quantile"):  # one occupied bin either way
    ece = calibration.expected_calibration_error(p, y, strategy=strategy)
    assert ece == pytest.approx(0.95 - frac, abs=1e-9)  # float sums of 1e5 terms
    assert abs(ece - 0.25) < 5 * sd
  brier = calibration.brier_score(p, y)
  assert brier == pytest.approx(frac * 0.05**2 + (1 - frac) * 0.95**2, abs=1e-9)
  assert abs(brier - (0.7 * 0.0025 + 0.3 * 0.9025)) < 5 * 0.9 * sd
  # Two levels pushed outwards: true 0.2 / 0.8, claimed 0.05 / 0.95 -> ECE 0.15.
  high = rng.uniform(size=n) < 0.5
  y2 = rng.uniform(size=n) < np.where(high, 0.8, 0.2)
  ece2 = calibration.expected_calibration_error(np.where(high, 0.95, 0.05), y2)
  assert abs(ece2 - 0.15) < 5 * math.sqrt(0.16 / n) * 2


def test_calibration_rejects_bad_input():
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    calibration.expected_calibration_error(np.array([1.5]), np.array([1]))
  with pytest.raises(ValueError, match="0/1"):
    calibration.brier_score(np.array([0.5]), np.array([2]))
  with pytest.raises(ValueError, match="one class"):
    calibration.fit_platt(np.array([0.1, 0.2]), np.array([1, 1]))
  with pytest.raises(ValueError, match="strategy"):
    calibration.expected_calibration_error(np.array([0.5]), np.array([1]), strategy="kmeans")


@pytest.mark.parametrize("loc, scale, a, b", [(0.5, 1.5, 3.0, -1.0),  # generic
                                               (0.8, 0.05, 40.0, -32.0)])  # cosine-like
def test_platt_recovers_a_logistic_model(loc, scale, a, b):
  n = 50_000
  rng = np.random.default_rng(0)
  s = rng.normal(loc, scale, n)
  y = rng.uniform(size=n) < 1 / (1 + np.exp(-(a * s + b)))
  platt = calibration.fit_platt(s, y)
  # With unit-variance standardized scores the MLE standard errors are ~0.02;
  # 0.1 in standardized units is > 4 of them.
  assert abs(platt.a - a) * scale < 0.1
  assert abs((platt.a * loc + platt.b) - (a * loc + b)) < 0.1
  probs = platt(s)
  assert calibration.expected_calibration_error(probs, y) < 2.5 * math.sqrt(15 / n)
  temperature = calibration.fit_platt(s - loc, y, fit_bias=False)
  assert temperature.b == 0.0


def test_reliability_diagram_is_written(tmp_path):
  rng = np.random.default_rng(0)
  p = rng.uniform(size=2000)
  path = calibration.reliability_diagram(p, rng.uniform(size=2000) < p, tmp_path / "plots" / "rel.png",
                                title="test")
  data = path.read_bytes()
  assert data.startswith(b"\x89PNG") and len(data) > 5000
  _assert_png(data)
  # Every probability equal: the quantile bins all collapse onto 0.95. All ten are
  # relevant, so the one occupied bin has accuracy 1 and ECE = |1 - 0.95| = 0.05.
  p, y = np.full(10, 0.95), np.ones(10)
  assert calibration.expected_calibration_error(p, y, strategy="quantile") == pytest.approx(0.05)
  quantile = calibration.reliability_diagram(p, y, tmp_path / "q.png", strategy="quantile")
  assert quantile == tmp_path / "q.png"
  _assert_png(quantile.read_bytes())


def _assert_png(data: bytes):
  """A whole PNG: signature, an IHDR of a non-empty image first, IEND last, and more
  than a blank canvas would take."""
  assert data[:8] == b"\x89PNG\r\n\x1a\n"
  assert data[12:16] == b"IHDR"
  width, height = struct.unpack(">II", data[16:24])
  assert width > 100 and height > 100, (width, height)
  assert data[-8:-4] == b"IEND"
  assert len(data) > 5000


def test_score_label_pairs_and_split():
  scores, labels, qids = calibration.score_label_pairs(RUN, QRELS, k=10)
  assert len(scores) == 10 + 3 + 10  # q1, q2, q3 (q5 is unjudged)
  assert labels.tolist()[:10] == [0, 1, 0, 1, 0, 0, 0, 0, 0, 0]  # q1 top 10
  assert labels.sum() == 2 + 2 + 0
  assert scores[0] == RUN["q1"]["d3"]
  judged_scores, judged_labels, _ = calibration.score_label_pairs(RUN, QRELS, k=10, judged_only=True)
  assert len(judged_scores) == 3 + 3 + 1
  dev = calibration.split_by_query(qids, dev_fraction=0.5, seed=0)
  for q in set(qids):  # every query lies wholly on one side
    assert len(set(dev[qids == q])) == 1
  assert 0 < dev.sum() < len(dev)
