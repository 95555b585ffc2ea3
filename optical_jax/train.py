"""OPTICAL distillation: the training state, the jitted step, and the loop.

The teacher is frozen: its parameters are an argument of the step, never
differentiated, with no optimizer state. The student starts as a copy of the
teacher; `train.trainable` says which of its parameters train (the rest stay
the teacher's values and are not checkpointed). One step:

  teacher(target side, e.g. "passage: " + English) -> tokens, pooled  (no grad)
  student(source side, "query: " + low-resource)    -> tokens, pooled
  loss = losses.distillation_loss(...)   (OT <P, C>, + InfoNCE, + MSE)
  AdamW update of the trainable student parameters

The data order is a function of (seed, step), so a resumed run sees exactly the
batches it would have seen.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import re
import time
from typing import Any, Callable, Sequence

import flax
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from optical_jax import losses as losses_lib
from optical_jax import mlm as mlm_lib
from optical_jax import text
from optical_jax.models import heads as heads_lib

log = logging.getLogger(__name__)

Params = dict[str, jax.Array]     # "encoder/layers/3/mlp_in/kernel" -> array


# ----------------------------------------------------------------------------
# Which parameters train.

def trainable_predicate(spec: str, num_layers: int) -> Callable[[str], bool]:
  """Parses `train.trainable` into a predicate over parameter names.

  Specs: 'all'; 'no_word_embeddings' (all but the word embedding, which is
  ~80% of e5-small and gets no useful gradient from a few thousand pairs);
  'top:K' (the top K blocks and the head); 'regex:PATTERN' (names matching).
  """
  if spec == "all":
    return lambda name: True
  if spec == "no_word_embeddings":
    return lambda name: not name.startswith("encoder/embeddings/word/")
  if spec.startswith("top:"):
    k = int(spec[4:])
    if not 0 < k <= num_layers:
      raise ValueError(f"train.trainable={spec!r}: K must be in 1..{num_layers}")
    pat = re.compile(r"encoder/layers/(\d+)/")

    def top(name: str) -> bool:
      m = pat.match(name)
      return name.startswith("head/") or (m is not None and int(m.group(1)) >= num_layers - k)
    return top
  if spec.startswith("regex:"):
    pat = re.compile(spec[6:])
    return lambda name: pat.search(name) is not None
  raise ValueError(f"train.trainable={spec!r}: expected 'all', 'no_word_embeddings', "
                   "'top:K' or 'regex:PATTERN'")


def split_trainable(params: dict, spec: str, num_layers: int) -> tuple[dict, dict]:
  """(trainable, frozen) parameters by name, as `train.trainable` says.

  Raises:
    ValueError: a spec that selects no parameter.
  """
  pred = trainable_predicate(spec, num_layers)
  trainable = {k: v for k, v in params.items() if pred(k)}
  if not trainable:
    raise ValueError(f"train.trainable={spec!r} selects no parameter")
  return trainable, {k: v for k, v in params.items() if not pred(k)}


@dataclasses.dataclass(frozen=True)
class ModelParts:
  """A model as a static graph plus named parameter dicts.

  Flat string-keyed dicts are what optax, Orbax and the sharding rules all
  handle without ceremony; `merge` turns them back into a model inside jit.
  """
  graphdef: Any
  templates: tuple[tuple[str, tuple, Any], ...]   # (name, path, abstract Variable)

  @classmethod
  def split(cls, model: nnx.Module) -> tuple["ModelParts", Params]:
    graphdef, state = nnx.split(model)
    flat = list(nnx.to_flat_state(state))
    templates = tuple(("/".join(map(str, p)), p, v.replace(jax.ShapeDtypeStruct(v.shape, v.dtype))
                       if hasattr(v, "shape") else v) for p, v in flat)
    params = {"/".join(map(str, p)): v.get_value() for p, v in flat if hasattr(v, "shape")}
    return cls(graphdef, templates), params

  def merge(self, *param_dicts: Params) -> nnx.Module:
    values = {}
    for d in param_dicts:
      values.update(d)
    flat = [(p, v.replace(values[name]) if name in values else v)
            for name, p, v in self.templates]
    return nnx.merge(self.graphdef, nnx.from_flat_state(flat))


# The MLM head's parameters sit in the trainable dict under this prefix.
HEAD_PREFIX = "mlm_head/"


@dataclasses.dataclass(frozen=True)
class Pretraining:
  """The multilingual pretraining terms (MLM / TLM, see `mlm`) as an extra loss.

  Attributes:
    head_parts: the LM head's graph; its parameters are `HEAD_PREFIX + name`
      entries of the trainable dict (trained, checkpointed, sharded with it).
    cfg: weights and masking.
    vocab_size, mask_id, exclude_ids: what masking draws from and avoids.
  """
  head_parts: ModelParts
  cfg: mlm_lib.MLMConfig
  vocab_size: int
  mask_id: int
  exclude_ids: tuple[int, ...]

  @classmethod
  def create(cls, cfg: mlm_lib.MLMConfig, teacher: heads_lib.TextModel, directory,
             tokenizer: text.Tokenizer, seed: int) -> tuple["Pretraining", Params]:
    """(the spec, its head's initial parameters, prefixed): the checkpoint's LM
    head when `directory` has one, else a seeded random head."""
    head = mlm_lib.load_head(directory, teacher.encoder.cfg, seed=seed)
    parts, params = ModelParts.split(head)
    vocab = mlm_lib.VocabIds.from_tokenizer(tokenizer)
    spec = cls(parts, cfg, teacher.encoder.cfg.vocab_size, vocab.mask_id,
               tuple(vocab.special_ids))
    return spec, {HEAD_PREFIX + k: v for k, v in params.items()}

  def loss(self, encoder, params: Params, batch, rng, axis_name: str | None):
    head = self.head_parts.merge({k[len(HEAD_PREFIX):]: v for k, v in params.items()
                                  if k.startswith(HEAD_PREFIX)})
    return mlm_lib.pretraining_loss(encoder, head, batch, rng, self.cfg,
                                    vocab_size=self.vocab_size, mask_id=self.mask_id,
                                    exclude_ids=self.exclude_ids, axis_name=axis_name)


# ----------------------------------------------------------------------------
# State and step.

@flax.struct.dataclass
class TrainState:
  """What a checkpoint holds (besides the JSON record).

  Attributes:
    step: steps done.
    params: trainable student parameters by name.
    opt_state: optax state of `params`.
    rng: PRNG key (reserved for stochastic options; split every step).
  """
  step: jax.Array
  params: Params
  opt_state: Any
  rng: jax.Array


def make_optimizer(cfg) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW with linear warmup then linear or cosine decay, after global-norm clipping.

  Args:
    cfg: the `train` config block (lr, steps, warmup_frac, schedule,
      weight_decay, clip_norm, b1, b2, eps).
  """
  warmup = int(round(cfg.warmup_frac * cfg.steps))
  decay_steps = max(cfg.steps - warmup, 1)
  if cfg.schedule == "cosine":
    decay = optax.cosine_decay_schedule(cfg.lr, decay_steps)
  elif cfg.schedule == "linear":
    decay = optax.linear_schedule(cfg.lr, 0.0, decay_steps)
  elif cfg.schedule == "constant":
    decay = optax.constant_schedule(cfg.lr)
  else:
    raise ValueError(f"train.schedule={cfg.schedule!r}: expected linear, cosine or constant")
  schedule = decay if not warmup else optax.join_schedules(
      [optax.linear_schedule(0.0, cfg.lr, warmup), decay], [warmup])
  tx = optax.chain(
      optax.clip_by_global_norm(cfg.clip_norm) if cfg.clip_norm else optax.identity(),
      optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay))
  return tx, schedule


