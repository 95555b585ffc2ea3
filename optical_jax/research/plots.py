"""Plots of an experiment: a bar chart per metric, a line per numeric sweep.

Drawn on bare matplotlib `Figure`s (Agg canvas), so pyplot's global state and
backend are left alone.
"""
from __future__ import annotations

import pathlib
import re
from typing import Any

from matplotlib.figure import Figure

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
