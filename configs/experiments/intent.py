r"""Research question 5: do distilled students transfer to zero-shot intent detection?

An intent classifier is trained on English MTOP utterances on top of the
frozen teacher; each cell's student (OPTICAL or KD, distilled on bitext) then
encodes the other languages' utterances for the same classifier. Accuracy per
language (optical_jax/intent.py).

  optical-jax --mode=experiment --config=configs/experiments/intent.py --workdir=runs/intent
  optical-jax --mode=experiment --config=configs/experiments/intent.py:smoke --workdir=/tmp/in

Full scale: MTOP's mtop/<lang>/{train,eval,test}.txt under
`$OPTICAL_JAX_DATA/mtop`, and the bitext of the languages as
bitext/<lang>/train.tsv (see presets.py).
"""
from optical_jax.research import presets


LANGS = ("de", "es", "fr", "hi", "th")


def get_config(arg: str | None = None):
  smoke = presets.check_arg("intent", arg, (None, "smoke"))
  c = presets.base(__file__, smoke)
  root = presets.data_root(smoke)
  tfds = "~/.cache/optical_jax/tfds-smoke" if smoke else str(root / "tfds")
  langs = ("de",) if smoke else LANGS
  c.eval.collection = "none"      # the job scores intents, not retrieval
  if not smoke:
    c.data.update(source="mix", mix_sources=tuple(f"{l}:bitext:{root / 'bitext' / l}"
                                                  for l in langs), tfds_dir=tfds)
  c.data.tfds_dir = tfds
  c.intent.update(manual_dir=str(root / "mtop"), languages=("en",) + langs)
  if smoke:
    c.intent.update(epochs=5, batch_size=4)
  grid = [("zero_shot", {"method": "zero_shot"}), ("kd_mse", {"method": "kd_mse"}),
          ("optical", {"method": "optical"})]
  c.experiment.update(grid=grid, seeds=(0,) if smoke else (0, 1, 2),
                      job="optical_jax.jobs.intent:run",
                      metrics=("accuracy",) + tuple(f"accuracy/{l}" for l in ("en",) + langs))
  c.lock()
  return c
