"""The math: pure functions of arrays, no I/O.

  ot.py        cost matrices, marginals, batched Sinkhorn (ott-jax), the OPTICAL loss
  losses.py    the distillation terms (contrastive, pooled / token MSE) and the
               teacher's in-batch triple loss
  masking.py   BERT masking and the masked-LM cross-entropy
  probe.py     a softmax classifier on fixed sentence vectors (the intent probe)

Nothing here imports another layer of the package; configs reach it as small
frozen dataclasses.
"""
