"""`optical_bitext`: generic bitext from files in manual_dir.

Files are read by `optical_jax.data.bitext` (file:line errors, on_bad_line
skip counts); one split per file present, named by the file:

* config `tsv`: `<manual_dir>/{split}.tsv` (`src<TAB>tgt`);
* config `parallel`: `<manual_dir>/{split}.src` and `{split}.tgt` (Moses style,
  line i of one translates line i of the other);
* config `jsonl`: `<manual_dir>/{split}.jsonl` (`{"src": ..., "tgt": ...}`);

for split in train, validation, test (at least one must be there). A custom
`BitextConfig` sets columns, keys, file suffixes (e.g. `ny`/`en` for
`train.ny`/`train.en`) and `on_bad_line='skip'`; skipped-line counts are then
kept per split in `info.metadata['skipped']`.

Features: `src`, `tgt` (Text) and `origin` (`file:line` of the source line).
"""
from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from optical_jax.data import bitext as bitext_lib
from optical_jax.data.tfds_builders import _base

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(eq=False)
class BitextConfig(tfds.core.BuilderConfig):
  """Which files and how to read them (see `bitext.BitextSpec`)."""
  format: str = "tsv"
  src_suffix: str = "src"  # parallel: {split}.{src_suffix} / {split}.{tgt_suffix}
  tgt_suffix: str = "tgt"
  src_column: int = 0
  tgt_column: int = 1
  num_columns: int | None = None
  has_header: bool = False
  src_key: str = "src"
  tgt_key: str = "tgt"
  on_bad_line: str = "error"

  def files(self, split: str) -> tuple[str, ...]:
    if self.format == "parallel":
      return (f"{split}.{self.src_suffix}", f"{split}.{self.tgt_suffix}")
    return (f"{split}.{self.format}",)


class OpticalBitext(_base.OpticalBuilder):
  """Translation pairs (low-resource source, English target) from bitext files."""

  name = "optical_bitext"
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [
      BitextConfig(name="tsv", format="tsv", description="{split}.tsv: src<TAB>tgt"),
      BitextConfig(name="parallel", format="parallel",
                   description="{split}.src and {split}.tgt, line-aligned"),
      BitextConfig(name="jsonl", format="jsonl",
                   description='{split}.jsonl: {"src": ..., "tgt": ...} per line'),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put the bitext in manual_dir, one file (or pair of files) per split, for split
in train, validation, test (at least train or one other):
  config tsv:      <manual_dir>/{split}.tsv               (src<TAB>tgt per line)
  config parallel: <manual_dir>/{split}.src, {split}.tgt  (line-aligned; other
                   suffixes with a custom BitextConfig(src_suffix=..., tgt_suffix=...))
  config jsonl:    <manual_dir>/{split}.jsonl             ({"src": ..., "tgt": ...})
"""

  def _features(self):
    return {"src": tfds.features.Text(), "tgt": tfds.features.Text(),
            "origin": tfds.features.Text()}

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    if cfg.format not in bitext_lib.FORMATS:
      raise ValueError(f"unknown bitext format {cfg.format!r}; expected one of "
                       f"{bitext_lib.FORMATS}")
    root = self.manual_root(dl_manager)
    present = {s: cfg.files(s) for s in SPLITS
               if any((root / f).exists() for f in cfg.files(s))}
    if not present:
      raise self.missing_files_error(root, [" or ".join(cfg.files(s)) for s in SPLITS],
                                     "(none of the splits is there)\n")
    for split, files in present.items():
      missing = [f for f in files if not (root / f).is_file()]
      if missing:
        raise self.missing_files_error(root, missing)
    self.record("skipped", {})
    return {split: self._generate_examples(split, [root / f for f in files])
            for split, files in present.items()}

  def _generate_examples(self, split, paths):
    cfg = self.builder_config
    if cfg.format == "parallel":
      spec = bitext_lib.BitextSpec(format="parallel", src_path=str(paths[0]),
                                   tgt_path=str(paths[1]), on_bad_line=cfg.on_bad_line)
    else:
      spec = bitext_lib.BitextSpec(
          format=cfg.format, path=str(paths[0]), src_column=cfg.src_column,
          tgt_column=cfg.tgt_column, num_columns=cfg.num_columns,
          has_header=cfg.has_header, src_key=cfg.src_key, tgt_key=cfg.tgt_key,
          on_bad_line=cfg.on_bad_line)
    pairs = bitext_lib.read_bitext(spec)  # raises on no pairs, file:line errors
    self.info.metadata["skipped"][split] = dict(pairs.skipped)
    for i, pair in enumerate(pairs):
      yield i, {"src": pair.src, "tgt": pair.tgt, "origin": pair.origin}
