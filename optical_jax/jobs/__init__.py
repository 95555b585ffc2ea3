"""The jobs: each a function of (config, workdir) a notebook can call too.

  distill.py       zero-shot evaluation, OT (or KD) distillation, evaluation
  teacher.py       train an English retrieval teacher on triples
  intent.py        MTOP intent accuracy of the teacher and the student
  calibration.py   calibration of each query encoder's scores
  retrieval.py     evaluate / export / index / search / compare
  modes.py         the table of CLI modes
"""
