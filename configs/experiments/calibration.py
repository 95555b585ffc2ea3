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

`:real` runs offline on the Bibles: distilled on Swahili, calibrated on the
Swahili queries' dev half, judged on Swahili (its own language), Tagalog and
Bengali (never distilled on) and English; per language ECE with its own
scaling (`ECE/<lang>`) and with Swahili's (`ECE_transfer/<lang>`). Two more
cells swap the English side (`loss.english_side`): OPTICAL with it, kd_mse
without it.

  optical-jax --mode=experiment --config=configs/experiments/calibration.py:real --workdir=runs/cal
"""
from optical_jax.research import presets


def get_config(arg: str | None = None):
  smoke = presets.check_arg("calibration", arg, (None, "smoke", "real"))
  c = presets.base(__file__, smoke)
  grid = [("zero_shot", {"method": "zero_shot"}), ("kd_mse", {"method": "kd_mse"}),
          ("optical", {"method": "optical"})]
  if arg == "real":
    # Does kd_mse's English side (loss.english_side) make its scores shift per
    # language? Each method with and without it.
    grid = grid + [("optical+en", {"method": "optical", "loss.english_side": "on"}),
                   ("kd_mse-src", {"method": "kd_mse", "loss.english_side": "off"})]
    langs = ("sw", "tl", "bn", "en")
    c.data.language = "sw"
    presets.bible_eval(c, languages=langs, high=("en",), low=("sw", "tl", "bn"))
    c.eval.zero_shot = False
    metrics = ("ECE", "Brier") + tuple(f"{m}/{l}" for m in ("ECE", "ECE_transfer", "Brier")
                                       for l in langs) + tuple(f"nDCG@10/{l}" for l in langs)
    c.experiment.update(grid=grid, seeds=(0,), job="optical_jax.jobs.calibration:run",
                        metrics=metrics)
    c.lock()
    return c
  root = presets.data_root(smoke)
  tfds = "~/.cache/optical_jax/tfds-smoke" if smoke else str(root / "tfds")
  c.eval.update(collection="multi30k", languages=("fr",), doc_language="en",
                split="test_2016_flickr", manual_dir=str(root / "multi30k"))
  c.data.tfds_dir = tfds
  if smoke:
    c.calibration.n_bins = 5
  c.experiment.update(grid=grid, seeds=(0,) if smoke else (0, 1, 2),
                      job="optical_jax.jobs.calibration:run",
                      metrics=("ECE", "Brier", "nDCG@10", "MRR@10"))
  c.lock()
  return c