def encode_pair_side(model: heads_lib.TextModel, ids, mask, layer_index: int):
  """(tokens at `layer_index`, pooled last-layer vectors) for one side of the pairs."""
  states = model.encoder.hidden_states(ids, mask)
  return states[layer_index], model.head.pool(states[-1], mask)


def train_step(state: TrainState, frozen: Params, teacher: Params, batch: dict[str, jax.Array],
               *, student_parts: ModelParts, teacher_parts: ModelParts,
               loss_cfg: losses_lib.LossConfig, tx: optax.GradientTransformation,
               layer_index: int, axis_name: str | None = None,
               ot_fn=None, pretrain: Pretraining | None = None
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One distillation step (pure; jit it with the keyword arguments bound).

  Args:
    state: the trainable student state.
    frozen: the student's non-trainable parameters.
    teacher: the teacher's parameters (never differentiated).
    batch: 'src_ids', 'src_mask', 'src_special' [B, Ls]; 'tgt_ids',
      'tgt_mask', 'tgt_special' [B, Lt]; with `loss_cfg.mse_both_sides` also
      'stu_tgt_ids', 'stu_tgt_mask' [B, Lt] (the English side as the student
      reads it, with the source prefix).
    student_parts, teacher_parts: the models' graphs.
    loss_cfg: the objective.
    tx: the optimizer.
    layer_index: index into `hidden_states` of the OT layer.
    axis_name: under `pmap`, the device axis: the loss is each device's share
      of the global-batch loss, and gradients and metrics are summed over it.
    ot_fn: the per-pair OT function (`sharding.per_device` runs it on each
      device's own pairs under jit with shardings).
    pretrain: MLM / TLM terms added to the loss (the batch then also has the
      `mlm.TLM_KEYS` arrays when TLM is on); masks are drawn from the state's
      rng, so a resumed run masks as the uninterrupted one would.

  Returns:
    (new state, float32 scalar metrics).
  """
  t_model = teacher_parts.merge(teacher)
  t_tok, t_vec = jax.lax.stop_gradient(
      encode_pair_side(t_model, batch["tgt_ids"], batch["tgt_mask"], layer_index))

  def loss_fn(params):
    s_model = student_parts.merge(frozen, params)
    s_tok, s_vec = encode_pair_side(s_model, batch["src_ids"], batch["src_mask"], layer_index)
    s_tgt_vec = (s_model(batch["stu_tgt_ids"], batch["stu_tgt_mask"])
                 if loss_cfg.mse_both_sides else None)
    total, metrics = losses_lib.distillation_loss(loss_cfg, s_tok, s_vec, t_tok, t_vec, batch,
                                                  axis_name=axis_name, ot_fn=ot_fn,
                                                  student_tgt_vecs=s_tgt_vec)
    if pretrain is not None:
      extra, more = pretrain.loss(s_model.encoder, params, batch,
                                  jax.random.split(state.rng)[1], axis_name)
      total, metrics = total + extra, dict(metrics, **more)
    return total, metrics

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  if axis_name:  # shares of the global batch -> the global values, on every device
    loss, metrics, grads = jax.lax.psum((loss, metrics, grads), axis_name)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            rng=jax.random.split(state.rng)[0])
  return new_state, metrics


# ----------------------------------------------------------------------------
# Batches.

def make_batch(tokenizer: text.Tokenizer, src: Sequence[str], tgt: Sequence[str], *,
               src_prefix: str, tgt_prefix: str, max_length: int, batch_size: int,
               pad_to_max: bool = True, student_reads_tgt: bool = False
               ) -> dict[str, np.ndarray]:
  """Token arrays for a batch of pairs (truncations counted by the tokenizer).

  With `pad_to_max` both sides are padded to `max_length` so the jitted step
  compiles once; otherwise to their length bucket. `student_reads_tgt` adds
  'stu_tgt_*': the English side with the student's (source) prefix.
  """
  sides = {}
  todo = [("src", src, src_prefix), ("tgt", tgt, tgt_prefix)]
  if student_reads_tgt:
    todo.append(("stu_tgt", tgt, src_prefix))
  for side, texts, prefix in todo:
    b = tokenizer.encode(texts, prefix=prefix, max_length=max_length, batch_size=batch_size)
    if pad_to_max and b.ids.shape[1] < max_length:
      pad = max_length - b.ids.shape[1]
      b.ids = np.pad(b.ids, ((0, 0), (0, pad)), constant_values=tokenizer.pad_id)
      b.mask = np.pad(b.mask, ((0, 0), (0, pad)))
      b.special = np.pad(b.special, ((0, 0), (0, pad)))
    sides.update({f"{side}_ids": b.ids, f"{side}_mask": b.mask, f"{side}_special": b.special})
  return sides


class Throughput:
  """Pairs per second over the recent steps (excluding the first, compiling one)."""

  def __init__(self):
    self.start, self.pairs = None, 0

  def update(self, pairs: int) -> float:
    now = time.perf_counter()
    if self.start is None:
      self.start = now
      return 0.0
    self.pairs += pairs
    return self.pairs / max(now - self.start, 1e-9)


def jit_train_step(student_parts: ModelParts, teacher_parts: ModelParts,
                   loss_cfg: losses_lib.LossConfig, tx: optax.GradientTransformation,
                   layer_index: int, pretrain: Pretraining | None = None, **jit_kwargs):
  """`train_step` with its static parts bound, jitted (state donated)."""
  step = functools.partial(train_step, student_parts=student_parts, teacher_parts=teacher_parts,
                           loss_cfg=loss_cfg, tx=tx, layer_index=layer_index,
                           pretrain=pretrain)
  return jax.jit(step, donate_argnums=(0,), **jit_kwargs)


class StepRunner:
  """Runs the step on one device, on a mesh (jit with shardings), or under pmap.

  * no mesh: plain `jax.jit`.
  * mode 'shard_map': `jax.jit` with explicit in/out shardings (parameters by
    the logical-axis rules, batch rows over `data`, state donated); the
    encoders are partitioned by the compiler, and the Sinkhorn solve runs
    inside `jax.shard_map` on each device's own pairs.
  * mode 'pmap': the same per-device step under `jax.pmap` over every device
    of the mesh (pure data parallelism; the state is replicated with a leading
    device axis); the loss is normalised by the global batch, gradients are
    summed across devices, so it equals the single-device step.

  Attributes:
    mesh: the mesh, or None.
    mode: 'shard_map' or 'pmap'.
  """

  def __init__(self, student_parts: ModelParts, teacher_parts: ModelParts,
               loss_cfg: losses_lib.LossConfig, tx: optax.GradientTransformation,
               layer_index: int, *, mesh=None, mode: str = "shard_map",
               rules: Sequence[tuple[str, str]] = (), pretrain: Pretraining | None = None):
    from optical_jax import sharding  # pylint: disable=g-import-not-at-top
    self.mesh, self.mode, self._sharding = mesh, mode, sharding
    kw = dict(student_parts=student_parts, teacher_parts=teacher_parts, loss_cfg=loss_cfg,
              tx=tx, layer_index=layer_index, pretrain=pretrain)
    if mode not in ("shard_map", "pmap"):
      raise ValueError(f"parallel.step={mode!r}: expected 'shard_map' or 'pmap'")
    self.shardings = None
    if mesh is not None and mode == "shard_map":
      self.shardings = sharding.param_shardings(teacher_parts.templates, mesh, rules)
      if pretrain is not None:   # the LM head is sharded by its own logical axes
        self.shardings.update({HEAD_PREFIX + k: v for k, v in sharding.param_shardings(
            pretrain.head_parts.templates, mesh, rules).items()})
    self._tx = tx
    self._devices = list(mesh.devices.flat) if mesh is not None else []
    if mesh is None:
      self._step = jit_train_step(student_parts, teacher_parts, loss_cfg, tx, layer_index,
                                  pretrain)
    elif mode == "pmap":
      self._step = jax.pmap(functools.partial(train_step, axis_name="batch", **kw),
                            axis_name="batch", devices=self._devices, donate_argnums=(0,))
    else:
      ot_fn = sharding.per_device(functools.partial(losses_lib.ot_per_pair, loss_cfg.ot),
                                  mesh, 3)
      self._step = jax.jit(functools.partial(train_step, ot_fn=ot_fn, **kw),
                           donate_argnums=(0,))

  @property
  def data_parallelism(self) -> int:
    """How many ways a batch is split (it must divide the batch size)."""
    if self.mesh is None:
      return 1
    return len(self._devices) if self.mode == "pmap" else self.mesh.shape["data"]

  def place_params(self, params: Params) -> Params:
    """Fixed step inputs (teacher, frozen student parts) where the step wants
    them: sharded by the rules, replicated per device under pmap."""
    if self.shardings is not None:
      return self._sharding.place(params, self.shardings)
    if self.mesh is not None:
      return self._replicate(params)
    return {k: jnp.asarray(v) for k, v in params.items()}

  def _replicate(self, tree):
    """One copy per device along a leading axis, as pmap takes its inputs."""
    n = len(self._devices)
    mesh = jax.sharding.Mesh(np.array(self._devices), ("batch",))
    stacked = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    return jax.tree.map(
        lambda x: jax.device_put(np.broadcast_to(np.asarray(x)[None], (n, *np.shape(x))),
                                 stacked), tree)

  def init_state(self, params: Params, seed: int) -> TrainState:
    """A fresh state in host layout (sharded by the rules on a mesh in
    'shard_map' mode): what checkpoints hold, and the restore target."""
    if self.shardings is not None:
      params = self._sharding.place(params, self.shardings)
    params = jax.tree.map(jnp.array, params)    # owned copies: the step donates the state
    return init_state(params, self._tx, seed, shardings=self.shardings)

  def to_device(self, state: TrainState) -> TrainState:
    if self.mode == "pmap" and self.mesh is not None:
      return self._replicate(state)
    return state

  def to_host(self, state: TrainState) -> TrainState:
    """One copy of the state (what checkpoints and evaluation take)."""
    if self.mode == "pmap" and self.mesh is not None:
      return jax.tree.map(lambda x: x[0], state)
    return state

  def batch(self, local: dict[str, np.ndarray]) -> dict[str, Any]:
    if self.mesh is None:
      return local
    if self.mode == "pmap":
      n = len(self._devices)
      if len(local["src_ids"]) % n:
        raise ValueError(f"train.batch_size {len(local['src_ids'])} does not divide over "
                         f"{n} devices")
      return {k: v.reshape(n, -1, *v.shape[1:]) for k, v in local.items()}
    return self._sharding.global_batch(local, self.mesh)

  def __call__(self, state, frozen, teacher, local_batch):
    state, metrics = self._step(state, frozen, teacher, self.batch(local_batch))
    if self.mode == "pmap" and self.mesh is not None:
      metrics = jax.tree.map(lambda x: x[0], metrics)
    return state, metrics


def init_state(params: Params, tx: optax.GradientTransformation, seed: int,
               shardings=None) -> TrainState:
  """Step 0. With `shardings`, the optimizer moments are created in the
  parameters' shards (jit with out_shardings), never whole on one device."""
  def make(p):
    return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p),
                      rng=jax.random.key_data(jax.random.key(seed)))
  if shardings is None:
    return make(params)
  abstract = jax.eval_shape(make, params)
  # Moments mirror the parameter tree, so each leaf named after a parameter
  # takes that parameter's sharding; scalars (counts, step, rng) are replicated.
  mesh = next(iter(shardings.values())).mesh
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  def leaf_sharding(path, _):
    keys = [getattr(k, "key", None) for k in path]
    name = next((k for k in reversed(keys) if isinstance(k, str) and k in shardings), None)
    return shardings[name] if name else replicated
  out = jax.tree_util.tree_map_with_path(leaf_sharding, abstract)
  return jax.jit(make, out_shardings=out)(params)
