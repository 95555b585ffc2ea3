r"""Research question 2: does code-switched bitext help over plain bitext?

A fraction of the source words with a dictionary entry (induced from the
bitext with the Dice aligner, or data.codeswitch_dictionary) is replaced by
their English translation in each training batch; plain bitext is the
baseline. Recall@1/5/10/100 on MIRACL (default) or MLQA (`:mlqa`: questions
in the language, English contexts).

  optical-jax --mode=experiment --config=configs/experiments/codeswitch.py --workdir=runs/cs
  optical-jax --mode=experiment --config=configs/experiments/codeswitch.py:mlqa --workdir=runs/cs_mlqa
  optical-jax --mode=experiment --config=configs/experiments/codeswitch.py:smoke --workdir=/tmp/cs
  optical-jax --mode=experiment --config=configs/experiments/codeswitch.py:smoke_mlqa --workdir=/tmp/csq

Full scale: the bitext of data.* (default the Bible, Chichewa; set
data.source='files' and data.path for yours), MIRACL / MLQA under
`$OPTICAL_JAX_DATA` (see presets.py).

`:real` runs offline on the Bibles: distilled on Chichewa (the dictionary
induced from its bitext), evaluated on the held-out books of every language.

  optical-jax --mode=experiment --config=configs/experiments/codeswitch.py:real --workdir=runs/cs
"""
from optical_jax.research import presets


RATES = (0.0, 0.15, 0.3, 0.5)


def get_config(arg: str | None = None):
  smoke = presets.check_arg("codeswitch", arg, (None, "mlqa", "smoke", "smoke_mlqa", "real"))
  mlqa = arg in ("mlqa", "smoke_mlqa")
  c = presets.base(__file__, smoke)
  if arg == "real":
    presets.bible_eval(c)
    c.eval.metrics = ("R@1", "R@5", "R@10", "R@100", "nDCG@10")
    # Per language R@1: on verse retrieval R@10 is near 0.99 in every language.
    metrics = ("R@1", "R@5", "R@10", "R@100") + presets.per_language("R@1")[1:]
    grid = [("plain", {})] + [(f"codeswitch={r}", {"data.codeswitch_rate": r})
                              for r in RATES if r]
    c.experiment.update(grid=grid, seeds=(0,), metrics=metrics)
    c.lock()
    return c
  root = presets.data_root(smoke)
  tfds = "~/.cache/optical_jax/tfds-smoke" if smoke else str(root / "tfds")
  if mlqa:
    c.eval.update(collection="mlqa", languages=("de",) if smoke else ("de", "es", "hi", "vi"),
                  doc_language="en", split="test", manual_dir=str(root / "mlqa"))
  else:
    c.eval.update(collection="miracl", languages=("sw", "yo") if smoke else ("sw", "yo", "te"),
                  split="dev", manual_dir=str(root / "miracl"))
  c.data.tfds_dir = tfds
  c.eval.metrics = ("R@1", "R@5", "R@10", "R@100", "nDCG@10")
  c.data.codeswitch_induce_pairs = 0 if smoke else 10_000    # 0: all (the smoke's 64)
  rates = (0.0, 0.3) if smoke else RATES
  metrics = ("R@1", "R@5", "R@10", "R@100") + tuple(f"R@10/{l}" for l in c.eval.languages)
  grid = [("plain", {})] + [(f"codeswitch={r}", {"data.codeswitch_rate": r}) for r in rates if r]
  c.experiment.update(grid=grid, seeds=(0,) if smoke else (0, 1, 2), metrics=metrics)
  c.lock()
  return c
