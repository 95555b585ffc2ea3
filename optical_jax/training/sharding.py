"""Device meshes, logical-axis rules, and placement of parameters and batches.

The mesh has two axes, `data` and `model` (`parallel.mesh = {'data': -1,
'model': 1}`: -1 takes the devices left over). Encoder parameters carry logical
axis names (`vocab`, `embed`, `heads`, `kv`, `mlp`, see `models/encoder.py`);
`parallel.rules` maps them onto mesh axes:

  replicated    every parameter whole on every device (pure data parallel)
  fsdp          `embed` over `data`: each device holds 1/data of every matrix
  tensor        `heads`, `mlp` and `vocab` over `model` (Megatron-style)
  fsdp_tensor   both

or an explicit tuple of (logical, mesh axis) pairs. A dimension that the mesh
axis does not divide stays replicated (logged), so any rule works on any model.
Parameters are put straight into their shards (`jax.device_put` of host arrays
with a `NamedSharding`): no device ever holds a whole sharded matrix. Batches
are split over `data`; across hosts each host builds only its own rows and
`jax.make_array_from_process_local_data` assembles the global batch.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Mapping, Sequence

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

log = logging.getLogger(__name__)

DATA, MODEL = "data", "model"
RULE_PRESETS: dict[str, tuple[tuple[str, str], ...]] = {
    "replicated": (),
    "fsdp": (("embed", DATA),),
    "tensor": (("heads", MODEL), ("mlp", MODEL), ("vocab", MODEL)),
    "fsdp_tensor": (("embed", DATA), ("heads", MODEL), ("mlp", MODEL), ("vocab", MODEL)),
}


def maybe_initialize_distributed(parallel: Mapping[str, Any]) -> None:
  """`jax.distributed.initialize` for multi-host runs (`parallel.distributed` or
  OPTICAL_JAX_DISTRIBUTED=1). Must run before any other JAX call.

  Args:
    parallel: the config's `parallel` block. On Cloud TPU, SLURM and Open MPI the
      cluster names the coordinator and the processes; elsewhere `coordinator`
      (process 0's host:port), `num_processes` and `process_id` say them.
  """
  if not (parallel["distributed"] or os.environ.get("OPTICAL_JAX_DISTRIBUTED") == "1"):
    return
  given = {"coordinator_address": parallel["coordinator"] or None,
           "num_processes": parallel["num_processes"] or None,
           "process_id": parallel["process_id"] if parallel["process_id"] >= 0 else None}
  if given["num_processes"] is not None and given["process_id"] is not None \
      and not 0 <= given["process_id"] < given["num_processes"]:
    raise ValueError(f"config.parallel.process_id={given['process_id']} is not in "
                     f"[0, {given['num_processes']}) (config.parallel.num_processes)")
  jax.distributed.initialize(**{k: v for k, v in given.items() if v is not None})
  log.info("process %d of %d, %d local / %d global devices", jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ('data', 'model') mesh; one size may be -1 (the devices left over)."""
  devices = list(devices) if devices is not None else jax.devices()
  unknown = set(shape) - {DATA, MODEL}
  if unknown:
    raise ValueError(f"parallel.mesh has unknown axes {sorted(unknown)}; use 'data' and 'model'")
  sizes = [int(shape.get(DATA, -1)), int(shape.get(MODEL, 1))]
  if sizes.count(-1) > 1:
    raise ValueError(f"parallel.mesh: at most one axis may be -1, got {dict(shape)}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"parallel.mesh {dict(shape)}: {len(devices)} devices do not divide by "
                       f"{known}")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"parallel.mesh {dict(shape)} needs {math.prod(sizes)} devices, "
                     f"{len(devices)} are available")
  return jax.make_mesh(tuple(sizes), (DATA, MODEL), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)


def configured_mesh(parallel: Any) -> Mesh | None:
  """The mesh of a config's `parallel` block, or None for a plain single-device
  step (`use_mesh='auto'` on one device, or 'no')."""
  use = parallel.use_mesh
  if use == "no" or (use == "auto" and jax.device_count() == 1):
    return None
  return make_mesh(parallel.mesh.to_dict())


def resolve_rules(rules: str | Sequence[Sequence[str]]) -> tuple[tuple[str, str], ...]:
  if isinstance(rules, str):
    if rules not in RULE_PRESETS:
      raise ValueError(f"parallel.rules={rules!r}: expected one of {sorted(RULE_PRESETS)} "
                       "or (logical, mesh axis) pairs")
    return RULE_PRESETS[rules]
  out = tuple((str(a), str(b)) for a, b in rules)
  for _, axis in out:
    if axis not in (DATA, MODEL):
      raise ValueError(f"parallel.rules maps onto unknown mesh axis {axis!r}")
  return out


def spec_for(logical: Sequence[str | None] | None, shape: Sequence[int],
             rules: Sequence[tuple[str, str]], mesh: Mesh, name: str = "") -> P:
  """PartitionSpec of one array from its logical axes.

  A mesh axis is used at most once per array; a dimension it does not divide
  stays replicated.
  """
  if not logical:
    return P()
  table = dict(rules)
  used, spec = set(), []
  for dim, axis in zip(shape, logical):
    target = table.get(axis) if axis else None
    if target is None or target in used or mesh.shape[target] == 1:
      spec.append(None)
      continue
    if dim % mesh.shape[target]:
      log.info("%s: dimension %d (%s) does not divide over %s=%d; replicated", name, dim,
               axis, target, mesh.shape[target])
      spec.append(None)
      continue
    used.add(target)
    spec.append(target)
  return P(*spec)


def param_shardings(templates: Sequence[tuple[str, tuple, Any]], mesh: Mesh,
                    rules: Sequence[tuple[str, str]]) -> dict[str, NamedSharding]:
  """`name -> NamedSharding` for every parameter of a `trainable.ModelParts`."""
  out = {}
  for name, _, var in templates:
    if not hasattr(var, "shape"):
      continue
    logical = var.get_metadata().get("out_sharding")
    out[name] = NamedSharding(mesh, spec_for(logical, var.shape, rules, mesh, name))
  return out


def place(params: Mapping[str, Any], shardings: Mapping[str, NamedSharding]) -> dict[str, jax.Array]:
  """Puts each parameter into its shards (host arrays go straight to the shards)."""
  return {k: jax.device_put(v, shardings[k]) for k, v in params.items()}


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Rows over `data`, replicated over `model`."""
  return NamedSharding(mesh, P(DATA))


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This host's rows -> global arrays split over `data` (multi-host safe)."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}


def per_device(fn, mesh: Mesh, num_outputs: int):
  """`fn` on each device's own rows: every input and output split over `data`.

  Inputs are replicated over `model` (each model-axis device of a data group
  runs the same rows), so `fn` needs no collective: the OT solve of a pair
  never needs another pair.
  """
  spec = P(DATA)
  # check_vma=False: ott-jax's Sinkhorn has lax.cond branches whose outputs
  # differ in "varying over data" type, which the checker rejects although
  # every value here is per-device by construction.
  return jax.shard_map(fn, mesh=mesh, in_specs=spec, check_vma=False,
                       out_specs=(spec,) * num_outputs if num_outputs > 1 else spec)
