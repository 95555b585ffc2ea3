"""Judging query encoders: IR metrics, significance, calibration, the evaluators.

  metrics.py          ir-measures metrics with per-query values
  significance.py     paired t-test and randomization test, `compare`, tables
  calibration.py      Platt scaling, ECE, Brier, reliability diagrams
  retrieval_eval.py   a model's run on a collection, scored (the jobs' evaluators)
"""
