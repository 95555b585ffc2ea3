"""Multi-host training, on one machine: two JAX processes (a local coordinator, two fake
CPU devices each) run the distillation job on one mesh spanning both, and it equals
the same job in one process with four devices: losses, parameters, and what is written
(process 0 writes the logs and records; every process writes its checkpoint shards)."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from optical_jax.training import checkpoint

from tests import tiny_checkpoints
from tests.conftest import write_pairs

# The distill job in a fresh process: argv = teacher, data, workdir, rules, and for a
# multi-host run the coordinator, the number of processes and this process's index.
_RUNNER = textwrap.dedent("""
    import logging, sys
    logging.basicConfig(level=logging.INFO)
    from optical_jax import config as config_lib
    from optical_jax.jobs import distill
    from optical_jax.training import sharding
    teacher, data, workdir, rules, *host = sys.argv[1:]
    c = config_lib.default()
    c.model.teacher = teacher
    c.data.source, c.data.format, c.data.path = "files", "tsv", data
    c.eval.collection = "none"
    c.train.update(steps=6, batch_size=8, max_length=32, lr=1e-3, log_every=1,
                   progress=False)
    c.ot.num_iterations = 10
    c.checkpoint.update(every_steps=3, async_save=False)
    c.parallel.update(rules=rules, use_mesh="yes")
    if host:
      c.parallel.update(distributed=True, coordinator=host[0], num_processes=int(host[1]),
                        process_id=int(host[2]))
    c.lock()
    sharding.maybe_initialize_distributed(c.parallel)
    import jax
    print("devices", jax.process_index(), jax.local_device_count(), jax.device_count(),
          flush=True)
    distill.run(c, workdir)
""")


def _env(devices: int) -> dict:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(args, devices):
  return subprocess.Popen([sys.executable, "-c", _RUNNER, *map(str, args)], env=_env(devices),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=600):
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    out, err = proc.communicate()
  return proc.returncode, out, err


def _losses(workdir):
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [r["loss"] for r in records if r["kind"] == "train"]


def _params(workdir):
  """(newest step, its parameters as numpy): read here, on another device count than
  either run's, so restored as host arrays rather than onto the saved shardings."""
  ckpt = checkpoint.Checkpointer(workdir)
  step = ckpt.latest_step()
  ckpt.close()
  path = workdir / "checkpoints" / str(step) / "state"
  reader = ocp.PyTreeCheckpointer()
  tree = reader.metadata(path).item_metadata.tree
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return step, reader.restore(path, restore_args=as_numpy)["params"]


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
  root = tmp_path_factory.mktemp("multihost")
  teacher = tiny_checkpoints.write_xlmr(root / "teacher")
  return root, teacher, write_pairs(root / "pairs.tsv")


@pytest.mark.slow
def test_two_processes_equal_one(problem):
  # FSDP: parameters and optimizer state sharded over both processes' devices, so
  # the step's all-gathers, gradient reductions and the checkpoint shards each
  # process writes all cross the process boundary.
  rules = "fsdp"
  root, teacher, data = problem
  single, multi = root / f"single_{rules}", root / f"multi_{rules}"
  rc, out, err = _finish(_start([teacher, data, single, rules], devices=4))
  assert rc == 0, err[-3000:]
  assert "devices 0 4 4" in out

  coordinator = f"127.0.0.1:{_free_port()}"
  procs = [_start([teacher, data, multi, rules, coordinator, 2, i], devices=2)
           for i in range(2)]
  results = [_finish(p) for p in procs]
  for i, (rc, out, err) in enumerate(results):
    assert rc == 0, (i, err[-3000:])
    assert f"devices {i} 2 4" in out, out     # one mesh of 4 devices over 2 processes

  np.testing.assert_allclose(_losses(multi), _losses(single), rtol=1e-5, atol=1e-6)
  assert len(_losses(multi)) == 6
  step_m, params_m = _params(multi)
  step_s, params_s = _params(single)
  assert step_m == step_s == 6
  assert params_m.keys() == params_s.keys()
  for k in params_s:
    # A key bias adds the same score to every key of a query, which softmax ignores:
    # its true gradient is 0, and Adam scales the rounding left by another all-reduce
    # order up to steps of size lr. Everything else agrees to float32 rounding.
    atol = 2e-5 if k.endswith("attention/key/bias") else 1e-6
    np.testing.assert_allclose(params_m[k], params_s[k], rtol=1e-5, atol=atol, err_msg=k)

  # Process 0 alone writes the records, logs and results; process 1 wrote none of its own.
  for name in ("config.json", "run.json", "metrics.jsonl"):
    assert (multi / name).exists(), name
  lines = (multi / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == len((single / "metrics.jsonl").read_text().splitlines())
  assert not (multi / ".lock").exists()       # released at the end, by its holder
