"""Training metrics on disk (training/metric_log.py): one JSON record a line, non-finite
values kept readable, and a resumed run dropping the records it recomputes."""
import json
import math

import numpy as np

from optical_jax.training import metric_log


def test_records_and_resume_drop_the_steps_after_the_checkpoint(tmp_path):
  logger = metric_log.MetricLogger(tmp_path, tensorboard=False)
  for step in (1, 2, 3, 4):
    logger.write(step, {"loss": np.float32(step / 2), "note": "text"})
  logger.write(4, {"nDCG@10": 0.5}, kind="eval")
  logger.write(5, {"loss": float("nan"), "grad": math.inf})
  logger.close()
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l) for l in lines[:2]] == [
      {"step": 1, "kind": "train", "loss": 0.5, "note": "text"},
      {"step": 2, "kind": "train", "loss": 1.0, "note": "text"}]
  # JSON has no NaN or Infinity: they are kept as strings a reader can still parse.
  assert json.loads(lines[-1]) == {"step": 5, "kind": "train", "loss": "nan", "grad": "inf"}

  # Resumed from the checkpoint of step 3: steps 4 and 5 are recomputed, so their
  # records go (the eval record of step 4 too); steps 1-3 stay as they were.
  resumed = metric_log.MetricLogger(tmp_path, resume_step=3, tensorboard=False)
  assert resumed.read() == [json.loads(l) for l in lines[:3]]
  resumed.write(4, {"loss": 2.0})
  assert [(r["step"], r["loss"]) for r in resumed.read()] == [(1, 0.5), (2, 1.0), (3, 1.5),
                                                              (4, 2.0)]
  resumed.close()


def test_tensorboard_events_are_written(tmp_path):
  logger = metric_log.MetricLogger(tmp_path)
  logger.write(1, {"loss": 1.0, "nDCG@10": 0.3})
  logger.close()
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
