"""A workdir you can trust, tried through the command line as a user would.

Every case of the list a user's report gave (lost checkpoints, stale results,
silent resumes with another config, two processes on one workdir, a broken
newest checkpoint, unclear errors and tracebacks), and a chaos run: several
SIGKILLs at random points, one of them during an asynchronous save, each
followed by a resume, end exactly where an uninterrupted run ends.
"""
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from optical_jax.training import checkpoint
from optical_jax.training import workdir as workdir_lib

from tests import tiny_checkpoints
from tests.conftest import read_multilingual, write_pairs

REPO = pathlib.Path(__file__).resolve().parents[2]
EXIT_USAGE, EXIT_PREEMPTED = 2, 75
KILLS = 3   # SIGKILLs at random steps in the chaos run, after one inside an async save


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """A tiny teacher, bitext and a collection in files, as a user brings them."""
  root = tmp_path_factory.mktemp("data")
  tiny_checkpoints.write_xlmr(root / "teacher")
  rows = read_multilingual()
  english = [t for lang, t in rows if lang == "en"]
  write_pairs(root / "pairs.tsv")
  (root / "queries.tsv").write_text("".join(f"q{i}\t{t}\n" for i, (lang, t) in
                                            enumerate(rows) if lang != "en"))
  (root / "corpus.tsv").write_text("".join(f"d{i}\t{t}\n" for i, t in enumerate(english)))
  (root / "qrels.txt").write_text("".join(f"q{i} 0 d{i % len(english)} 1\n"
                                          for i, (lang, _) in enumerate(rows) if lang != "en"))
  return root


def _args(data, workdir, *extra):
  return ["--config=configs/optical.py", f"--workdir={workdir}",
          f"--config.model.teacher={data / 'teacher'}", f"--config.data.path={data / 'pairs.tsv'}",
          f"--config.eval.queries={data / 'queries.tsv'}",
          f"--config.eval.corpus={data / 'corpus.tsv'}", f"--config.eval.qrels={data / 'qrels.txt'}",
          "--config.eval.metrics=('nDCG@10', 'MRR@10')", "--config.eval.k=10",
          "--config.train.steps=8", "--config.train.batch_size=4", "--config.train.max_length=32",
          "--config.train.log_every=1", "--config.train.progress=False",
          "--config.checkpoint.every_steps=2", "--config.ot.num_iterations=5", *extra]


def _env():
  # One CPU device, as a laptop user runs it (the suite's compilation cache comes along).
  return {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}


def _cli(*args, timeout=600):
  return subprocess.run([sys.executable, "-m", "optical_jax.main", *args], cwd=REPO,
                        env=_env(), capture_output=True, text=True, timeout=timeout)


def _snapshot(wd):
  return {str(p.relative_to(wd)): p.read_bytes() for p in sorted(wd.rglob("*"))
          if p.is_file() and "tensorboard" not in p.parts}


def _error_lines(stderr: str) -> list[str]:
  """The error: what the program printed from its 'error:' line on."""
  lines = stderr.strip().splitlines()
  start = next(i for i, l in enumerate(lines) if "optical-jax: error:" in l)
  return lines[start:]


def _user_error(out, *fragments):
  assert out.returncode == EXIT_USAGE, (out.returncode, out.stderr[-2000:])
  assert "Traceback" not in out.stderr, out.stderr[-2000:]
  lines = _error_lines(out.stderr)
  assert len(lines) <= 2, lines
  for fragment in fragments:
    assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
  wd = tmp_path_factory.mktemp("finished") / "wd"
  out = _cli(*_args(data, wd))
  assert out.returncode == 0, out.stderr[-3000:]
  return wd


def test_finished_run_reruns_as_complete_and_refuses_another_config(data, finished):
  before = _snapshot(finished)
  again = _cli(*_args(data, finished))
  assert again.returncode == 0 and "this run is complete (8 steps)" in again.stdout
  assert "| OPTICAL student |" in again.stdout
  assert _snapshot(finished) == before, "a complete run rerun writes nothing"
  # Another learning rate: refused, naming the key, config.json untouched.
  other = _cli(*_args(data, finished, "--config.train.lr=0.001"))
  _user_error(other, "config.train.lr (2e-05 there, 0.001 now)")
  assert _snapshot(finished) == before


