"""Entropic optimal transport between student and teacher token embeddings.

OPTICAL distils a frozen teacher into a student query encoder by aligning the
student's token embeddings of a low-resource query with the teacher's token
embeddings of its English translation. The alignment is an entropic OT plan
`P` (Sinkhorn, ott-jax) on a cost matrix `C`; the loss is `<P, C>_F`.

Choices, each forced by a property of ott-jax 0.6:

* Padding is expressed by zero marginal weights (ott has no mask argument).
* The cost matrix is computed here (one matmul, safe for zero pad vectors) and
  passed as `geometry.Geometry(cost_matrix=C, epsilon=eps)`: `costs.Cosine`
  gives NaN gradients when pad vectors are zero.
* `epsilon` is absolute. A Geometry built without `epsilon` uses
  `0.05 * std(C)`, and the std of a padded matrix depends on the padding.
* Everything is solved in float32: Sinkhorn keeps its input dtype and a bf16
  solve never reaches a useful marginal error.
* The iteration count is fixed (`min_iterations == max_iterations`), which
  ott runs as a `lax.scan`; a convergence-checked while loop vmapped over the
  batch would run until the slowest problem converges.
* Implicit differentiation of the plan is NaN when weights contain zeros. By
  default the plan is a constant (`stop_gradient`, the OPTICAL gradient only
  needs dC); `differentiate_plan=True` unrolls the iterations instead.

Rows with no real token at all (an all-padding row, e.g. a filler example in
the last batch) get all their mass on position 0, so the solve stays finite;
their pair is flagged invalid and contributes exactly zero loss and gradient.
"""
from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple, Optional

import jax
import jax.numpy as jnp
from ott.geometry import geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn

CostKind = Literal["cosine", "sqeuclidean"]
MarginalKind = Literal["uniform", "no_special", "idf"]

_COSTS = ("cosine", "sqeuclidean")
_MARGINALS = ("uniform", "no_special", "idf")


@dataclasses.dataclass(frozen=True, kw_only=True)
class OTConfig:
  """Options of the OT alignment (hashable: usable as a static jit argument).

  Every field is required: the defaults live in one place, the `ot` block of
  `config.default()` (`config.ot_config` builds this from it).

  Attributes:
    cost: 'cosine' (1 - cos, in [0, 2]) or 'sqeuclidean' (||s - t||^2 on the
      raw vectors; its scale follows the embedding norms, so `epsilon` must be
      scaled with it).
    epsilon: absolute entropic regularisation, in units of the cost. 0.05 on
      cosine costs gives a sharp but smooth plan.
    num_iterations: Sinkhorn iterations, fixed (no early stopping).
    lse_mode: log-domain updates. Kernel mode (False) is faster but underflows
      when cost / epsilon exceeds ~85 (float32 `exp`), i.e. small epsilon.
    marginals: 'uniform' over real tokens, 'no_special' (special and prefix
      tokens get no mass) or 'idf' (mass proportional to given idf values).
    differentiate_plan: if True, gradients also flow through the plan
      (unrolled Sinkhorn: memory grows with `num_iterations`; needs
      lse_mode); if False the plan is a constant and only dC/dstudent is used.
    threshold: L1 marginal error under which a solve is reported converged.
      Diagnostic only: it never stops the iterations.
  """
  cost: CostKind
  epsilon: float
  num_iterations: int
  lse_mode: bool
  marginals: MarginalKind
  differentiate_plan: bool
  threshold: float

  def __post_init__(self):
    if self.cost not in _COSTS:
      raise ValueError(f"cost must be one of {_COSTS}, got {self.cost!r}")
    if self.marginals not in _MARGINALS:
      raise ValueError(f"marginals must be one of {_MARGINALS}, got {self.marginals!r}")
    if not self.epsilon > 0:
      raise ValueError(f"epsilon must be > 0, got {self.epsilon}")
    if self.num_iterations < 1:
      raise ValueError(f"num_iterations must be >= 1, got {self.num_iterations}")
    if self.differentiate_plan and not self.lse_mode:
      # Kernel mode turns scalings into potentials with eps * log(u): u = 0 on
      # padding gives an infinite derivative, hence NaN gradients.
      raise ValueError("differentiate_plan=True needs lse_mode=True")


