"""benchmarks/step_parts.py: the step with one part at a time replaced by a stand-in."""
import importlib.util
import json
import statistics
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from optical_jax.core import losses as losses_lib
from optical_jax.models import activations
from optical_jax.models import attention as attention_lib
from optical_jax.models import encoder as encoder_lib
from optical_jax.models import weights

from tests import repo
from tests import tiny_checkpoints
from tests.benchmarks import test_benchmarks


@pytest.fixture
def step_parts(monkeypatch):
  monkeypatch.syspath_prepend(str(repo.ROOT / "benchmarks"))   # its sibling modules
  spec = importlib.util.spec_from_file_location(
      "step_parts", repo.ROOT / "benchmarks" / "step_parts.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_a_share_is_the_time_the_part_took_of_the_full_step(step_parts):
  # Round 1: 2.0 s full, 1.5 s without the part: a quarter. Round 2: the stand-in
  # ran slower (4.4 against 4.0 s): a negative share, shown as it is.
  assert step_parts.shares([2.0, 4.0], [1.5, 4.4]) == pytest.approx([0.25, -0.1])
  with pytest.raises(ValueError, match="2 rounds of the full step against 1"):
    step_parts.shares([2.0, 4.0], [1.5])


def test_every_stand_in_is_undone_when_its_step_is_built_even_on_error(step_parts):
  # The full step and each copy are built one after another in one process: a
  # stand-in left in place would leak into the next copy.
  ecfg = encoder_lib.EncoderConfig(vocab_size=10, hidden_size=8, num_layers=1, num_heads=2,
                                   intermediate_size=16, max_positions=16)
  before = (attention_lib.attend, dict(activations.ACTIVATIONS), nnx.LayerNorm.__call__,
            losses_lib.distillation_loss)
  for part, (_, stand_in) in step_parts.PARTS.items():
    with pytest.raises(RuntimeError):
      with stand_in(ecfg):
        if part == "attention":
          assert attention_lib.attend is step_parts.attention_stand_in
        if part == "gelu":
          assert activations.ACTIVATIONS["gelu"](3.0) == 3.0
        raise RuntimeError
    assert (attention_lib.attend, dict(activations.ACTIVATIONS), nnx.LayerNorm.__call__,
            losses_lib.distillation_loss) == before, part


def _projection_grads(directory, stand_in):
  """|gradient| of the first block's query and key kernels, with `stand_in` in
  attention's place while the model is built and differentiated."""
  with mock.patch.object(attention_lib, "attend", stand_in):
    model = weights.load_pretrained(str(directory), attention="chunked")
    graph, params = nnx.split(model, nnx.Param)
    ids = jnp.asarray(np.arange(24, dtype=np.int32).reshape(2, 12) % 50 + 5)
    mask = jnp.ones_like(ids)

    def loss(p):
      return jnp.sum(nnx.merge(graph, p).encoder(ids, mask) ** 2)

    grads = nnx.to_flat_state(jax.grad(loss)(params))
  found = {}
  for path, var in grads:
    name = "/".join(map(str, path))
    for part in ("query", "key"):
      if f"layers/0/attention/{part}/kernel" in name:
        found[part] = float(jnp.abs(var.get_value()).sum())
  return found


def test_the_attention_stand_in_keeps_the_query_and_key_projections(step_parts, tmp_path):
  # Replaced by the values alone, attention's core takes the query and key
  # projections with it (XLA drops what nothing reads), and their cost would be
  # counted as attention's; the stand-in keeps them and their gradients.
  d = tiny_checkpoints.write_bert(tmp_path / "bert", hidden_size=32, num_attention_heads=2)
  kept = _projection_grads(d, step_parts.attention_stand_in)
  assert set(kept) == {"query", "key"} and min(kept.values()) > 0, kept
  dropped = _projection_grads(d, lambda q, k, v, mask, **_: v)
  assert set(dropped) == {"query", "key"} and max(dropped.values()) == 0, dropped


@pytest.mark.slow
def test_the_benchmark_times_every_part_against_the_full_step(tmp_path):
  tiny = tiny_checkpoints.write_xlmr(tmp_path / "ckpt")
  records = tmp_path / "parts.jsonl"
  out = test_benchmarks._run("step_parts.py", f"--model={tiny}", "--batch=4", "--length=16",
                             "--repeats=1", "--rounds=2", f"--json={records}")
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.splitlines()
  assert lines[0].startswith("device: ") and "2 alternating rounds of 1 steps" in lines[0]
  assert any(l.startswith("nothing (the full step)") for l in lines)
  rows = [json.loads(line) for line in records.read_text().splitlines()]
  assert [r["part"] for r in rows] == ["attention", "gelu", "layernorm", "loss", "adamw"]
  for r in rows:
    label = next(l for l in lines if l.startswith(_LABELS[r["part"]]))
    assert f"{r['share']:.1%}" in label, label
    assert len(r["round_seconds"]) == len(r["round_shares"]) == 2
    assert r["share"] == pytest.approx(statistics.median(r["round_shares"]))
    assert r["round_shares"] == pytest.approx(
        [(f - p) / f for f, p in zip(r["full_round_seconds"], r["round_seconds"])])
  out = test_benchmarks._run("step_parts.py", f"--model={tiny}", "--parts=attention,typo")
  assert out.returncode != 0 and "--parts=attention,typo" in out.stderr


_LABELS = {"attention": "attention's core", "gelu": "the GELU",
           "layernorm": "LayerNorm's statistics", "loss": "the OT solve and losses",
           "adamw": "AdamW -> SGD"}