def test_another_evaluation_of_a_finished_run_goes_beside(data, finished, tmp_path):
  # Other eval files (a subset of the queries): evaluated anew, never over the old.
  qrels = tmp_path / "qrels_subset.txt"
  qrels.write_text("".join((data / "qrels.txt").read_text().splitlines(True)[:6]))
  before = _snapshot(finished)
  out = _cli(*_args(data, finished, f"--config.eval.qrels={qrels}"))
  assert out.returncode == 0, out.stderr[-2000:]
  assert "evaluated on the configured evaluation" in out.stdout
  new = [p for p in _snapshot(finished) if p not in before]
  assert new and all(p.startswith("evaluations/") for p in new)
  assert all(_snapshot(finished)[p] == b for p, b in before.items()), "old results untouched"
  (result,) = finished.glob("evaluations/*/results.json")
  judged = json.loads(result.read_text())["eval_data"]["judged_queries"]
  assert judged == 6


def test_partial_run_refuses_another_batch_size_and_lr(data, tmp_path):
  wd = tmp_path / "wd"
  first = _cli(*_args(data, wd, "--config.train.steps=8"), timeout=600)
  assert first.returncode == 0
  # A partial state: the record of an 8-step run, stopped after step 4.
  for step in ("6", "8"):
    shutil.rmtree(wd / "checkpoints" / step)
  (wd / "results.json").unlink()
  before = _snapshot(wd)
  for override, key in (("--config.train.batch_size=2", "config.train.batch_size"),
                        ("--config.train.lr=0.01", "config.train.lr")):
    _user_error(_cli(*_args(data, wd, override)), key)
  assert _snapshot(wd) == before


def test_max_to_keep_zero_is_a_config_error(data, tmp_path):
  out = _cli(*_args(data, tmp_path / "wd", "--config.checkpoint.max_to_keep=0"))
  _user_error(out, "config.checkpoint.max_to_keep must be >= 1")
  assert not (tmp_path / "wd").exists()


def test_unclear_errors_are_one_line_naming_the_key_or_file(data, tmp_path):
  _user_error(_cli(*_args(data, tmp_path / "a", "--config.train.stpes=3")),
              "--config.train.stpes: no such config key; did you mean --config.train.steps?")
  _user_error(_cli(*_args(data, tmp_path / "b", f"--config.data.path={tmp_path}")),
              str(tmp_path), "a directory")
  (tmp_path / "file").write_text("x")
  _user_error(_cli(*_args(data, tmp_path / "file")), "--workdir", "is a file")
  _user_error(_cli(*_args(data, tmp_path / "c", "--config.eval.queries=")),
              "config.eval.queries is empty")
  bad = tmp_path / "bad.tsv"
  bad.write_text("one\ttwo\nthree\n")
  _user_error(_cli(*_args(data, tmp_path / "d", f"--config.data.path={bad}")),
              f"{bad}:2:")
  wide = tmp_path / "wide.tsv"
  wide.write_text("one\ttwo\textra\n")
  _user_error(_cli(*_args(data, tmp_path / "e", f"--config.data.path={wide}")),
              "config.data.num_columns")


def test_meaningless_inputs_are_refused(data, tmp_path):
  # Qrels naming documents that are not in the corpus: every system scores 0.
  qrels = tmp_path / "qrels.txt"
  qrels.write_text("q2 0 nowhere 1\nq3 0 elsewhere 1\n")
  _user_error(_cli(*_args(data, tmp_path / "a", f"--config.eval.qrels={qrels}")),
              "has a relevant document in the corpus")
  # A batch larger than the bitext: a pair would be its own negative.
  pairs = len((data / "pairs.tsv").read_text().splitlines())
  _user_error(_cli(*_args(data, tmp_path / "b", "--config.train.batch_size=64")),
              f"config.train.batch_size=64 is more than the {pairs} training pairs")


