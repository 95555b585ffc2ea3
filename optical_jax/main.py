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
does not exist is an error naming the nearest one.

Exit codes: 0 done; 2 a usage, config or input error (one or two lines, the
key or the file and line); 1 a failure (the loss became NaN, a crash); 75 a
SIGTERM / SIGINT stop after saving (EX_TEMPFAIL: rerun the same command to
resume). `--verbose` or OPTICAL_JAX_VERBOSE=1 prints tracebacks.
"""
import difflib
import logging as std_logging
import os
import sys
import traceback

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from optical_jax import config as config_lib
from optical_jax.core import host_heap
from optical_jax.core import xla_flags
from optical_jax.data import bitext
from optical_jax.data.tfds_builders import network
from optical_jax.jobs import modes
from optical_jax.models import weights
from optical_jax.research import grid
from optical_jax.training import checkpoint
from optical_jax.training import loop
from optical_jax.training import sharding
from optical_jax.training import workdir

MODES = dict(modes.MODES, experiment=grid.experiment_mode)
# The modes whose time goes to training steps, where --host_heap pays on a CPU.
TRAINING_MODES = ("distill", "teacher", "experiment")
EXIT_FAILURE, EXIT_USAGE, EXIT_PREEMPTED = 1, 2, 75
# What a user can fix: bad config values, input files, a busy or foreign workdir.
USER_ERRORS = (config_lib.ConfigError, workdir.WorkdirLocked, checkpoint.CheckpointError,
               bitext.BitextError, weights.WeightsError, network.OfflineError, OSError,
               ValueError)

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
_HOST_HEAP = flags.DEFINE_enum(
    "host_heap", "os", list(host_heap.MODES),
    "Where XLA:CPU's per-call temporaries come from. tcmalloc: restart with tcmalloc "
    "preloaded (installed apart, e.g. libtcmalloc-minimal4); keep: kept in glibc's heap, "
    "each program run on the calling thread. "
    "Both give faster CPU steps for more resident memory (core/host_heap.py).")
_VERBOSE = flags.DEFINE_bool("verbose", False,
                             "print tracebacks of errors (also OPTICAL_JAX_VERBOSE=1)")
flags.mark_flags_as_required(["config", "workdir"])


def _verbose() -> bool:
  return "--verbose" in sys.argv or os.environ.get("OPTICAL_JAX_VERBOSE", "") in ("1", "true")


def _fail(code: int, message: str) -> None:
  """One or two lines on stderr (a traceback first with --verbose), then exit."""
  if _verbose():
    traceback.print_exc()
  hint = "" if _verbose() else "\n(--verbose or OPTICAL_JAX_VERBOSE=1 prints the traceback)"
  print(f"optical-jax: error: {message}{hint}", file=sys.stderr, flush=True)
  sys.exit(code)


def _config_keys() -> list[str]:
  return sorted(config_lib.flatten(config_lib.default().to_dict()))


def _override_error(argv, error: Exception) -> str:
  """The message for a `--config.KEY=VALUE` (or config file) the config rejects."""
  keys = _config_keys()
  for arg in argv[1:]:
    if not arg.startswith("--config."):
      continue
    key = arg[len("--config."):].split("=", 1)[0]
    if key not in keys and not any(k.startswith(key + ".") for k in keys):
      close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
      return (f"--config.{key}: no such config key"
              + (f"; did you mean --config.{close[0]}?" if close else ""))
  reason = " ".join(str(error).split()).strip("'\"")
  bad = [a for a in argv[1:] if a.startswith("--config")]
  return f"{' '.join(bad) or '--config'}: {reason}"


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:     # absl's own: a missing or unknown flag, a bad enum value
    _fail(EXIT_USAGE, str(e))
  except Exception as e:  # pylint: disable=broad-except  (the config file or an override)
    _fail(EXIT_USAGE, _override_error(argv, e))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  xla_flags.apply()   # before anything starts a JAX backend
  # Our progress at INFO; libraries (Orbax logs every save step) at WARNING.
  logging.set_verbosity(logging.WARNING)
  std_logging.getLogger("optical_jax").setLevel(std_logging.INFO)
  try:   # before JAX starts its backend ('tcmalloc' restarts the process here)
    heap = host_heap.configure(_HOST_HEAP.value)
  except ValueError as e:
    _fail(EXIT_USAGE, str(e))
  if _HOST_HEAP.value != "os":
    std_logging.getLogger("optical_jax").info("host memory: %s", heap)
  elif (_MODE.value in TRAINING_MODES and heap == host_heap.OS_DEFAULT
        and not host_heap.accelerator_expected(os.environ)):
    std_logging.getLogger("optical_jax").info(
        "host memory: glibc's defaults. On a CPU, --host_heap=tcmalloc (or keep) runs "
        "training steps faster for more resident memory (README, Performance: CPU)")
  sharding.maybe_initialize_distributed(_CONFIG.value.parallel)
  try:
    MODES[_MODE.value](_CONFIG.value, _WORKDIR.value, export_dir=_EXPORT_DIR.value,
                       runs=_RUNS.value, qrels=_QRELS.value, baseline=_BASELINE.value,
                       query_encoder=_QUERY_ENCODER.value)
  except loop.Preempted as e:
    print(f"optical-jax: {e}", file=sys.stderr, flush=True)
    sys.exit(EXIT_PREEMPTED)
  except FloatingPointError as e:
    _fail(EXIT_FAILURE, str(e))
  except USER_ERRORS as e:
    if isinstance(e, OSError) and e.filename and e.strerror:
      _fail(EXIT_USAGE, f"{e.filename}: {e.strerror}")
    _fail(EXIT_USAGE, str(e) or type(e).__name__)


def run():
  """Console-script entry point."""
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
