"""Experiments: grids of jobs over cells and seeds, their tables and plots.

  cells.py    the `experiment` block: cells x seeds, overrides, done markers
  report.py   aggregation over seeds, significance against the baseline, tables
  plots.py    bar and sweep plots
  grid.py     running a grid (resumable), `--mode=experiment`
"""
