"""The benchmark scripts run end to end (on a tiny model here; the figures come from
real runs, see the README), and their report computes ratios ours / peer."""
import json
import os
import statistics
import subprocess
import sys

import pytest

from tests import repo
from tests import tiny_checkpoints

BENCH = repo.ROOT / "benchmarks"


def _run(script, *args):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}   # one device, as users run
  # This checkout's package, whichever one the environment has installed.
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo.ROOT), env.get("PYTHONPATH")]))
  return subprocess.run([sys.executable, str(BENCH / script), *args], cwd=repo.ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  return tiny_checkpoints.write_xlmr(tmp_path_factory.mktemp("tiny") / "ckpt")


@pytest.mark.slow
def test_step_and_encoder_benchmarks_write_records_the_report_pairs(tiny, tmp_path):
  records = tmp_path / "results.jsonl"
  for engine in ("jax", "torch"):   # one engine per process, as benchmarks/gpu.sh runs them
    profile = [f"--profile={tmp_path / 'trace'}"] if engine == "jax" else []
    out = _run("distill_step.py", f"--model={tiny}", "--batch=4", "--length=16", "--repeats=1",
               "--rounds=1", f"--engine={engine}", f"--json={records}", "--peak_tflops=1", *profile)
    assert out.returncode == 0, out.stderr[-3000:]
    if profile:   # where the traced steps spent their time, a table of XLA's ops
      assert "ms/step" in out.stdout and list((tmp_path / "trace").rglob("*.xplane.pb"))
  # Both engines in one process take turns, round by round (benchmarks/timing.py).
  out = _run("encode.py", f"--model={tiny}", "--batch=4", "--length=16", "--repeats=1",
             "--rounds=2", f"--json={records}", "--peak_tflops=1")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "max abs difference of token embeddings" in out.stdout
  assert "(median of 2 alternating rounds: " in out.stdout
  rows = [json.loads(line) for line in records.read_text().splitlines()]
  assert [(r["benchmark"], r["engine"]) for r in rows] == [
      ("distill_step", "jax"), ("distill_step", "torch"), ("encode", "jax"), ("encode", "torch")]
  for r in rows:
    assert r["per_s"] == pytest.approx(r["batch"] / r["seconds"])
    assert len(r["round_seconds"]) == (2 if r["benchmark"] == "encode" else 1)
    assert r["seconds"] == pytest.approx(statistics.median(r["round_seconds"]))
    assert 0 < r["mfu"] and r["peak_source"] == "given"
    assert r["attention"] == "auto" and r["variant"] == ""
  report = subprocess.run([sys.executable, str(BENCH / "report.py"), str(records)],
                          capture_output=True, text=True, check=True).stdout
  step = rows[0]["per_s"] / rows[1]["per_s"]
  assert f"| {step:.2f}x |" in report


@pytest.mark.slow
def test_search_benchmark_names_the_cpu_and_finds_what_numpy_and_faiss_find():
  out = _run("search.py", "--num_queries=16", "--num_docs=3000", "--dim=32", "--k=10",
             "--repeats=1")
  assert out.returncode == 0, out.stderr[-3000:]
  first = out.stdout.splitlines()[0]
  assert " cores, " in first                     # the CPU model, cores and its flags
  lines = out.stdout.splitlines()
  for label in ("ours, defaults", "ours, precision='float32'",
                "ours, precision='bf16_certified'", "faiss"):
    row = next(l for l in lines if l.startswith(label))
    assert row.split()[-3] == "1.0000", row   # recall@k against numpy's exact top-k
  assert "recall@10 ours (defaults) vs faiss: 1.0000" in out.stdout


def test_report_takes_medians_and_leaves_unpaired_problems_without_a_ratio(tmp_path):
  def record(engine, per_s, model="random:e5-small", bench="encode"):
    return {"benchmark": bench, "engine": engine, "name": engine, "device": "GPU X",
            "model": model, "dtype": "bfloat16", "batch": 512, "length": 128,
            "seconds": 512 / per_s, "per_s": per_s, "mfu": per_s / 1e5, "peak_source": "x"}
  lines = [record("jax", 300), record("jax", 100), record("jax", 200), record("torch", 100),
           record("jax", 50, model="random:e5-base"),
           dict(record("jax", 120), variant="Triton GEMMs on"),
           dict(record("jax", 90), variant="attention xla", attention="xla")]
  path = tmp_path / "r.jsonl"
  path.write_text("".join(json.dumps(l) + "\n" for l in lines))
  out = subprocess.run([sys.executable, str(BENCH / "report.py"), str(path)],
                       capture_output=True, text=True, check=True).stdout
  assert "| encode, random:e5-small, 512 x 128, bfloat16 | 200.0 texts/s | 100.0 texts/s" in out
  assert "| 2.00x |" in out                      # the median of 300, 100, 200 over 100
  assert "| encode, random:e5-base, 512 x 128, bfloat16 | 50.0 texts/s | - | - |" in out
  # A variant (non-default flags) is its own row, not a fourth sample of the default.
  assert "| encode, random:e5-small, 512 x 128, bfloat16, Triton GEMMs on | 120.0 texts/s" in out
  # benchmarks/gpu.sh names its attention ablation by the setting the row already shows.
  assert "| encode, random:e5-small, 512 x 128, bfloat16, attention xla | 90.0 texts/s" in out


def test_gpu_script_passes_shellcheck():
  out = repo.shellcheck(BENCH / "gpu.sh")
  assert out.returncode == 0, out.stdout


@pytest.mark.slow
def test_step_benchmark_on_bible_batches_packs_ours_and_pads_both(e5_dir):
  """--text=bible: the demo's padded batch for both engines, ours on its real tokens
  (the demo's model: the tiny test tokenizer splits Bible verses past 64 tokens)."""
  out = _run("distill_step.py", f"--model={e5_dir}", "--text=bible", "--packing=on",
             "--batch=4", "--length=64", "--repeats=1", "--peak_tflops=1")
  assert out.returncode == 0, out.stderr[-3000:]
  head = next(l for l in out.stdout.splitlines() if l.startswith("device:"))
  assert "of Bible pairs (" in head and "ours packed to " in head, head
  assert "ratio optical_jax / PyTorch" in out.stdout