class SinkhornResult(NamedTuple):
  """Batched Sinkhorn outputs (a pytree of arrays).

  Attributes:
    plan: [B, Ls, Lt] float32 transport plans; row/column sums match `a`/`b`.
    reg_cost: [B] entropy-regularised OT cost (ott's `reg_ot_cost`).
    error: [B] L1 error of the column marginal after the last iteration.
    converged: [B] bool, `error < threshold` and no NaN.
  """
  plan: jax.Array
  reg_cost: jax.Array
  error: jax.Array
  converged: jax.Array


def _as_f32(x: jax.Array) -> jax.Array:
  return jnp.asarray(x).astype(jnp.float32)


def cost_matrix(student: jax.Array, teacher: jax.Array,
                kind: CostKind = "cosine") -> jax.Array:
  """Pairwise token costs.

  Args:
    student: [B, Ls, H] student token embeddings (any float dtype).
    teacher: [B, Lt, H] teacher token embeddings.
    kind: 'cosine' -> 1 - cos(s_i, t_j) in [0, 2]; a zero vector has cos 0
      with everything (cost 1) and finite gradients. 'sqeuclidean' ->
      ||s_i - t_j||^2 >= 0.

  Returns:
    [B, Ls, Lt] float32 costs.

  Raises:
    ValueError: unknown `kind`.
  """
  s, t = _as_f32(student), _as_f32(teacher)
  # HIGHEST: TPUs (and TF32 GPUs) would otherwise round the f32 matmul to
  # ~bf16, i.e. cosines wrong by ~1e-3; the matmul is tiny next to the encoder.
  dot = lambda x, y: jnp.einsum("bih,bjh->bij", x, y,
                                precision=jax.lax.Precision.HIGHEST)
  if kind == "cosine":
    # rsqrt(max(|x|^2, tiny)) instead of x / |x|: the sqrt's derivative is
    # infinite at 0 and would turn zero pad vectors into NaN gradients.
    def normalize(x):
      sq = jnp.sum(x * x, axis=-1, keepdims=True)
      return x * jax.lax.rsqrt(jnp.maximum(sq, 1e-12))
    cos = dot(normalize(s), normalize(t))
    return jnp.clip(1.0 - cos, 0.0, 2.0)
  if kind == "sqeuclidean":
    s2 = jnp.sum(s * s, axis=-1)[:, :, None]
    t2 = jnp.sum(t * t, axis=-1)[:, None, :]
    # The expansion can go slightly negative by cancellation.
    return jnp.maximum(s2 + t2 - 2.0 * dot(s, t), 0.0)
  raise ValueError(f"cost must be one of {_COSTS}, got {kind!r}")


