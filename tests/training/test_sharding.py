"""Meshes of 8 fake CPU devices give the single-device step, in both step modes."""
import jax
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from optical_jax import config as config_lib
from optical_jax.data import batches as batches_lib
from optical_jax.models import tokenizer as tokenizer_lib
from optical_jax.models import weights
from optical_jax.training import checkpoint
from optical_jax.training import runner as runner_lib
from optical_jax.training import sharding
from optical_jax.training import state as state_lib
from optical_jax.training import step as step_lib
from optical_jax.training import trainable as trainable_lib

from tests import defaults
from tests import tiny_checkpoints

MESHES = [{"data": 8, "model": 1}, {"data": 4, "model": 2}, {"data": 2, "model": 4},
          {"data": 1, "model": 8}]
STEPS = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  assert len(jax.devices()) == 8, "tests/conftest.py sets 8 fake CPU devices"
  d = tiny_checkpoints.write_xlmr(tmp_path_factory.mktemp("xlmr") / "ckpt")
  teacher = weights.load_pretrained(str(d))
  tok = tokenizer_lib.Tokenizer.from_pretrained(d)
  parts, params = trainable_lib.ModelParts.split(teacher)
  pred = trainable_lib.trainable_predicate("no_word_embeddings", teacher.encoder.cfg.num_layers)
  trainable = {k: np.asarray(v) for k, v in params.items() if pred(k)}
  frozen = {k: np.asarray(v) for k, v in params.items() if not pred(k)}
  params = {k: np.asarray(v) for k, v in params.items()}
  tcfg = config_lib.default().train
  # Adam divides by sqrt(v) + eps: with the usual eps 1e-8, a parameter whose
  # gradient is ~0 (attention key biases: softmax ignores them) gets float
  # noise from the reduction order amplified into updates of size lr, so
  # parameters could not be compared at all. eps=1e-3 keeps every update
  # proportional to its gradient; the sharded computation is what is tested.
  tcfg.update(steps=10, lr=1e-3, warmup_frac=0.0, eps=1e-3)
  tx, _ = state_lib.make_optimizer(tcfg)
  loss_cfg = defaults.loss_config(mse_weight=0.5, ot=defaults.ot_config(num_iterations=10))
  from tests.conftest import read_multilingual
  texts = [t for _, t in read_multilingual()]
  batches = [batches_lib.pair_batch(tok, texts[i:i + 8],
                                    texts[i + 1:i + 9] + texts[:max(0, i - 6)],
                                    src_prefix="query: ", tgt_prefix="passage: ", max_length=32,
                                    batch_size=8) for i in range(STEPS + 2)]
  return dict(parts=parts, trainable=trainable, frozen=frozen, teacher=params, tx=tx,
              loss_cfg=loss_cfg, batches=batches)


def _runner(s, layer_index, mesh=None, mode="shard_map", rules="fsdp_tensor"):
  """The distillation step of `s` as the distill job places it."""
  step = step_lib.bind_distill_step(s["parts"], s["parts"], s["loss_cfg"], s["tx"], layer_index,
                                    mesh=mesh, mode=mode)
  return runner_lib.StepRunner(step, [("", s["parts"].templates)], mesh=mesh, mode=mode,
                               rules=sharding.resolve_rules(rules))


def _run(s, mesh=None, mode="shard_map", rules="fsdp_tensor", steps=STEPS, state=None,
         first=0, runner=None):
  runner = runner or _runner(s, -1 % 3, mesh, mode, rules)
  frozen, teacher = runner.place_params(s["frozen"]), runner.place_params(s["teacher"])
  state = runner.to_device(state if state is not None else
                           runner.init_state(s["trainable"], s["tx"], 0))
  losses_seen = []
  for i in range(first, first + steps):
    state, m = runner(state, frozen, teacher, s["batches"][i])
    losses_seen.append(float(m["loss"]))
  return runner, runner.to_host(state), losses_seen


def assert_same_params(got, ref):
  for k in ref.params:
    np.testing.assert_allclose(np.asarray(got.params[k]), np.asarray(ref.params[k]),
                               atol=1e-5, err_msg=k)


@pytest.fixture(scope="module")
def single(setup):
  _, state, seen = _run(setup)
  return state, seen


@pytest.mark.parametrize("mode", ["shard_map", "pmap"])
@pytest.mark.parametrize("shape", MESHES, ids=lambda m: f"{m['data']}x{m['model']}")
def test_mesh_equals_one_device(setup, single, shape, mode):
  ref_state, ref_losses = single
  mesh = sharding.make_mesh(shape)
  _, state, seen = _run(setup, mesh, mode)
  np.testing.assert_allclose(seen, ref_losses, atol=1e-5, rtol=0)
  assert_same_params(state, ref_state)