def test_skipped_lines_and_truncations_reach_the_results(data, tmp_path):
  pairs = tmp_path / "pairs.tsv"
  pairs.write_text((data / "pairs.tsv").read_text() + "no tab here\n\tempty source\n")
  wd = tmp_path / "wd"
  out = _cli(*_args(data, wd, f"--config.data.path={pairs}", "--config.data.on_bad_line=skip",
                    "--config.train.max_length=16"))
  assert out.returncode == 0, out.stderr[-2000:]
  results = json.loads((wd / "results.json").read_text())
  assert results["data"]["skipped"] == {"empty_side": 1, "wrong_columns": 1}
  assert results["data"]["pairs"] == len((data / "pairs.tsv").read_text().splitlines())
  records = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in records if r["kind"] == "train"]
  # Truncations are counted per training batch and only grow.
  counts = [r["truncated_texts"] for r in train]
  assert counts == sorted(counts) and counts[-1] == results["data"]["truncated_texts"] > 0


def test_two_processes_one_refused(data, tmp_path):
  wd = tmp_path / "wd"
  slow = subprocess.Popen([sys.executable, "-m", "optical_jax.main",
                           *_args(data, wd, "--config.train.steps=400")], cwd=REPO, env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    for _ in range(600):
      if (wd / workdir_lib.LOCK).exists():
        break
      time.sleep(0.1)
    second = _cli(*_args(data, wd, "--config.train.steps=400"))
    _user_error(second, f"in use by process {slow.pid}")
  finally:
    slow.send_signal(signal.SIGTERM)
    rc = slow.wait(timeout=300)
  assert rc in (0, EXIT_PREEMPTED), slow.stderr.read()[-2000:]
  steps = [json.loads(l)["step"] for l in (wd / "metrics.jsonl").read_text().splitlines()
           if json.loads(l)["kind"] == "train"]
  assert len(steps) == len(set(steps)), "one writer: no step logged twice"


def test_sigterm_exits_with_the_resume_code(data, tmp_path):
  wd = tmp_path / "wd"
  run = subprocess.Popen([sys.executable, "-m", "optical_jax.main",
                          *_args(data, wd, "--config.train.steps=400")], cwd=REPO, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  for _ in range(1200):
    if (wd / "metrics.jsonl").exists() and "train" in (wd / "metrics.jsonl").read_text():
      break
    time.sleep(0.1)
  run.send_signal(signal.SIGTERM)
  _, err = run.communicate(timeout=300)
  assert run.returncode == EXIT_PREEMPTED, err[-2000:]
  assert "saved; resume with the same command" in err
  assert "Traceback" not in err


# ------------------------------------------------------------------ broken checkpoints

def _two_checkpoints(data, tmp_path):
  wd = tmp_path / "wd"
  out = _cli(*_args(data, wd, "--config.checkpoint.async_save=False"))
  assert out.returncode == 0, out.stderr[-2000:]
  (wd / "results.json").unlink()     # as if the run had stopped after its last save
  return wd


@pytest.mark.parametrize("damage", ["truncate", "corrupt", "missing"])
def test_a_broken_newest_checkpoint_falls_back_to_the_previous(data, tmp_path, damage):
  wd = _two_checkpoints(data, tmp_path)
  newest = max((p for p in (wd / "checkpoints").iterdir() if p.name.isdigit()),
               key=lambda p: int(p.name))
  files = sorted((p for p in newest.rglob("*") if p.is_file() and p.stat().st_size > 0),
                 key=lambda p: -p.stat().st_size)
  victim = files[0]
  if damage == "truncate":
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
  elif damage == "corrupt":
    victim.write_bytes(os.urandom(victim.stat().st_size))
  else:
    victim.unlink()
  out = _cli(*_args(data, wd))
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"checkpoint step {newest.name}" in out.stderr and "does not restore" in out.stderr
  assert "resuming from step 6, the newest checkpoint that restores" in out.stderr
  assert list((wd / checkpoint.BROKEN).iterdir()), "the broken one is kept aside, not deleted"
  assert json.loads((wd / "results.json").read_text())["steps"] == 8


def test_no_checkpoint_restores_is_a_clear_error_and_nothing_is_deleted(data, tmp_path):
  wd = _two_checkpoints(data, tmp_path)
  for step in (p for p in (wd / "checkpoints").iterdir() if p.name.isdigit()):
    for f in step.rglob("*"):
      if f.is_file() and f.stat().st_size > 100:
        f.write_bytes(b"\0" * f.stat().st_size)
  before = _snapshot(wd)
  out = _cli(*_args(data, wd))
  _user_error(out, "no checkpoint in", "restores (nothing was moved or deleted)")
  after = _snapshot(wd)
  assert {p for p in before if p.startswith("checkpoints/")} <= set(after)


# ------------------------------------------------------------------ chaos

# The CLI with a hook that SIGKILLs the process at KILL_AT: 'log:N' right after
# step N is logged (before its checkpoint, if any), 'save:N' right after step N's
# asynchronous save has started (the write is under way).
_KILLING_CLI = textwrap.dedent("""
    import os, runpy, signal, sys
    from optical_jax.training import checkpoint, metric_log
    where, step = os.environ["KILL_AT"].split(":")
    step = int(step)
    def die():
      os.kill(os.getpid(), signal.SIGKILL)
    if where == "save":
      save = checkpoint.Checkpointer.save
      def save_then_die(self, n, state, meta, force=False):
        saved = save(self, n, state, meta, force=force)
        if saved and n == step:
          die()
        return saved
      checkpoint.Checkpointer.save = save_then_die
    else:
      write = metric_log.MetricLogger.write
      def write_then_die(self, n, metrics, kind="train"):
        write(self, n, metrics, kind)
        if kind == "train" and n == step:
          die()
      metric_log.MetricLogger.write = write_then_die
    sys.argv = ["optical-jax", *sys.argv[1:]]
    runpy.run_module("optical_jax.main", run_name="__main__")
""")


def _train_records(wd):
  records = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
  return [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]


def _params(wd):
  ckpt = checkpoint.Checkpointer(wd)
  step = ckpt.latest_step()
  restored = ckpt.manager.restore(step)
  ckpt.close()
  return step, {k: np.asarray(v) for k, v in restored["state"]["params"].items()}


def test_random_kills_and_resumes_equal_a_straight_run(data, tmp_path):
  rng = random.Random(20261127)
  chaos = ("--config.train.steps=16", "--config.checkpoint.max_to_keep=3")
  straight = tmp_path / "straight"
  assert _cli(*_args(data, straight, *chaos)).returncode == 0
  wd = tmp_path / "chaos"
  # One kill inside an asynchronous save, then KILLS at random steps; each run
  # resumes the previous one's last checkpoint.
  points = [f"save:{rng.choice([2, 4, 6])}"]
  points += [f"log:{n}" for n in sorted(rng.sample(range(7, 16), KILLS))]
  for point in points:
    out = subprocess.run([sys.executable, "-c", _KILLING_CLI, *_args(data, wd, *chaos)],
                         cwd=REPO, env=dict(_env(), KILL_AT=point), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == -signal.SIGKILL, (point, out.stderr[-2000:])
  final = _cli(*_args(data, wd, *chaos))
  assert final.returncode == 0, final.stderr[-3000:]
  assert _train_records(wd) == _train_records(straight)
  (step_a, a), (step_b, b) = _params(straight), _params(wd)
  assert step_a == step_b == 16 and a.keys() == b.keys()
  for k in a:
    np.testing.assert_allclose(b[k], a[k], atol=1e-6, err_msg=k)
  results = [json.loads((d / "results.json").read_text()) for d in (straight, wd)]
  for key in ("zero_shot", "optical", "data"):
    assert results[0][key] == results[1][key], key
