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
import importlib.util
import pathlib

from optical_jax import experiments

_DEMO = pathlib.Path(__file__).resolve().parents[1] / "demo.py"


def _demo(arg):
  spec = importlib.util.spec_from_file_location("demo_config", _DEMO)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


GRID = [("zero_shot", {"method": "zero_shot"}), ("kd_mse", {"method": "kd_mse"}),
        ("kd_token", {"method": "kd_token"}), ("optical", {"method": "optical"}),
        ("optical+mse", {"method": "optical+mse"})]


def get_config(arg: str | None = None):
  variants = {None: "", "pure": "", "smoke": "tiny"}
  if arg not in variants:
    raise ValueError(f"configs/experiments/methods.py takes no argument, 'pure' or 'smoke', "
                     f"got {arg!r}")
  c = _demo(variants[arg] or None)
  with c.unlocked():
    # The zero_shot cell is the teacher's evaluation; the others skip it, and
    # every cell reuses the teacher's document vectors.
    c.eval.zero_shot = False
    c.eval.cache_dir = "~/.cache/optical_jax/vectors"
    c.train.progress = False
    if arg == "pure":
      c.loss.contrastive_weight = 0.0
    grid = GRID if arg != "smoke" else [GRID[0], GRID[1], GRID[3]]
    c.experiment = experiments.experiment_block(
        grid, seeds=(0, 1) if arg == "smoke" else (0, 1, 2), baseline="zero_shot",
        also_against=("kd_mse",), metrics=("nDCG@10", "MRR@10", "R@100"))
  c.lock()
  return c
