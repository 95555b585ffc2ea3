"""Calibration of similarity scores: do retrieval scores mean probabilities?

Scores are mapped to relevance probabilities by Platt / temperature scaling
fitted on a dev split of the queries (so the test split stays clean), then
judged by expected calibration error (ECE), the Brier score and a reliability
diagram. `score_label_pairs` turns a run and its qrels into (score, label)
pairs, so the research question "does distillation change calibration?" is
answered from ordinary runs.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Literal, Mapping

import numpy as np
from matplotlib.figure import Figure
from scipy import optimize, special

from optical_jax.data.trec import PathLike
from optical_jax.data.trec import trec_order

log = logging.getLogger(__name__)

# |slope| of the standardized Platt fit beyond which the data are (nearly)
# separable and the maximum-likelihood slope runs off to infinity.
_SEPARABLE_SLOPE = 30.0


def _check_pairs(values: np.ndarray, labels: np.ndarray,
                 probabilities: bool) -> tuple[np.ndarray, np.ndarray]:
  """`[N]` float64 values and 0/1 float64 labels, or ValueError."""
  x, y = np.asarray(values, np.float64).ravel(), np.asarray(labels).ravel()
  if x.shape != y.shape or x.size == 0:
    raise ValueError(f"need equal non-empty sizes, got {x.size} values, {y.size} labels")
  if not np.all(np.isfinite(x)):
    raise ValueError("values must be finite")
  if probabilities and (x.min() < 0 or x.max() > 1):
    raise ValueError(f"probabilities must lie in [0, 1], got [{x.min()}, {x.max()}]")
  if not np.all((y == 0) | (y == 1)):
    raise ValueError("labels must be 0/1 or bool")
  return x, y.astype(np.float64)


@dataclasses.dataclass(frozen=True)
class PlattScaling:
  """`p = sigmoid(a * score + b)`; b = 0 is temperature scaling with T = 1/a."""
  a: float
  b: float

  def __call__(self, scores: np.ndarray) -> np.ndarray:
    return special.expit(self.a * np.asarray(scores, np.float64) + self.b)


def fit_platt(scores: np.ndarray, labels: np.ndarray, fit_bias: bool = True) -> PlattScaling:
  """Fits `PlattScaling` to `[N]` scores and 0/1 labels by minimizing log loss.

  The fit runs on standardized scores (cosine scores span a narrow range and
  need slopes in the tens) and is mapped back. `fit_bias=False` keeps b = 0
  (temperature scaling). Separable labels have no finite fit: a warning is
  logged and `a` is wherever the optimizer stopped.

  Raises:
    ValueError: bad shapes/labels, one class only, or constant scores.
    RuntimeError: the optimizer failed.
  """
  s, y = _check_pairs(scores, labels, probabilities=False)
  if y.min() == y.max():
    raise ValueError("labels hold one class only: the log loss has no finite minimum")
  mu, sd = (s.mean() if fit_bias else 0.0), s.std()
  if sd == 0:
    raise ValueError("scores are constant: the slope is not identifiable")
  z = (s - mu) / sd

  def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
    logits = theta[0] * z + theta[1]
    residual = (special.expit(logits) - y) / y.size
    # log(1 + e^l) - y l is the log loss; logaddexp keeps it finite for large |l|.
    value = np.mean(np.logaddexp(0.0, logits) - y * logits)
    return float(value), np.array([residual @ z, residual.sum()])

  bounds = [(None, None), (None, None) if fit_bias else (0.0, 0.0)]
  res = optimize.minimize(loss, np.zeros(2), jac=True, method="L-BFGS-B", bounds=bounds)
  if not res.success:
    raise RuntimeError(f"Platt fit did not converge: {res.message}")
  slope, intercept = res.x
  if abs(slope) > _SEPARABLE_SLOPE:
    log.warning("Platt fit: standardized slope %.1f, the labels are (nearly) separable "
                "by score and the fitted probabilities are close to 0/1", slope)
  return PlattScaling(a=float(slope / sd), b=float(intercept - slope * mu / sd))


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
  """Mean squared error of probabilities `[N]` against 0/1 labels `[N]`."""
  p, y = _check_pairs(probs, labels, probabilities=True)
  return float(np.mean((p - y) ** 2))


def _bins(probs: np.ndarray, labels: np.ndarray, n_bins: int,
          strategy: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Bin edges `[B+1]`, mean confidence, accuracy and counts `[B]` (empty: NaN).

  Bins are [e_i, e_i+1), the last closed. 'quantile' edges that coincide (many
  equal probabilities) merge, so it may give fewer than `n_bins` bins.
  """
  p, y = _check_pairs(probs, labels, probabilities=True)
  if n_bins < 1:
    raise ValueError(f"n_bins must be >= 1, got {n_bins}")
  if strategy == "uniform":
    edges = np.linspace(0.0, 1.0, n_bins + 1)
  elif strategy == "quantile":
    inner = np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1))[1:-1]
    edges = np.unique(np.concatenate([[0.0], inner, [1.0]]))
  else:
    raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
  index = np.searchsorted(edges[1:-1], p, side="right")
  counts = np.bincount(index, minlength=len(edges) - 1).astype(np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    confidence = np.bincount(index, weights=p, minlength=len(edges) - 1) / counts
    accuracy = np.bincount(index, weights=y, minlength=len(edges) - 1) / counts
  return edges, confidence, accuracy, counts


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15,
                               strategy: Literal["uniform", "quantile"] = "uniform") -> float:
  """ECE = sum over bins of (count / N) * |accuracy - mean confidence|, in [0, 1].

  Raises:
    ValueError: bad shapes, probabilities outside [0, 1], non-0/1 labels,
      n_bins < 1 or an unknown strategy.
  """
  _, confidence, accuracy, counts = _bins(probs, labels, n_bins, strategy)
  full = counts > 0
  return float(np.sum(counts[full] * np.abs(accuracy[full] - confidence[full]))
               / counts.sum())


