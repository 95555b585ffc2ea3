"""Training metrics to disk: JSONL (one record a line) and TensorBoard events.

`metrics.jsonl` is the record a resumed run continues: on resume, records of
steps after the restored checkpoint are dropped (they are recomputed), so a
run interrupted and resumed logs exactly what an uninterrupted run logs.
Only process 0 writes.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any, Mapping

import jax


def _plain(v: Any) -> Any:
  try:
    f = float(v)
  except (TypeError, ValueError):
    return v
  return f if math.isfinite(f) else str(f)


class MetricLogger:
  """Appends step records to `<workdir>/metrics.jsonl` and TensorBoard."""

  def __init__(self, workdir: str | os.PathLike, *, resume_step: int = 0,
               tensorboard: bool = True):
    self.path = pathlib.Path(workdir) / "metrics.jsonl"
    self.active = jax.process_index() == 0
    self._tb = None
    if not self.active:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    if self.path.exists():
      keep = [line for line in self.path.read_text().splitlines()
              if line.strip() and json.loads(line).get("step", 0) <= resume_step]
      self.path.write_text("".join(line + "\n" for line in keep))
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"),
                               purge_step=resume_step + 1 if resume_step else None)

  def write(self, step: int, metrics: Mapping[str, Any], kind: str = "train") -> None:
    if not self.active:
      return
    record = {"step": int(step), "kind": kind, **{k: _plain(v) for k, v in metrics.items()}}
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for k, v in record.items():
        if k not in ("step", "kind") and isinstance(v, float):
          # TensorBoard tag names allow no '@' (nDCG@10 -> nDCG_at_10).
          self._tb.add_scalar(f"{kind}/{k.replace('@', '_at_')}", v, step)

  def read(self) -> list[dict]:
    if not self.path.exists():
      return []
    return [json.loads(l) for l in self.path.read_text().splitlines() if l.strip()]

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
