"""Exact resume in the job skeleton (training/job.py), run by the distill job in a fresh
process: 2N steps straight == N steps, SIGKILL, resume to 2N; SIGTERM saves, then stops."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from optical_jax.training import checkpoint

from tests import tiny_checkpoints
from tests.conftest import read_multilingual, write_pairs

# Runs the distill job in a fresh process; with KILL_AFTER set, the process
# SIGKILLs itself right after the checkpoint of that step is on disk (a hard
# kill, no cleanup: what a preempted or OOM-killed job sees).
_RUNNER = textwrap.dedent("""
    import logging, os, signal, sys
    logging.basicConfig(level=logging.INFO)
    from optical_jax import config as config_lib
    from optical_jax.jobs import distill
    from optical_jax.training import checkpoint
    from optical_jax.training import runner as runner_lib
    kill_after = int(os.environ.get("KILL_AFTER", "0"))
    if kill_after:
      save = checkpoint.Checkpointer.save
      def save_then_die(self, step, state, meta, force=False):
        saved = save(self, step, state, meta, force=force)
        if saved and step >= kill_after:
          self.wait()
          os.kill(os.getpid(), signal.SIGKILL)
        return saved
      checkpoint.Checkpointer.save = save_then_die
    c = config_lib.default()
    c.model.teacher = sys.argv[1]
    c.data.source, c.data.format, c.data.path = "files", "tsv", sys.argv[2]
    c.eval.collection = "none"
    c.train.update(steps=8, batch_size=8, max_length=32, lr=1e-3, log_every=1,
                   progress=False)
    c.ot.num_iterations = 10
    c.checkpoint.every_steps = 2
    c.lock()
    distill.run(c, sys.argv[3])
""")


def _run(teacher, data, workdir, kill_after=0):
  env = dict(os.environ, KILL_AFTER=str(kill_after))
  return subprocess.run([sys.executable, "-c", _RUNNER, str(teacher), str(data), str(workdir)],
                        env=env, capture_output=True, text=True, timeout=600)


def _final_params(workdir):
  ckpt = checkpoint.Checkpointer(workdir)
  step = ckpt.latest_step()
  restored = ckpt.manager.restore(step)
  ckpt.close()
  return step, restored["state"]["params"]


@pytest.mark.slow
def test_sigkill_then_resume_equals_straight_run(tmp_path):
  teacher = tiny_checkpoints.write_xlmr(tmp_path / "teacher")
  data = write_pairs(tmp_path / "pairs.tsv")

  straight = _run(teacher, data, tmp_path / "straight")
  assert straight.returncode == 0, straight.stderr[-3000:]

  killed = _run(teacher, data, tmp_path / "resumed", kill_after=4)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  records = [json.loads(l) for l in
             (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
  assert max(r["step"] for r in records) < 8, "the kill came before the end"
  resumed = _run(teacher, data, tmp_path / "resumed")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from step 4" in resumed.stderr

  step_a, a = _final_params(tmp_path / "straight")
  step_b, b = _final_params(tmp_path / "resumed")
  assert step_a == step_b == 8
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), atol=1e-6, err_msg=k)

  def losses(wd):
    recs = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().split("\n") if l]
    return [(r["step"], r["loss"]) for r in recs if r["kind"] == "train"]
  assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")
  assert len(losses(tmp_path / "straight")) == 8


@pytest.mark.slow
def test_sigterm_saves_then_stops(tmp_path):
  teacher = tiny_checkpoints.write_xlmr(tmp_path / "teacher")
  rows = read_multilingual()
  data = tmp_path / "pairs.tsv"
  data.write_text("".join(f"{t}\t{rows[0][1]}\n" for _, t in rows))
  # The runner sends itself SIGTERM in the middle of step 3 (as a preemption
  # notice would arrive): the job must finish that step, save it, and exit.
  runner = _RUNNER.replace('kill_after = int(os.environ.get("KILL_AFTER", "0"))', textwrap.dedent("""
      kill_after = 0
      call = runner_lib.StepRunner.__call__
      def call_then_term(self, state, *a):
        out = call(self, state, *a)
        if int(out[0].step if self.mode != "pmap" else out[0].step[0]) == 3:
          os.kill(os.getpid(), signal.SIGTERM)
        return out
      runner_lib.StepRunner.__call__ = call_then_term
      """))
  out = subprocess.run([sys.executable, "-c", runner, str(teacher), str(data),
                        str(tmp_path / "wd")], capture_output=True, text=True, timeout=600)
  assert out.returncode != 0 and "stopped by SIGTERM after step 3" in out.stderr, out.stderr[-2000:]
  step, _ = _final_params(tmp_path / "wd")
  assert step == 3, "the interrupted step was saved although it is not a multiple of 2"
  resumed = _run(teacher, data, tmp_path / "wd")
  assert resumed.returncode == 0 and "resumed from step 3" in resumed.stderr
  assert _final_params(tmp_path / "wd")[0] == 8
