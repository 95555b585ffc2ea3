"""The MTOP sample shipped with the package, read with nothing but `str.split`: what the
MTOP tests (data/test_mtop.py, jobs/test_intent.py) expect the readers to give."""
from optical_jax.data import layouts

MTOP = layouts.SAMPLES / "mtop"


def fixture_rows(lang: str, split: str) -> list[tuple[str, str, str]]:
  """(id, intent, utterance) of a fixture file, read with nothing but `split`."""
  lines = (MTOP / "mtop" / lang / f"{split}.txt").read_text(encoding="utf-8").splitlines()
  return [(f[0], f[1], f[3]) for f in (line.split("\t") for line in lines if line.strip())]