def marginals(mask: jax.Array, *, special_mask: Optional[jax.Array] = None,
              idf: Optional[jax.Array] = None,
              kind: MarginalKind = "uniform") -> jax.Array:
  """Token weights of one side of the OT problem.

  Args:
    mask: [B, L] int/bool, nonzero on real tokens (specials included).
    special_mask: [B, L] bool, True on special tokens (CLS/SEP, <s>/</s>) and
      prefix tokens. Required by 'no_special'; with 'idf' it also removes those
      tokens when given; ignored by 'uniform'.
    idf: [B, L] non-negative idf value of each token (negatives are clipped to
      0). Required by 'idf'.
    kind: 'uniform' | 'no_special' | 'idf'.

  Returns:
    [B, L] float32 weights, >= 0, summing to 1 per row, zero on padding.
    Fallbacks, per row: if the chosen support has no mass (only special tokens,
    or all idf zero) -> uniform over the real tokens; if the row has no real
    token -> all mass on position 0 (callers must treat that row as invalid;
    `ot_alignment_loss` does).

  Raises:
    ValueError: unknown `kind`, or the array it needs is missing.
  """
  real = jnp.asarray(mask) > 0
  if kind == "uniform":
    w = real.astype(jnp.float32)
  elif kind == "no_special":
    if special_mask is None:
      raise ValueError("marginals='no_special' needs special_mask")
    w = (real & ~jnp.asarray(special_mask, bool)).astype(jnp.float32)
  elif kind == "idf":
    if idf is None:
      raise ValueError("marginals='idf' needs idf values")
    w = jnp.where(real, jnp.maximum(_as_f32(idf), 0.0), 0.0)
    if special_mask is not None:
      w = jnp.where(jnp.asarray(special_mask, bool), 0.0, w)
  else:
    raise ValueError(f"marginals must be one of {_MARGINALS}, got {kind!r}")
  has_mass = jnp.sum(w, axis=-1, keepdims=True) > 0
  w = jnp.where(has_mass, w, real.astype(jnp.float32))
  # An all-padding row would give Sinkhorn an all -inf potential (NaN cost):
  # put its mass on position 0 instead and let the caller drop the pair.
  first = jnp.zeros_like(w).at[:, 0].set(1.0)
  w = jnp.where(jnp.any(real, axis=-1, keepdims=True), w, first)
  return w / jnp.sum(w, axis=-1, keepdims=True)


def _inner_iterations(n: int) -> int:
  # ott runs `max_iterations // inner_iterations` scan steps: a non-divisor
  # would silently drop iterations. Largest divisor <= 10 (ott's default).
  return max(d for d in range(1, min(n, 10) + 1) if n % d == 0)


def sinkhorn_plans(cost: jax.Array, a: jax.Array, b: jax.Array,
                   config: OTConfig) -> SinkhornResult:
  """Solves a batch of entropic OT problems with a fixed iteration count.

  Args:
    cost: [B, Ls, Lt] cost matrices (cast to float32).
    a: [B, Ls] student weights, each row >= 0 and summing to 1 (zeros = pad).
    b: [B, Lt] teacher weights, same convention. Rows must have some mass:
      an all-zero row gives NaN (use `marginals`, which never returns one).
    config: epsilon (absolute), iterations, lse_mode, differentiate_plan.

  Returns:
    SinkhornResult of [B, ...] arrays. With `differentiate_plan=False` every
    output is gradient-free (the cost is stop_gradient'ed before the solve);
    with True, gradients flow through the unrolled iterations.
  """
  cost, a, b = _as_f32(cost), _as_f32(a), _as_f32(b)
  if not config.differentiate_plan:
    cost = jax.lax.stop_gradient(cost)
  # Marginals are derived from masks: never differentiated.
  a, b = jax.lax.stop_gradient(a), jax.lax.stop_gradient(b)
  n = int(config.num_iterations)
  # implicit_diff=None: unrolled backprop when the plan is differentiated
  # (implicit diff is NaN with zero weights); without differentiation it is the
  # same forward scan.
  solver = sinkhorn.Sinkhorn(
      lse_mode=config.lse_mode, threshold=config.threshold,
      min_iterations=n, max_iterations=n, inner_iterations=_inner_iterations(n),
      implicit_diff=None)

  def solve_one(c, a1, b1):
    # relative_epsilon stays None, so `epsilon` is used as is (absolute).
    geom = geometry.Geometry(cost_matrix=c, epsilon=float(config.epsilon))
    out = solver(linear_problem.LinearProblem(geom, a=a1, b=b1))
    # Materialise inside vmap: the output object holds closures over geom.
    return out.matrix, out.reg_ot_cost, out.errors[-1], out.converged

  plan, reg, err, conv = jax.vmap(solve_one)(cost, a, b)
  return SinkhornResult(plan, reg, err, conv)


