"""A model as a static graph plus flat, named parameter dicts, and which of them train.

Flat string-keyed dicts ("encoder/layers/3/mlp_in/kernel" -> array) are what
optax, Orbax and the sharding rules all handle without ceremony; `ModelParts`
turns them back into a model inside jit. `train.trainable` picks the
parameters that train; the rest stay the teacher's values and are not
checkpointed.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

from flax import nnx
import jax

from optical_jax import config as config_lib

Params = dict[str, jax.Array]     # "encoder/layers/3/mlp_in/kernel" -> array


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


def split_model(model: nnx.Module, spec: str, num_layers: int
                ) -> tuple[ModelParts, Params, Params, Params]:
  """(graph, all parameters, trainable, frozen) of `model` under the
  `train.trainable` spec.

  Raises:
    ConfigError: a spec that is malformed or selects no parameter, naming the key.
  """
  parts, params = ModelParts.split(model)
  try:
    trainable, frozen = split_trainable(params, spec, num_layers)
  except ValueError as e:
    raise config_lib.ConfigError(f"config.{e}") from None
  return parts, params, trainable, frozen
