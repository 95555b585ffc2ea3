"""A softmax classifier on fixed sentence vectors: the intent probe.

The intent research question trains this head on the frozen teacher's English
utterance vectors and swaps students in underneath it (`jobs/intent.py`);
only the encoder changes, so accuracy differences are what distillation did to
the space. Linear (or one ReLU hidden layer), AdamW with cosine decay,
deterministic in the seed.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

log = logging.getLogger(__name__)

SCALINGS = ("global", "feature", "none")
UNKNOWN = -1  # the label of an intent outside the vocabulary


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeadConfig:
  """How the classifier is trained (the `intent` block's fields of the same names).

  Every field is required: the defaults live in one place, the `intent` block
  of `config.default()` (`config.intent_head_config` builds this from it).

  Attributes:
    hidden: units of one ReLU hidden layer; 0 = a linear softmax classifier.
    lr: peak AdamW learning rate (cosine decay to 0 over the run).
    epochs: passes over the training set.
    batch_size: utterances per step.
    weight_decay: AdamW's decoupled weight decay, on the weight matrices only.
    scaling: what the features go through before the head, with statistics of
      the training vectors: 'global' centres them and divides by one number, so
      that a feature's variance is 1 on average (e5-style vectors sit in a
      narrow cone, with per-feature spreads of ~0.03 that a unit-scale
      optimiser crawls through); 'feature' standardises each feature on its
      own, which also amplifies the directions in which the training language
      barely varies, where another language's vectors may well differ; 'none'.
  """
  hidden: int
  lr: float
  epochs: int
  batch_size: int
  weight_decay: float
  scaling: str

  def __post_init__(self):
    if self.scaling not in SCALINGS:
      raise ValueError(f"scaling={self.scaling!r}: expected one of {SCALINGS}")
    for name, ok, need in (("hidden", self.hidden >= 0, ">= 0"), ("lr", self.lr > 0, "> 0"),
                           ("epochs", self.epochs >= 1, ">= 1"),
                           ("batch_size", self.batch_size >= 1, ">= 1"),
                           ("weight_decay", self.weight_decay >= 0, ">= 0")):
      if not ok:
        raise ValueError(f"{name}={getattr(self, name)!r}: must be {need}")


# The params are a plain pytree:
#   {'mean': [D], 'inv_std': [D], 'layers': [{'w': [D_in, D_out], 'b': [D_out]}, ...]}
# with one layer (linear) or two (hidden); mean / inv_std are fixed, not trained.
Params = dict[str, Any]


def _forward(layers: Sequence[Mapping[str, jax.Array]], x: jax.Array) -> jax.Array:
  for layer in layers[:-1]:
    x = jax.nn.relu(x @ layer["w"] + layer["b"])
  return x @ layers[-1]["w"] + layers[-1]["b"]


def logits(params: Params, features: jax.Array) -> jax.Array:
  """[N, D] sentence vectors -> [N, C] class logits (float32)."""
  x = (jnp.asarray(features, jnp.float32) - params["mean"]) * params["inv_std"]
  return _forward(params["layers"], x)


def _weighted_ce(layers, x: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
  ce = optax.softmax_cross_entropy_with_integer_labels(_forward(layers, x), labels)
  return jnp.sum(ce * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def cross_entropy(params: Params, features: jax.Array, labels: jax.Array,
                  weights: jax.Array | None = None) -> jax.Array:
  """Mean (or `weights`-weighted mean) softmax cross-entropy, a scalar.

  Args:
    params: the classifier.
    features: [N, D] sentence vectors.
    labels: [N] int label ids in [0, C).
    weights: [N] per-example weights (0 leaves an example out); default all 1.
  """
  x = (jnp.asarray(features, jnp.float32) - params["mean"]) * params["inv_std"]
  labels = jnp.asarray(labels, jnp.int32)
  w = jnp.ones(labels.shape, jnp.float32) if weights is None else jnp.asarray(weights,
                                                                              jnp.float32)
  return _weighted_ce(params["layers"], x, labels, w)


def train_step(tx: optax.GradientTransformation, layers, opt_state, x: jax.Array,
               labels: jax.Array, weights: jax.Array):
  """One AdamW step on a (standardised) batch; pure: (layers, opt_state, loss).

  Args:
    x: [B, D] standardised features; labels: [B] ids; weights: [B], 0 on the
      padding rows of the last batch (one batch shape, one compilation).
  """
  loss, grads = jax.value_and_grad(_weighted_ce)(layers, x, labels, weights)
  updates, opt_state = tx.update(grads, opt_state, layers)
  return optax.apply_updates(layers, updates), opt_state, loss


_jit_train_step = jax.jit(train_step, static_argnums=0)


@functools.lru_cache(maxsize=8)
def _optimizer(cfg: HeadConfig, steps: int) -> optax.GradientTransformation:
  # Cached: the jitted step is compiled per optimizer object, and the same
  # settings (a rerun, the seeds of a grid) should reuse that compilation.
  return optax.adamw(optax.cosine_decay_schedule(cfg.lr, steps), weight_decay=cfg.weight_decay,
                     mask=lambda p: [{"w": True, "b": False} for _ in p])


def _init_layers(key: jax.Array, dim: int, num_classes: int, hidden: int) -> list[dict]:
  sizes = [dim] + ([hidden] if hidden else []) + [num_classes]
  keys = jax.random.split(key, len(sizes) - 1)
  layers = []
  for i, (k, d_in, d_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
    last = i == len(sizes) - 2
    # The output layer starts at zero (uniform predictions, no init noise in the
    # linear probe); a hidden layer needs random weights to break symmetry.
    w = (jnp.zeros((d_in, d_out), jnp.float32) if last
         else jax.random.normal(k, (d_in, d_out), jnp.float32) / np.sqrt(d_in))
    layers.append({"w": w, "b": jnp.zeros((d_out,), jnp.float32)})
  return layers


def train_classifier(features: np.ndarray, labels: np.ndarray, cfg: HeadConfig, seed: int,
                     *, num_classes: int | None = None) -> Params:
  """Trains the softmax head with AdamW and cross-entropy; deterministic in `seed`.

  Args:
    features: [N, D] sentence vectors.
    labels: [N] label ids in [0, C) (no `UNKNOWN`).
    cfg: the training settings.
    seed: the initialisation and the order of the minibatches (a fresh
      permutation each epoch).
    num_classes: C; default `labels.max() + 1`.

  Returns:
    The params (numpy arrays), for `logits` / `predict`.
  """
  x = np.asarray(features, np.float32)
  y = np.asarray(labels, np.int32)
  if x.ndim != 2 or y.shape != (len(x),) or not len(x):
    raise ValueError(f"need features [N, D] and labels [N], got {x.shape} and {y.shape}")
  num_classes = int(num_classes or y.max() + 1)
  if y.min() < 0 or y.max() >= num_classes:
    raise ValueError(f"labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")
  mean, inv_std = np.zeros(x.shape[1], np.float32), np.ones(x.shape[1], np.float32)
  if cfg.scaling != "none":
    # The epsilon keeps a feature that never varies (or a single example) finite.
    mean, var = x.mean(0), x.var(0)
    spread = var if cfg.scaling == "feature" else np.full_like(var, var.mean())
    inv_std = 1.0 / np.sqrt(spread + 1e-6)
  xs = jnp.asarray((x - mean) * inv_std)

  rows = min(cfg.batch_size, len(x))
  per_epoch = -(-len(x) // rows)
  steps = cfg.epochs * per_epoch
  tx = _optimizer(cfg, steps)
  layers = _init_layers(jax.random.key(seed), x.shape[1], num_classes, cfg.hidden)
  opt_state = tx.init(layers)
  rng = np.random.default_rng(seed)
  loss = jnp.nan
  for _ in range(cfg.epochs):
    order = rng.permutation(len(x))
    pad = per_epoch * rows - len(x)
    order = np.concatenate([order, order[:pad]])
    weights = np.ones(len(order), np.float32)
    weights[len(x):] = 0.0
    for b in range(per_epoch):
      idx = order[b * rows:(b + 1) * rows]
      layers, opt_state, loss = _jit_train_step(tx, layers, opt_state, xs[idx], y[idx],
                                                weights[b * rows:(b + 1) * rows])
  log.info("intent head: %d steps, last batch loss %.4f", steps, float(loss))
  return {"mean": np.asarray(mean, np.float32), "inv_std": np.asarray(inv_std, np.float32),
          "layers": jax.tree.map(np.asarray, layers)}


def predict(params: Params, features: np.ndarray) -> np.ndarray:
  """[N, D] sentence vectors -> [N] int32 predicted label ids."""
  return np.asarray(jnp.argmax(logits(params, features), axis=-1), np.int32)


def accuracy(predicted: np.ndarray, labels: np.ndarray, *, exclude_unknown: bool = False
             ) -> float:
  """Fraction of `predicted` [N] equal to `labels` [N].

  An `UNKNOWN` label never matches, so it counts as an error unless
  `exclude_unknown` leaves it out. Raises ValueError when nothing is left.
  """
  predicted, labels = np.asarray(predicted), np.asarray(labels)
  if predicted.shape != labels.shape:
    raise ValueError(f"predicted {predicted.shape} and labels {labels.shape} differ")
  keep = labels != UNKNOWN if exclude_unknown else np.ones(labels.shape, bool)
  if not keep.any():
    raise ValueError("no utterances to score" + (" with an intent in the vocabulary"
                                                  if exclude_unknown else ""))
  return float(np.mean(predicted[keep] == labels[keep]))
