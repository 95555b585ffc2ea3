"""A workdir is one run: its lock and its record, checked before anything is written."""
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from optical_jax import config as config_lib
from optical_jax.training import workdir as workdir_lib

TRAIN = ("seed", "method", "model", "text", "data", "loss", "ot", "pretrain", "train")
EVAL = ("eval",)


def _config(**overrides):
  c = config_lib.default()
  for key, value in overrides.items():
    block, field = key.split(".")
    c[block][field] = value
  return c


def _snapshot(wd):
  """Every file under `wd` with its bytes: what 'nothing written' compares."""
  return {str(p.relative_to(wd)): p.read_bytes() for p in sorted(wd.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ the lock

_HOLDER = textwrap.dedent("""
    import sys, time
    from optical_jax.training import workdir
    with workdir.lock(sys.argv[1]):
      print("holding", flush=True)
      time.sleep(60)
""")


def test_a_second_process_is_refused_in_one_line(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "holding"
    with pytest.raises(workdir_lib.WorkdirLocked) as e:
      with workdir_lib.lock(tmp_path):
        pass
    message = str(e.value)
    assert f"in use by process {holder.pid}" in message and "\n" not in message
  finally:
    holder.kill()
    holder.wait()


def test_a_dead_process_lock_is_taken_over_and_released(tmp_path, caplog):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  pid = int(dead.stdout)    # that process has exited: its pid is free
  (tmp_path / workdir_lib.LOCK).write_text(json.dumps(
      {"pid": pid, "host": os.uname().nodename, "since": "earlier"}))
  with caplog.at_level("WARNING", logger="optical_jax.training.workdir"):
    with workdir_lib.lock(tmp_path):
      held = json.loads((tmp_path / workdir_lib.LOCK).read_text())
      assert held["pid"] == os.getpid()
  assert f"took over the lock of process {pid}" in caplog.text
  assert not (tmp_path / workdir_lib.LOCK).exists(), "released on exit"
  assert not list(tmp_path.glob(".lock.stale*"))


def test_lock_is_reentrant_and_refuses_a_file(tmp_path):
  with workdir_lib.lock(tmp_path):
    with workdir_lib.lock(tmp_path):       # a job calling another job on its workdir
      assert (tmp_path / workdir_lib.LOCK).exists()
    assert (tmp_path / workdir_lib.LOCK).exists(), "the outer holder still holds it"
  assert not (tmp_path / workdir_lib.LOCK).exists()
  (tmp_path / "f").write_text("x")
  with pytest.raises(workdir_lib.WorkdirError, match=r"--workdir .*f is a file"):
    with workdir_lib.lock(tmp_path / "f"):
      pass


def test_a_lock_of_another_host_is_not_taken(tmp_path):
  (tmp_path / workdir_lib.LOCK).write_text(json.dumps(
      {"pid": 1, "host": "another-host", "since": "earlier"}))
  with pytest.raises(workdir_lib.WorkdirLocked, match="on another-host"):
    with workdir_lib.lock(tmp_path):
      pass
  assert json.loads((tmp_path / workdir_lib.LOCK).read_text())["host"] == "another-host"


# ------------------------------------------------------------------ the record

def _finished(results):
  return results.get("steps") == 160 and "optical" in results


def test_a_new_run_writes_its_record_only_after_the_check(tmp_path):
  c = _config()
  run = workdir_lib.check(tmp_path, c, TRAIN, EVAL, _finished)
  assert run.status == "new" and not list(tmp_path.iterdir())
  workdir_lib.write_record(tmp_path, c, TRAIN, EVAL)
  record = json.loads((tmp_path / workdir_lib.RECORD).read_text())
  assert record["training"]["train"]["lr"] == c.train.lr
  assert "progress" not in record["training"]["train"]      # does not change a result
  assert json.loads((tmp_path / workdir_lib.CONFIG).read_text())["train"]["lr"] == c.train.lr


def test_another_training_config_is_refused_naming_the_keys_and_nothing_changes(tmp_path):
  workdir_lib.write_record(tmp_path, _config(), TRAIN, EVAL)
  (tmp_path / "results.json").write_text(json.dumps({"steps": 20}))
  before = _snapshot(tmp_path)
  other = _config(**{"train.lr": 1e-3, "train.batch_size": 16})
  with pytest.raises(workdir_lib.WorkdirError) as e:
    workdir_lib.check(tmp_path, other, TRAIN, EVAL, _finished)
  assert "config.train.batch_size (32 there, 16 now)" in str(e.value)
  assert "config.train.lr (2e-05 there, 0.001 now)" in str(e.value)
  assert _snapshot(tmp_path) == before
  # Logging and progress bars are not part of the run: no refusal.
  same = _config(**{"train.log_every": 1, "train.progress": False})
  assert workdir_lib.check(tmp_path, same, TRAIN, EVAL, _finished).status == "resume"


def test_steps_change_only_where_the_schedule_of_the_steps_done_stays(tmp_path):
  constant = {"train.schedule": "constant", "train.warmup_frac": 0.0}
  workdir_lib.write_record(tmp_path, _config(**constant), TRAIN, EVAL)
  (tmp_path / "checkpoints" / "4").mkdir(parents=True)
  more = _config(**constant, **{"train.steps": 300})
  assert workdir_lib.check(tmp_path, more, TRAIN, EVAL, _finished).status == "resume"
  workdir_lib.write_record(tmp_path, _config(), TRAIN, EVAL)      # linear decay over 160
  with pytest.raises(workdir_lib.WorkdirError, match="schedule of the steps done"):
    workdir_lib.check(tmp_path, _config(**{"train.steps": 300}), TRAIN, EVAL, _finished)


def test_a_finished_run_is_complete_or_evaluated_beside_never_over(tmp_path):
  c = _config()
  workdir_lib.write_record(tmp_path, c, TRAIN, EVAL)
  (tmp_path / "results.json").write_text(json.dumps({"steps": 160, "optical": {"nDCG@10": 1}}))
  assert workdir_lib.check(tmp_path, c, TRAIN, EVAL, _finished).status == "complete"
  other_eval = _config(**{"eval.max_queries": 20})
  run = workdir_lib.check(tmp_path, other_eval, TRAIN, EVAL, _finished)
  assert run.status == "evaluate"
  assert run.eval_dir.parent == tmp_path / workdir_lib.EVALUATIONS
  assert run.eval_dir != workdir_lib.check(
      tmp_path, _config(**{"eval.max_queries": 30}), TRAIN, EVAL, _finished).eval_dir
  # An unfinished run keeps its evaluation.
  (tmp_path / "results.json").write_text(json.dumps({"steps": 80}))
  with pytest.raises(workdir_lib.WorkdirError, match=r"another evaluation: config\.eval\.max_q"):
    workdir_lib.check(tmp_path, other_eval, TRAIN, EVAL, _finished)


def test_a_half_written_lock_is_stale(tmp_path):
  (tmp_path / workdir_lib.LOCK).write_text("{not json")   # half-written by a dead process
  start = time.time()
  with workdir_lib.lock(tmp_path):
    assert json.loads((tmp_path / workdir_lib.LOCK).read_text())["pid"] == os.getpid()
  assert time.time() - start < 5
