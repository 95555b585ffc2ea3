r"""Research question 1: what high:low-resource ratio should the distillation data have?

Each cell distills one student on bitext of several languages mixed at a
high:low ratio (data.mix_ratio, between data.mix_high and the rest), and
reports nDCG@10 per language on MIRACL (queries and corpus in the language,
documents encoded by the teacher), overall and as the high - low gap.

  optical-jax --mode=experiment --config=configs/experiments/ratio.py --workdir=runs/ratio
  optical-jax --mode=experiment --config=configs/experiments/ratio.py:smoke --workdir=/tmp/r

Full scale reads `$OPTICAL_JAX_DATA` (see presets.py): MIRACL under miracl/
(miracl-v1.0-<lang>/ topics and qrels, miracl-corpus-v1.0-<lang>/), and each
language's bitext with English as bitext/<lang>/train.tsv.

`:real` runs offline on the Bibles (research/presets.py): high French, German,
Spanish against low Chichewa, Swahili, Hindi, Bengali, evaluated on the held-out
books of every language (Tagalog and English too, never distilled on).

  optical-jax --mode=experiment --config=configs/experiments/ratio.py:real --workdir=runs/ratio
"""
from optical_jax.research import presets


HIGH, LOW = ("fr", "de"), ("sw", "yo")
RATIOS = ("0:1", "1:3", "1:1", "3:1")


def get_config(arg: str | None = None):
  smoke = presets.check_arg("ratio", arg, (None, "smoke", "real"))
  c = presets.base(__file__, smoke)
  root = presets.data_root(smoke)
  if arg == "real":
    presets.bible_mix(c, presets.HIGH + presets.LOW, high=presets.HIGH, ratio=RATIOS[-1])
    presets.bible_eval(c)
    c.eval.zero_shot = False
    grid = [("zero_shot", {"method": "zero_shot"})] + [
        (f"high{r.replace(':', '-')}", {"data.mix_ratio": r}) for r in RATIOS]
    # Each ratio is also tested against low-only data and against 1:1.
    c.experiment.update(grid=grid, seeds=(0,), metrics=presets.per_language("nDCG@10"),
                        also_against=("high0-1", "high1-1"))
    c.lock()
    return c
  if smoke:
    # Two 'languages' of Chichewa bitext (the Bible and the fixture file),
    # one called high-resource; the three MIRACL fixture languages.
    high, langs = ("fx",), ("sw", "yo", "te")
    eval_high = ("te",)    # the fixture has no high-resource MIRACL language: te plays one
    sources = ("ny:bible", f"fx:bitext:{root / 'bitext'}")
    ratios, seeds = ("1:1", "3:1"), (0,)
    tfds = "~/.cache/optical_jax/tfds-smoke"
  else:
    high, langs = HIGH, HIGH + LOW
    eval_high = HIGH
    sources = tuple(f"{l}:bitext:{root / 'bitext' / l}" for l in HIGH + LOW)
    ratios, seeds = RATIOS, (0, 1, 2)
    tfds = str(root / "tfds")
  c.data.update(source="mix", mix_sources=sources, mix_high=high, mix_ratio=ratios[-1],
                tfds_dir=tfds)
  c.eval.update(collection="miracl", languages=langs, high_languages=eval_high, split="dev",
                manual_dir=str(root / "miracl"))
  metrics = ("nDCG@10", "nDCG@10/high", "nDCG@10/low", "nDCG@10/gap") + tuple(
      f"nDCG@10/{l}" for l in langs)
  grid = [(f"high{r.replace(':', '-')}", {"data.mix_ratio": r}) for r in ratios]
  c.experiment.update(grid=grid, seeds=seeds, metrics=metrics)
  c.lock()
  return c
