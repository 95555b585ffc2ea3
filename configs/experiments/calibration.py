r"""Research question 3: does distillation change how calibrated the scores are?

Zero-shot vs KD vs OPTICAL students, distilled on one language's bitext and
evaluated on caption retrieval in a language unseen in distillation
(Multi30k: French captions -> English captions). Each query encoder's scores
get Platt scaling fitted on half of the queries; ECE and Brier are measured
on the other half, with a reliability diagram per cell
(cells/*/seed*/calibration/*.png).

  optical-jax --mode=experiment --config=configs/experiments/calibration.py --workdir=runs/cal
  optical-jax --mode=experiment --config=configs/experiments/calibration.py:smoke --workdir=/tmp/cal

Full scale: the Chichewa Bible bitext (unseen: French), Multi30k's
data/task1/raw files under `$OPTICAL_JAX_DATA/multi30k` (see presets.py).
"""
from optical_jax.research import presets


def get_config(arg: str | None = None):
  smoke = presets.check_arg("calibration", arg, (None, "smoke"))
  c = presets.base(__file__, smoke)
  root = presets.data_root(smoke)
  tfds = "~/.cache/optical_jax/tfds-smoke" if smoke else str(root / "tfds")
  c.eval.update(collection="multi30k", languages=("fr",), doc_language="en",
                split="test_2016_flickr", manual_dir=str(root / "multi30k"))
  c.data.tfds_dir = tfds
  if smoke:
    c.calibration.n_bins = 5
  grid = [("zero_shot", {"method": "zero_shot"}), ("kd_mse", {"method": "kd_mse"}),
          ("optical", {"method": "optical"})]
  c.experiment.update(grid=grid, seeds=(0,) if smoke else (0, 1, 2),
                      job="optical_jax.jobs.calibration:run",
                      metrics=("ECE", "Brier", "nDCG@10", "MRR@10"))
  c.lock()
  return c