def ot_alignment_loss(
    student_tokens: jax.Array, student_mask: jax.Array,
    teacher_tokens: jax.Array, teacher_mask: jax.Array,
    config: OTConfig, *,
    student_special: Optional[jax.Array] = None,
    teacher_special: Optional[jax.Array] = None,
    student_idf: Optional[jax.Array] = None,
    teacher_idf: Optional[jax.Array] = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """OPTICAL loss: mean over valid pairs of <P, C>_F.

  Args:
    student_tokens: [B, Ls, H] student token embeddings (trainable side).
    student_mask: [B, Ls] nonzero on real tokens.
    teacher_tokens: [B, Lt, H] teacher embeddings of the translations (the
      caller stop_gradients the teacher if it is frozen).
    teacher_mask: [B, Lt].
    config: OTConfig (static under jit).
    student_special / teacher_special: [B, L] bool special/prefix tokens, for
      marginals 'no_special' (required) and 'idf' (optional).
    student_idf / teacher_idf: [B, L] idf values, required by 'idf'.

  Returns:
    loss: float32 scalar >= 0 for both costs (0 if no pair is valid).
    aux: 'plan' [B, Ls, Lt] (constant unless differentiate_plan), 'cost'
      [B, Ls, Lt], 'per_pair' [B] (<P, C>, 0 on invalid pairs), 'valid' [B]
      bool (both sides have a real token), 'reg_cost' [B], 'error' [B] final
      marginal error, 'converged' [B], 'a' [B, Ls], 'b' [B, Lt].
    Pad positions are zeroed before the cost, so garbage (even NaN) in pad
    embeddings cannot leak into the loss or the gradients.
  """
  s_real = jnp.asarray(student_mask) > 0
  t_real = jnp.asarray(teacher_mask) > 0
  s = jnp.where(s_real[..., None], _as_f32(student_tokens), 0.0)
  t = jnp.where(t_real[..., None], _as_f32(teacher_tokens), 0.0)
  cost = cost_matrix(s, t, config.cost)
  a = marginals(student_mask, special_mask=student_special, idf=student_idf,
                kind=config.marginals)
  b = marginals(teacher_mask, special_mask=teacher_special, idf=teacher_idf,
                kind=config.marginals)
  res = sinkhorn_plans(cost, a, b, config)
  valid = jnp.any(s_real, axis=-1) & jnp.any(t_real, axis=-1)
  # Gradient reaches the student only through `cost` unless the plan is
  # differentiated (then `res.plan` carries it too).
  per_pair = jnp.where(valid, jnp.sum(res.plan * cost, axis=(1, 2)), 0.0)
  n_valid = jnp.sum(valid.astype(jnp.float32))
  loss = jnp.sum(per_pair) / jnp.maximum(n_valid, 1.0)
  aux = {"plan": res.plan, "cost": cost, "per_pair": per_pair, "valid": valid,
         "reg_cost": res.reg_cost, "error": res.error,
         "converged": res.converged & valid, "a": a, "b": b}
  return loss, aux


def hard_alignment(plan: jax.Array, student_mask: Optional[jax.Array] = None,
                   teacher_mask: Optional[jax.Array] = None
                   ) -> tuple[jax.Array, jax.Array]:
  """Argmax alignment of each student token to a teacher token.

  Args:
    plan: [B, Ls, Lt] transport plans.
    student_mask: optional [B, Ls]; pad student tokens get index -1.
    teacher_mask: optional [B, Lt]; pad teacher tokens are never chosen.

  Returns:
    index: [B, Ls] int32 teacher position of the largest plan entry per row
      (-1 for pad students or rows without any mass).
    confidence: [B, Ls] float32, that entry over the row's mass (the
      conditional probability P(t_j | s_i)), in [0, 1]; 0 where index is -1.
  """
  p = jax.lax.stop_gradient(_as_f32(plan))
  if teacher_mask is not None:
    p = jnp.where((jnp.asarray(teacher_mask) > 0)[:, None, :], p, 0.0)
  row = jnp.sum(p, axis=-1)
  ok = row > 0
  if student_mask is not None:
    ok &= jnp.asarray(student_mask) > 0
  index = jnp.argmax(p, axis=-1).astype(jnp.int32)
  confidence = jnp.max(p, axis=-1) / jnp.where(ok, row, 1.0)
  return jnp.where(ok, index, -1), jnp.where(ok, confidence, 0.0)
