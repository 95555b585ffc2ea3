"""The jobs by name: what `--mode` and an experiment's `experiment.job` choose from."""
from __future__ import annotations

import ml_collections

from optical_jax.jobs import distill
from optical_jax.jobs import retrieval
from optical_jax.jobs import teacher


def distill_mode(config: ml_collections.ConfigDict, workdir: str, **_) -> dict:
  return distill.run(config, workdir)


MODES = {"distill": distill_mode, "evaluate": retrieval.evaluate_mode,
         "export": retrieval.export_mode, "index": retrieval.index_mode,
         "search": retrieval.search_mode, "compare": retrieval.compare_mode,
         "teacher": teacher.teacher_mode}
