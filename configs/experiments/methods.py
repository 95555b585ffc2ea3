r"""OPTICAL against its baselines on the embedded demo: one command, a table.

Zero-shot transfer, knowledge distillation with pooled MSE on both sides
(kd_mse, the sentence-transformers recipe), token-level MSE under a hard
alignment (kd_token), OPTICAL's OT loss, and OT plus pooled MSE; each trained
method with the demo's budget (configs/demo.py: 160 steps x 32 pairs) and its
in-batch contrastive term, over three seeds; significance against zero_shot
and kd_mse.

  optical-jax --mode=experiment --config=configs/experiments/methods.py --workdir=runs/methods
  optical-jax --mode=experiment --config=configs/experiments/methods.py:smoke --workdir=/tmp/m

`:pure` drops the contrastive term (loss.contrastive_weight=0): each method's
own loss alone. An interrupted grid resumes where it stopped.
"""
from optical_jax.research import presets


GRID = [("zero_shot", {"method": "zero_shot"}), ("kd_mse", {"method": "kd_mse"}),
        ("kd_token", {"method": "kd_token"}), ("optical", {"method": "optical"}),
        ("optical+mse", {"method": "optical+mse"})]


def get_config(arg: str | None = None):
  smoke = presets.check_arg("methods", arg, (None, "pure", "smoke"))
  c = presets.base(__file__, smoke)
  if smoke:   # the demo's tiny evaluation: 48 queries, 200 documents
    c.eval.update(max_queries=48, max_docs=200)
  # The zero_shot cell is the teacher's evaluation; the other cells skip it.
  c.eval.zero_shot = False
  if arg == "pure":
    c.loss.contrastive_weight = 0.0
  grid = GRID if not smoke else [GRID[0], GRID[1], GRID[3]]
  c.experiment.update(grid=grid, seeds=(0,) if smoke else (0, 1, 2), baseline="zero_shot",
                      also_against=("kd_mse",), metrics=("nDCG@10", "MRR@10", "R@100"))
  c.lock()
  return c