def test_parameter_shardings_follow_the_rules(setup):
  mesh = sharding.make_mesh({"data": 2, "model": 4})
  runner = _runner(setup, 2, mesh, rules="fsdp_tensor")
  specs = {k: s.spec for k, s in runner.shardings.items()}
  assert specs["encoder/layers/0/attention/query/kernel"] == P("data", "model", None)
  assert specs["encoder/layers/0/attention/out/kernel"] == P("model", None, "data")
  assert specs["encoder/layers/1/mlp_in/kernel"] == P("data", "model")
  assert specs["encoder/layers/1/mlp_out/kernel"] == P("model", "data")
  assert specs["encoder/embeddings/norm/scale"] == P("data")
  assert specs["encoder/embeddings/position/embedding"] == P(None, "data")
  state = runner.init_state(setup["trainable"], setup["tx"], 0)
  kernel = state.params["encoder/layers/1/mlp_in/kernel"]
  assert kernel.sharding.spec == P("data", "model")
  # Each device holds 1/8 of the matrix, never the whole.
  assert {s.data.shape for s in kernel.addressable_shards} == {(16, 16)}
  mu = state.opt_state[1][0].mu["encoder/layers/1/mlp_in/kernel"]
  assert mu.sharding.spec == kernel.sharding.spec, "optimizer moments live in the same shards"
  # Replicated rules: everything whole everywhere.
  rep = _runner(setup, 2, mesh, rules="replicated")
  assert all(s.is_fully_replicated for s in rep.shardings.values())


def test_checkpoint_moves_between_meshes(setup, tmp_path):
  # 2 steps on 8x1, save, restore onto 2x4, 2 more steps == 4 steps on one device.
  _, ref_state, ref_losses = _run(setup, steps=4)
  runner_a, state_a, losses_a = _run(setup, sharding.make_mesh({"data": 8, "model": 1}),
                                     steps=2)
  ckpt = checkpoint.Checkpointer(tmp_path, async_save=False)
  ckpt.save(2, state_a, {"data_position": {"step": 2}}, force=True)
  ckpt.close()
  mesh_b = sharding.make_mesh({"data": 2, "model": 4})
  runner_b = _runner(setup, 2, mesh_b, rules="fsdp_tensor")
  target = runner_b.init_state(setup["trainable"], setup["tx"], 0)
  ckpt = checkpoint.Checkpointer(tmp_path)
  restored, meta = ckpt.restore(target)
  ckpt.close()
  kernel = restored.params["encoder/layers/1/mlp_in/kernel"]
  assert kernel.sharding.mesh.shape == {"data": 2, "model": 4}
  assert meta["data_position"]["step"] == 2 and int(restored.step) == 2
  _, state_b, losses_b = _run(setup, runner=runner_b, state=restored, steps=2, first=2)
  np.testing.assert_allclose(losses_a + losses_b, ref_losses, atol=1e-5, rtol=0)
  assert_same_params(state_b, ref_state)


def test_mesh_errors():
  with pytest.raises(ValueError, match="needs 6 devices"):
    sharding.make_mesh({"data": 3, "model": 2})
  with pytest.raises(ValueError, match="do not divide"):
    sharding.make_mesh({"data": -1, "model": 3})
  with pytest.raises(ValueError, match="unknown axes"):
    sharding.make_mesh({"batch": 8})
  with pytest.raises(ValueError, match="parallel.rules"):
    sharding.resolve_rules("megatron")


def test_distributed_is_off_unless_asked_and_checks_the_process_index(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
  monkeypatch.delenv("OPTICAL_JAX_DISTRIBUTED", raising=False)
  parallel = config_lib.default().parallel
  sharding.maybe_initialize_distributed(parallel)
  assert calls == []
  parallel.update(distributed=True, coordinator="10.0.0.1:1234", num_processes=2,
                  process_id=2)
  with pytest.raises(ValueError, match=r"config\.parallel\.process_id=2 is not in \[0, 2\)"):
    sharding.maybe_initialize_distributed(parallel)
  parallel.process_id = 1
  sharding.maybe_initialize_distributed(parallel)
  assert calls == [{"coordinator_address": "10.0.0.1:1234", "num_processes": 2,
                    "process_id": 1}]
  # On a cluster that names them itself (Cloud TPU, SLURM), nothing is passed.
  calls.clear()
  cluster = config_lib.default().parallel
  cluster.distributed = True
  sharding.maybe_initialize_distributed(cluster)
  assert calls == [{}]
