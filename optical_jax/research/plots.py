"""Plots of an experiment: a bar chart per metric, a line per numeric sweep, and
per-language differences to the baseline where the metrics come per language.

Drawn on bare matplotlib `Figure`s (Agg canvas), so pyplot's global state and
backend are left alone.
"""
from __future__ import annotations

import pathlib
import re
from typing import Any, Sequence

from matplotlib.figure import Figure

from optical_jax.evaluation import retrieval_eval
from optical_jax.evaluation import significance as significance_lib


def _file_part(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def plot_summary(summary: Any, out: pathlib.Path) -> None:
  """A bar chart per metric, a line plot per (numeric sweep, metric) of a
  `report.Summary`, as PNGs in `out`."""
  out.mkdir(parents=True, exist_ok=True)
  s, names = summary.settings, list(summary.cells)
  figures = [(f"bar_{_file_part(m)}", m, None, list(enumerate(names))) for m in s.metrics]
  figures += [(f"sweep_{_file_part(key)}_{_file_part(m)}", m, key, points)
              for key, points in summary.sweeps.items() for m in s.metrics
              if all(n in summary.cells for _, n in points)]
  for filename, m, key, points in figures:
    fig = Figure(figsize=(max(5.0, 0.8 * len(points) + 1.5), 4), layout="constrained")
    ax = fig.add_subplot()
    xs, cells = [x for x, _ in points], [summary.cells[n] for _, n in points]
    ys, errs = [c.mean[m] for c in cells], [c.std[m] for c in cells]
    if key:
      ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=4)
      ax.set_xlabel(key)
    else:
      ax.bar(xs, ys, yerr=errs, capsize=4, alpha=0.8,
             color=["tab:gray" if n == s.baseline else "tab:blue" for n in names])
      for x, c in zip(xs, cells):   # the seeds as dots: the spread behind the error bar
        ax.plot([x] * len(c.values[m]), c.values[m], "k.", markersize=4)
      ax.set_xticks(xs, names, rotation=30, ha="right")
    for x, y, err, (_, n) in zip(xs, ys, errs, points):
      if summary.significant(n, m):
        ax.annotate(significance_lib.SIGNIFICANT_MARK, (x, y + err), ha="center", va="bottom")
    ax.set_ylabel(m)
    ax.set_title(f"{m}{f' against {key}' if key else ''}: mean ± std over seeds; "
                 f"{significance_lib.SIGNIFICANT_MARK} against {s.baseline}", fontsize=9)
    fig.savefig(out / f"{filename}.png", format="png", dpi=100)
  plot_languages(summary, out)


def per_language(metrics: Sequence[str]) -> dict[str, list[str]]:
  """metric -> its languages, for the 'METRIC/lang' columns (two or more languages;
  not the 'high' / 'low' / 'gap' aggregates)."""
  out: dict[str, list[str]] = {}
  for m in metrics:
    base, _, lang = m.partition("/")
    if lang and lang not in retrieval_eval.LANGUAGE_AGGREGATES:
      out.setdefault(base, []).append(lang)
  return {base: langs for base, langs in out.items() if len(langs) >= 2}


def plot_languages(summary: Any, out: pathlib.Path) -> dict[str, dict[str, list[float]]]:
  """Per metric with per-language columns, `languages_METRIC.png`: each cell's
  difference of means to the baseline in each language, as grouped bars marked
  where significant: which cells gain, and which damage a language.

  Returns metric -> cell -> the differences, in `per_language`'s order.
  """
  s = summary.settings
  base = summary.cells.get(s.baseline)
  others = [n for n in summary.cells if n != s.baseline]
  drawn: dict[str, dict[str, list[float]]] = {}
  if base is None or not others:
    return drawn
  width = 0.8 / len(others)
  for metric, langs in per_language(s.metrics).items():
    fig = Figure(figsize=(max(6.0, 0.3 * len(langs) * len(others) + 2.5), 4),
                 layout="constrained")
    ax = fig.add_subplot()
    drawn[metric] = {}
    for i, name in enumerate(others):
      cols = [f"{metric}/{lang}" for lang in langs]
      deltas = [summary.cells[name].mean[c] - base.mean[c] for c in cols]
      xs = [j + (i - (len(others) - 1) / 2) * width for j in range(len(langs))]
      ax.bar(xs, deltas, width, label=name)
      for x, y, c in zip(xs, deltas, cols):
        if summary.significant(name, c):
          ax.annotate(significance_lib.SIGNIFICANT_MARK, (x, y), ha="center", fontsize=7,
                      va="bottom" if y >= 0 else "top")
      drawn[metric][name] = deltas
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(langs)), langs)
    ax.set_ylabel(f"{metric}: cell - {s.baseline}")
    ax.legend(fontsize=7, ncols=min(len(others), 4))
    ax.set_title(f"{metric} per language against {s.baseline} (difference of means); "
                 f"{significance_lib.SIGNIFICANT_MARK} p < {s.alpha}", fontsize=9)
    fig.savefig(out / f"languages_{_file_part(metric)}.png", format="png", dpi=100)
  return drawn
