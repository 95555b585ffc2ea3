"""The skeleton every training job fills: place, initialise or resume, evaluate, loop.

A job (distill, teacher) loads its own model and data and says what it trains
in a `TrainingJob`: the model's graph and parameters (trainable, frozen, and
fixed inputs such as a teacher's), how to build its pure step once the
optimizer and mesh are known, how to build a batch for a step, and how to
evaluate a model. `train` then does what every job does:

  build the mesh (`parallel`), check that the batch divides over the hosts and
  data-parallel devices, place the parameters (`runner.StepRunner`), create
  or restore the state (`checkpoint` block; a workdir of another config is
  refused), evaluate before training, run the loop (NaN stop, logs,
  checkpoints, SIGTERM), evaluate after, and keep `results.json` up to date.

What is left to the job is what differs: its results table, an export.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Callable, Mapping, Sequence

from flax import nnx
import jax
import ml_collections
import numpy as np
import optax

from optical_jax import config as config_lib
from optical_jax.data import batches
from optical_jax.training import loop as loop_lib
from optical_jax.training import metric_log
from optical_jax.training import runner as runner_lib
from optical_jax.training import sharding
from optical_jax.training import state as state_lib
from optical_jax.training.trainable import ModelParts
from optical_jax.training.trainable import Params

RESULTS = "results.json"
# Batches sampled (a run's first steps) to size the packed token budget.
PACKING_SAMPLE_STEPS = 32


def token_packing(config: ml_collections.ConfigDict) -> bool:
  """Whether this run's encoders skip padding (`train.token_packing`).

  'auto' packs where the step runs on one CPU device: there the matmuls are
  the step, and packing the demo's batches took it from 3.9 to 2.7 s on a
  2-core EPYC (README, Performance). Packed tokens are not split over a mesh,
  so 'on' needs one device; GPUs are not measured yet, so 'auto' leaves them
  padded.

  Raises:
    ConfigError: 'on' where the step runs on a mesh or several processes.
  """
  mode = config.train.token_packing
  one_device = sharding.configured_mesh(config.parallel) is None and jax.process_count() == 1
  if mode == "on" and not one_device:
    raise config_lib.ConfigError(
        "config.train.token_packing='on' needs the step on one device (one process and "
        "parallel.use_mesh='no', or one device): packed tokens are not split over a mesh")
  return mode == "on" or (mode == "auto" and one_device and jax.default_backend() == "cpu")


def packing_budget(config: ml_collections.ConfigDict,
                   sample_masks: Callable[[int, np.ndarray], Mapping[str, np.ndarray]],
                   order: Any) -> dict[str, int] | None:
  """The packed budgets a run's batches get (`batches.pack_capacities`), or None
  when it does not pack (`token_packing`).

  `sample_masks(step, indices)` builds that step's padded batch and returns its
  `{side: mask}`. The budget comes from the run's first batches (a random sample
  of the data, and the same ones after a resume); a later batch over it runs
  padded. Prints what it chose.
  """
  if not token_packing(config):
    return None
  tcfg = config.train
  sample = [sample_masks(s, order.indices(s))
            for s in range(min(tcfg.steps, PACKING_SAMPLE_STEPS))]
  budget = batches.pack_capacities(sample)
  positions = {side: m.size for side, m in sample[0].items()}
  print("token packing: " + (", ".join(f"{k} {v} of {positions[k]} positions"
                                       for k, v in budget.items())
                             or "nothing to gain (no side has padding to skip)"), flush=True)
  return budget


# (model, name) -> metrics; `name` names the run files (eval/NAME.run).
Evaluate = Callable[[nnx.Module, str], Mapping[str, float]]


@dataclasses.dataclass
class TrainingJob:
  """What a job trains, and how.

  Attributes:
    name: the progress bar's label ('distill', 'teacher').
    unit: what one example is ('pairs', 'triples'): throughput logs.
    resume_keys: config keys a resumed run must share with the saved one.
    parts: the trained model's graph.
    initial: the model before training (evaluated first).
    params: its trainable parameters (`train.trainable`), plus any trained
      head's under a prefix (see `templates`).
    frozen: the model's parameters that do not train.
    make_step: (optimizer, mesh or None, mode) -> the pure step
      `(state, frozen, *fixed, batch[, axis_name]) -> (state, metrics)`.
    make_batch: (step, this host's example indices) -> the batch (numpy).
    order: the data order: `.indices(step, process, count)`, `.position(done)`.
    fixed: more step inputs that never train (the teacher's parameters).
    templates: more (name prefix, `ModelParts.templates`) of trained heads
      whose parameters sit in `params` under that prefix.
    pmap: whether the step has a per-device form (`parallel.step='pmap'`).
    make_evaluator: () -> an `Evaluate`, or None when there is nothing to
      evaluate on; called only if something will be evaluated (it may encode
      a collection).
    before, after: the results keys of the evaluations before and after
      training ('' = none before).
    counters: running counts the job keeps while building batches (e.g.
      'truncated_texts'): logged with every record, saved with every
      checkpoint and restored on resume.
  """
  name: str
  unit: str
  resume_keys: Sequence[str]
  parts: ModelParts
  initial: nnx.Module
  params: Params
  frozen: Params
  make_step: Callable[[optax.GradientTransformation, Any, str], Callable]
  make_batch: Callable[[int, np.ndarray], Mapping[str, np.ndarray]]
  order: Any
  fixed: Sequence[Params] = ()
  templates: Sequence[tuple[str, Sequence[tuple[str, tuple, Any]]]] = ()
  pmap: bool = True
  make_evaluator: Callable[[], Evaluate] | None = None
  before: str = ""
  after: str = "trained"
  counters: dict[str, int] = dataclasses.field(default_factory=dict)


def read_results(workdir: str | pathlib.Path) -> dict[str, Any]:
  """The workdir's results.json, or {}."""
  path = pathlib.Path(workdir) / RESULTS
  return json.loads(path.read_text()) if path.exists() else {}


def write_results(workdir: str | pathlib.Path, results: Mapping[str, Any]) -> None:
  """results.json, on process 0 (every host computes the same)."""
  if jax.process_index() == 0:
    (pathlib.Path(workdir) / RESULTS).write_text(json.dumps(results, indent=2))


def _runner(job: TrainingJob, config: ml_collections.ConfigDict,
            tx: optax.GradientTransformation) -> runner_lib.StepRunner:
  mesh = sharding.configured_mesh(config.parallel)
  mode = config.parallel.step
  if mesh is not None and mode == "pmap" and not job.pmap:
    raise config_lib.ConfigError(f"config.parallel.step='pmap': the {job.name} job has no "
                                 "per-device step; use 'shard_map'")
  runner = runner_lib.StepRunner(job.make_step(tx, mesh, mode),
                                 [("", job.parts.templates), *job.templates], mesh=mesh,
                                 mode=mode, rules=sharding.resolve_rules(config.parallel.rules))
  batch_size = config.train.batch_size
  for ways, what in ((jax.process_count(), "hosts"),
                     (runner.data_parallelism, f"data-parallel devices ({mode})")):
    if batch_size % ways:
      raise config_lib.ConfigError(f"config.train.batch_size={batch_size} does not divide "
                                   f"over {ways} {what}; see config.parallel")
  return runner


def train(job: TrainingJob, config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
          results: dict[str, Any]) -> tuple[nnx.Module, dict[str, Any]]:
  """Trains `job` in `workdir` (resuming from its checkpoints), evaluating
  before and after; `results` (what results.json holds) is updated and kept on
  disk as evaluations finish.

  Returns:
    (the trained model, results with `job.before`, `job.after` and 'steps').

  Raises:
    ConfigError: a batch that does not divide over the devices, a step mode the
      job has no form for, a workdir of another config.
    FloatingPointError: the loss became NaN or inf (the step is named).
    loop.Preempted: SIGTERM / SIGINT, after saving a checkpoint.
  """
  wd = pathlib.Path(workdir)
  tcfg = config.train
  tx, schedule = state_lib.make_optimizer(tcfg)
  runner = _runner(job, config, tx)
  # The step's copies (sharded or replicated); the host copies stay for evaluation.
  frozen = runner.place_params(job.frozen)
  fixed = [runner.place_params(f) for f in job.fixed]
  state = runner.init_state(job.params, tx, config.seed)
  ckpt, state, start, meta = loop_lib.restore(wd, config, state, tuple(job.resume_keys))
  job.counters.update(meta.get("counters", {}))
  logger = metric_log.MetricLogger(wd, resume_step=start)

  finished = results.get("steps") == tcfg.steps and job.after in results
  # An evaluator may encode a whole collection: only when something will be evaluated.
  evaluate = job.make_evaluator() if job.make_evaluator and not finished else None
  if evaluate and job.before and job.before not in results:
    results[job.before] = dict(evaluate(job.initial, job.before))
    logger.write(0, results[job.before], kind=f"eval_{job.before}")
    write_results(wd, results)

  def model_of(state) -> nnx.Module:
    return job.parts.merge(job.frozen, runner.to_host(state).params)

  record = {"config": config_lib.resume_record(config, tuple(job.resume_keys))}
  state = loop_lib.run(loop_lib.Loop(
      steps=tcfg.steps, batch_size=tcfg.batch_size, order=job.order, make_batch=job.make_batch,
      step=lambda st, batch: runner(st, frozen, *fixed, batch), to_host=runner.to_host,
      ckpt=ckpt, logger=logger, meta=record, schedule=schedule, log_every=tcfg.log_every,
      progress=tcfg.progress, extra_log=lambda: dict(job.counters),
      evaluate=(lambda st, done: evaluate(model_of(st), f"step{done}")) if evaluate else None,
      eval_every=config.eval.every_steps, desc=job.name, unit=job.unit),
      runner.to_device(state), start)
  model = model_of(state)
  if evaluate:
    results[job.after] = dict(evaluate(model, job.after))
    logger.write(tcfg.steps, results[job.after], kind=f"eval_{job.after}")
  results["steps"] = tcfg.steps
  logger.close()
  return model, results