def reliability_diagram(probs: np.ndarray, labels: np.ndarray, path: PathLike,
                        title: str = "", n_bins: int = 15,
                        strategy: Literal["uniform", "quantile"] = "uniform") -> pathlib.Path:
  """Writes a PNG: accuracy per bin against confidence, the diagonal, and counts.

  Drawn on a bare `Figure` (Agg canvas), which leaves pyplot's global state and
  backend alone. Raises what `expected_calibration_error` raises.
  """
  edges, confidence, accuracy, counts = _bins(probs, labels, n_bins, strategy)
  ece = expected_calibration_error(probs, labels, n_bins, strategy)
  full, widths = counts > 0, np.diff(edges)
  fig = Figure(figsize=(5, 6), layout="constrained")
  top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
  top.bar(edges[:-1][full], accuracy[full], width=widths[full], align="edge",
          edgecolor="black", alpha=0.7, label="fraction relevant")
  top.plot(confidence[full], accuracy[full], "o", color="C3", label="(mean confidence, accuracy)")
  top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
  top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy",
          title=f"{title} (ECE {ece:.4f}, {strategy} bins)".strip())
  top.legend(loc="upper left", fontsize="small")
  bottom.bar(edges[:-1], counts, width=widths, align="edge", edgecolor="black")
  bottom.set(xlabel="predicted probability", ylabel="count", yscale="log")
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, format="png", dpi=100)
  return path


def score_label_pairs(run: Mapping[str, Mapping[str, float]],
                      qrels: Mapping[str, Mapping[str, int]], k: int = 100,
                      judged_only: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(score, label = grade > 0) of the top-k documents of each judged run query.

  Unjudged documents are labelled 0 (trec_eval's assumption) or, with
  `judged_only`, dropped; run queries without judgements are skipped and logged.

  Returns:
    scores float64 `[N]`, labels int8 `[N]`, qids object `[N]` (`split_by_query`).
  """
  scores, labels, qids = [], [], []
  skipped = 0
  for qid, docs in run.items():
    if qid not in qrels:
      skipped += 1
      continue
    for docid, score in trec_order(docs)[:k]:
      if judged_only and docid not in qrels[qid]:
        continue
      scores.append(score)
      labels.append(qrels[qid].get(docid, 0) > 0)
      qids.append(qid)
  if skipped:
    log.warning("score_label_pairs: skipped %d run queries without judgements", skipped)
  return (np.array(scores, np.float64), np.array(labels, np.int8),
          np.array(qids, dtype=object))


def split_by_query(qids: np.ndarray, dev_fraction: float = 0.5, seed: int = 0) -> np.ndarray:
  """Boolean dev mask `[N]` over pairs; whole queries go to dev or test (no leak)."""
  unique = np.unique(np.asarray(qids, dtype=object).astype(str))
  rng = np.random.default_rng(seed)
  dev = set(rng.permutation(unique)[:round(dev_fraction * unique.size)])
  return np.array([str(q) in dev for q in qids], dtype=bool)


def calibrate_run(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
                  *, k: int, dev_fraction: float, n_bins: int, strategy: str, split_seed: int,
                  plot: PathLike | None = None, title: str = "",
                  platt: PlattScaling | None = None) -> dict[str, float]:
  """Platt scaling fitted on a dev half of the queries, judged on the rest.

  Args:
    platt: a scaling fitted elsewhere (e.g. on another language's dev half):
      applied as it is to this run's test half, nothing is fitted.

  Returns:
    {'ECE', 'Brier', 'platt_a', 'platt_b', 'test_pairs'} on the test queries;
    with `plot`, their reliability diagram is written there.
  """
  scores, labels, qids = score_label_pairs(run, qrels, k=k)
  dev = split_by_query(qids, dev_fraction, seed=split_seed)
  if not dev.any() or dev.all():
    raise ValueError(f"calibration needs queries on both sides of the dev split; "
                     f"{np.unique(qids).size} queries, dev_fraction={dev_fraction}")
  platt = platt or fit_platt(scores[dev], labels[dev])
  probs = platt(scores[~dev])
  if plot is not None:
    reliability_diagram(probs, labels[~dev], plot, title=title, n_bins=n_bins, strategy=strategy)
  return {"ECE": expected_calibration_error(probs, labels[~dev], n_bins, strategy),
          "Brier": brier_score(probs, labels[~dev]), "platt_a": platt.a, "platt_b": platt.b,
          "test_pairs": int((~dev).sum())}
