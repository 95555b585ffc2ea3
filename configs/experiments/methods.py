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

On real text in nine languages (`pip install 'optical_jax[demo,research]'`;
research/presets.py): every method distils on one language's Bible (Chichewa,
or `--config.data.language=...`) and is evaluated on the held-out books of
all of them, the language it learnt, the ones it never saw and English ->
English (the Bible in Basic English against the KJV):

  optical-jax --mode=experiment --config=configs/experiments/methods.py:real --workdir=runs/m_real
  :real_pure     the same without the contrastive term
  :real_4x       4x the demo's steps (640), kd_mse and optical
  :real_variants OPTICAL's variants: OT on the student's reading of the English
                 side too (and kd_mse without it), pooled MSE beside OT at three
                 weights, OT on two layers (the 9th of 12 too), a softer plan
                 (epsilon 0.1)
"""
from optical_jax.research import presets


GRID = [("zero_shot", {"method": "zero_shot"}), ("kd_mse", {"method": "kd_mse"}),
        ("kd_token", {"method": "kd_token"}), ("optical", {"method": "optical"}),
        ("optical+mse", {"method": "optical+mse"})]


VARIANTS = [("optical", {"method": "optical"}), ("kd_mse", {"method": "kd_mse"}),
            # The English side (loss.english_side): kd_mse's recipe has the student
            # read the English too; does that, not pooled MSE, make its lead?
            ("optical+en", {"method": "optical", "loss.english_side": "on"}),
            ("kd_mse-src", {"method": "kd_mse", "loss.english_side": "off"}),
            ("ot_eps0.1", {"method": "optical", "ot.epsilon": 0.1}),
            ("ot_layers9+12", {"method": "optical", "loss.extra_ot_layers": (-4,)}),
            ("ot+mse1", {"method": "optical+mse", "loss.mse_weight": 1.0}),
            ("ot+mse0.25", {"method": "optical+mse", "loss.mse_weight": 0.25}),
            ("ot+mse4", {"method": "optical+mse", "loss.mse_weight": 4.0})]


def get_config(arg: str | None = None):
  smoke = presets.check_arg("methods", arg, (None, "pure", "smoke", "real", "real_pure",
                                             "real_4x", "real_variants"))
  real = bool(arg and arg.startswith("real"))
  c = presets.base(__file__, smoke)
  if smoke:   # the demo's tiny evaluation: 48 queries, 200 documents
    c.eval.update(max_queries=48, max_docs=200)
  # The zero_shot cell is the teacher's evaluation; the other cells skip it.
  c.eval.zero_shot = False
  if arg in ("pure", "real_pure"):
    c.loss.contrastive_weight = 0.0
  grid = GRID if not smoke else [GRID[0], GRID[1], GRID[3]]
  if arg == "real_pure":   # the question first (OT against pooled MSE), the rest after
    grid = [GRID[0], GRID[1], GRID[3], GRID[2], GRID[4]]
  seeds = (0,) if smoke else (0, 1, 2)
  metrics = ("nDCG@10", "MRR@10", "R@100")
  baseline, against = "zero_shot", ("kd_mse",)
  if real:
    presets.bible_eval(c)
    metrics = presets.per_language("nDCG@10")
    seeds = (0,)    # ~10 minutes a cell on 2 CPU cores: one seed (say so where reported)
    if arg == "real_4x":
      c.train.steps = 4 * c.train.steps
      grid = [GRID[0], GRID[1], GRID[3]]
    if arg == "real_variants":
      grid, baseline, against = VARIANTS, "optical", ("kd_mse",)
  c.experiment.update(grid=grid, seeds=seeds, baseline=baseline, also_against=against,
                      metrics=metrics)
  c.lock()
  return c
