r"""Command line: `optical-jax` / `python -m optical_jax.main`.

  optical-jax --config=configs/demo.py --workdir=runs/demo              # distill
  optical-jax --config=configs/demo.py --workdir=runs/demo --mode=evaluate
  optical-jax --config=configs/demo.py --workdir=runs/demo --mode=export \
      --export_dir=runs/demo/student_hf
  optical-jax --config=configs/demo.py --workdir=runs/demo --mode=index
  optical-jax --config=configs/demo.py --workdir=runs/demo --mode=search
  optical-jax --config=configs/demo.py --workdir=runs/demo --mode=compare \
      --runs=runs/demo/eval/zero_shot.run,runs/demo/eval/optical.run

Every config field can be overridden (`--config.train.steps=20`); a key that
does not exist is an error.
"""
import logging as std_logging

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from optical_jax.jobs import modes
from optical_jax.research import grid
from optical_jax.training import sharding

MODES = dict(modes.MODES, experiment=grid.experiment_mode)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and results go.")
_MODE = flags.DEFINE_enum(
    "mode", "distill",
    ["distill", "evaluate", "export", "index", "search", "compare", "experiment", "teacher"],
    "distill: zero-shot eval, train, eval. evaluate: --runs against qrels, or the "
    "teacher zero-shot and the student of --workdir. export: the student as a Hugging "
    "Face directory. index / search: a document index and a TREC run. compare: --runs "
    "against --baseline with significance tests. experiment: the grid of an experiment "
    "config (configs/experiments/), resumable. teacher: train an English retrieval teacher "
    "on (query, positive, negative) triples (configs/teacher.py), exported to WORKDIR/export.")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None,
                                  "export: output directory (default WORKDIR/student_hf).")
_RUNS = flags.DEFINE_list("runs", [], "evaluate / compare: TREC run files.")
_QRELS = flags.DEFINE_string("qrels", None,
                             "evaluate / compare: qrels file (default: the config's collection).")
_BASELINE = flags.DEFINE_string("baseline", None, "compare: the baseline run (default: first).")
_QUERY_ENCODER = flags.DEFINE_enum("query_encoder", "auto", ["auto", "teacher", "student"],
                                   "search: auto = the student when --workdir has one.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Our progress at INFO; libraries (Orbax logs every save step) at WARNING.
  logging.set_verbosity(logging.WARNING)
  std_logging.getLogger("optical_jax").setLevel(std_logging.INFO)
  sharding.maybe_initialize_distributed(_CONFIG.value.parallel.distributed)
  MODES[_MODE.value](_CONFIG.value, _WORKDIR.value, export_dir=_EXPORT_DIR.value,
                          runs=_RUNS.value, qrels=_QRELS.value, baseline=_BASELINE.value,
                          query_encoder=_QUERY_ENCODER.value)


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
