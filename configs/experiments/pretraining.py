r"""Research question 4: does a multilingual pretraining objective help distillation?

OPTICAL alone, with masked LM on the source side (pretrain.mlm_weight), and
with translation LM on the concatenated pairs too (pretrain.tlm_weight), on
several languages' bitext; MAP per language on MIRACL and the gap between the
high- and the low-resource languages.

  optical-jax --mode=experiment --config=configs/experiments/pretraining.py --workdir=runs/pt
  optical-jax --mode=experiment --config=configs/experiments/pretraining.py:smoke --workdir=/tmp/pt

Full scale: bitext/<lang>/train.tsv and MIRACL under `$OPTICAL_JAX_DATA`
(see presets.py), as configs/experiments/ratio.py.

`:real` runs offline on the Bibles: the seven distillation languages mixed by
size, MAP on the held-out books of every language.

  optical-jax --mode=experiment --config=configs/experiments/pretraining.py:real --workdir=runs/pt
"""
from optical_jax.research import presets


HIGH, LOW = ("fr", "de"), ("sw", "yo")


def get_config(arg: str | None = None):
  smoke = presets.check_arg("pretraining", arg, (None, "smoke", "real"))
  c = presets.base(__file__, smoke)
  grid = [("optical", {}), ("optical+mlm", {"pretrain.mlm_weight": 1.0}),
          ("optical+mlm+tlm", {"pretrain.mlm_weight": 1.0, "pretrain.tlm_weight": 1.0})]
  if arg == "real":
    presets.bible_mix(c, presets.HIGH + presets.LOW)
    presets.bible_eval(c)
    c.eval.metrics = ("MAP", "nDCG@10")
    c.experiment.update(grid=grid, seeds=(0,), metrics=presets.per_language("MAP"))
    c.lock()
    return c
  root = presets.data_root(smoke)
  if smoke:
    high, langs, tfds = ("te",), ("sw", "yo", "te"), "~/.cache/optical_jax/tfds-smoke"
  else:
    high, langs, tfds = HIGH, HIGH + LOW, str(root / "tfds")
    c.data.update(source="mix", mix_sources=tuple(f"{l}:bitext:{root / 'bitext' / l}"
                                                  for l in langs),
                  mix_temperature=1.0, tfds_dir=tfds)
  c.eval.update(collection="miracl", languages=langs, high_languages=high, split="dev",
                manual_dir=str(root / "miracl"), metrics=("MAP", "nDCG@10"))
  metrics = ("MAP", "MAP/high", "MAP/low", "MAP/gap") + tuple(f"MAP/{l}" for l in langs)
  c.experiment.update(grid=grid, seeds=(0,) if smoke else (0, 1, 2), metrics=metrics)
  c.lock()
  return c
