"""Exact top-k search throughput: optical_jax.retrieval.topk vs numpy vs FAISS flat.

Default problem: top-100 of 1,000 queries over a 100,000 x 384 float32 corpus
(random normal rows, unit-normalised, fixed seed), inner product. Reports
queries/second (median of 2 blocks of --repeats calls after a warm-up) of our
default settings and of each precision mode ('float32': XLA's float32 matmul;
'bf16_certified': bf16 matmul, float32 re-scoring, proof of exactness), our
compile time separately, how many queries the certificate sent back to
float32, the ratios ours/numpy and ours/faiss, and recall@k of each method's
top-k set against numpy's (exact modes must give 1.0000). Compile time is
JAX's during each method's warm-up call: a mode whose steps an earlier row
compiled (the default is one of the modes) shows ~0.

  python benchmarks/search.py                      # one configuration
  python benchmarks/search.py --anisotropy 2       # e5-like: cosines ~0.8
  python benchmarks/search.py --sweep              # chunk / query-batch grid

Our corpus is placed on the device once, outside the timed region (as a loaded
index would be); queries are passed as numpy arrays, and results come back as
numpy arrays, so the timed region includes the transfers (and, for
bf16_certified, the per-call bf16 cast of the corpus). FAISS runs with
OMP_WAIT_POLICY=PASSIVE (--omp_wait_policy): with OpenMP's default spinning it
was up to 3x slower on 2 shared cores, which would flatter us.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import os
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from optical_jax.search import certified
from optical_jax.search import topk as topk_lib

import devices  # benchmarks/devices.py, beside this script


def _problem(num_queries: int, num_docs: int, dim: int, seed: int,
             anisotropy: float) -> tuple[np.ndarray, np.ndarray]:
  """Unit rows; `anisotropy` a adds a * (a shared unit direction) before
  normalising (a=2: cosines ~0.80 +- 0.015, like e5's; the bf16 bound is
  relatively looser there)."""
  rng = np.random.default_rng(seed)
  shared = rng.standard_normal(dim).astype(np.float32)
  shared *= anisotropy / np.linalg.norm(shared)
  x = rng.standard_normal((num_docs, dim), dtype=np.float32) / np.sqrt(dim) + shared
  q = rng.standard_normal((num_queries, dim), dtype=np.float32) / np.sqrt(dim) + shared
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  q /= np.linalg.norm(q, axis=1, keepdims=True)
  return q, x


_COMPILE_SECONDS = [0.0]


def _count_compile(event: str, duration: float, **_: Any) -> None:
  # Tracing, lowering and XLA compilation all report under this prefix.
  if event.startswith("/jax/core/compile/"):
    _COMPILE_SECONDS[0] += duration


class _Fallbacks(logging.Handler):
  """Counts queries `topk` re-searched in float32 (its debug log says how many)."""

  def __init__(self):
    super().__init__(logging.DEBUG)
    self.count = 0

  def emit(self, record: logging.LogRecord) -> None:
    if "not certified" in record.msg:
      self.count += record.args[0]


def _time(fns: dict[Any, Callable[[], Any]], repeats: int, rounds: int = 2
          ) -> tuple[dict[Any, float], dict[Any, float], dict[Any, Any], dict[Any, int]]:
  """Times each fn in blocks of `repeats` back-to-back calls, `rounds` times over.

  Blocks, not one call of each in turn: a library's worker threads (OpenBLAS,
  OpenMP, Eigen) may still spin right after its call and slow whatever runs
  next; a pause before each block lets them park. Repeating the rounds
  spreads the load other jobs put on a shared machine over all methods.

  Returns:
    (JAX compile seconds during the warm-up call, median seconds per call,
    last results, queries re-searched in float32 in the warm-up call), each by
    name.
  """
  counter = _Fallbacks()
  logger = logging.getLogger(certified.__name__)   # where the fallback count is logged
  logger.addHandler(counter)
  logger.setLevel(logging.DEBUG)
  compile_s, times, out, fallbacks = {}, {name: [] for name in fns}, {}, {}
  for name, fn in fns.items():
    before, counter.count = _COMPILE_SECONDS[0], 0
    out[name] = fn()
    compile_s[name], fallbacks[name] = _COMPILE_SECONDS[0] - before, counter.count
  logger.removeHandler(counter)
  for _ in range(rounds):
    for name, fn in fns.items():
      time.sleep(0.5)
      for _ in range(repeats):
        t = time.perf_counter()
        out[name] = fn()
        times[name].append(time.perf_counter() - t)
  return (compile_s, {name: statistics.median(ts) for name, ts in times.items()}, out,
          fallbacks)


def numpy_topk(q: np.ndarray, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Matmul, argpartition for the k best, then sort just those k."""
  s = q @ x.T
  part = np.argpartition(-s, k - 1, axis=1)[:, :k]
  ps = np.take_along_axis(s, part, axis=1)
  order = np.argsort(-ps, axis=1, kind="stable")
  return np.take_along_axis(ps, order, axis=1), np.take_along_axis(part, order, axis=1)


def _recall(got: np.ndarray, ref: np.ndarray) -> float:
  k = ref.shape[1]
  return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, ref)]))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--num_queries", type=int, default=1000)
  p.add_argument("--num_docs", type=int, default=100_000)
  p.add_argument("--dim", type=int, default=384)
  p.add_argument("--k", type=int, default=100)
  p.add_argument("--anisotropy", type=float, default=0.0,
                 help="shared direction added to all rows before normalising (2: e5-like)")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--chunk_size", type=int, default=131_072)
  p.add_argument("--query_batch_size", type=int, default=512)
  p.add_argument("--margin", type=int, default=None, help="bf16_certified candidates beyond k")
  p.add_argument("--host_corpus", action="store_true",
                 help="pass our corpus as a numpy array (copied in per chunk)")
  p.add_argument("--omp_wait_policy", default="PASSIVE",
                 help="OMP_WAIT_POLICY for FAISS's OpenMP threads ('' keeps the environment's)")
  p.add_argument("--sweep", action="store_true",
                 help="also time a grid of chunk sizes, query batch sizes and precisions")
  args = p.parse_args()
  if args.omp_wait_policy:
    # Read when faiss (libgomp) loads, so set before the first `import faiss`.
    # With the default (active) policy, FAISS's spinning OpenMP threads fight
    # its OpenBLAS threads and other jobs for 2 shared cores: back-to-back
    # searches ran 3x slower than with PASSIVE here.
    os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy
  jax.monitoring.register_event_duration_secs_listener(_count_compile)

  q, x = _problem(args.num_queries, args.num_docs, args.dim, args.seed, args.anisotropy)
  k = args.k
  print(f"jax {jax.__version__} on {devices.device()}, "
        f"load {os.getloadavg()[0]:.1f}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; "
        f"top-{k} of {len(q)} queries over {x.shape[0]} x {x.shape[1]} float32 "
        f"(anisotropy {args.anisotropy}); median of 2 x {args.repeats}")
  corpus = x if args.host_corpus else jax.block_until_ready(jnp.asarray(x))
  q_dev = jnp.asarray(q)

  def ours(chunk_size: int, query_batch_size: int, precision: str | None) -> Callable[[], Any]:
    return lambda: topk_lib.topk(q, corpus, k, chunk_size=chunk_size,
                                  query_batch_size=query_batch_size, precision=precision,
                                  margin=args.margin)

  # The matmuls alone, as XLA:CPU runs them: floors for any jitted search.
  f32_mm = jax.jit(lambda a, b: a @ b.T)
  bf16_mm = jax.jit(lambda a, b: jnp.einsum("qd,nd->qn", a.astype(jnp.bfloat16),
                                            b.astype(jnp.bfloat16),
                                            preferred_element_type=jnp.float32))
  x_dev = jnp.asarray(corpus)
  cfg = (args.chunk_size, args.query_batch_size)
  fns = {"ours": ours(*cfg, None), "float32": ours(*cfg, "float32"),
         "bf16_certified": ours(*cfg, "bf16_certified"), "numpy": lambda: numpy_topk(q, x, k),
         "f32 matmul": lambda: (None, jax.block_until_ready(f32_mm(q_dev, x_dev))),
         "bf16 matmul": lambda: (None, jax.block_until_ready(bf16_mm(q_dev, x_dev)))}
  labels = {"ours": f"ours, defaults (chunk {cfg[0]}, qbatch {cfg[1]})",
            "float32": "ours, precision='float32'",
            "bf16_certified": f"ours, precision='bf16_certified' (margin {args.margin})",
            "numpy": "numpy (matmul + argpartition + sort)", "faiss": "faiss IndexFlatIP",
            "f32 matmul": "  (ref: jax f32 matmul alone, no top-k)",
            "bf16 matmul": "  (ref: jax bf16 matmul alone, incl. casts)"}
  try:
    faiss_index = topk_lib.FaissIndex(x)
    fns["faiss"] = lambda: faiss_index.search(q, k)
  except ImportError as e:
    print(f"skipping faiss: {e}")
  compile_s, med, out, fallbacks = _time(fns, args.repeats)
  ref = out["numpy"][1]
  print(f"\n{'method':<52} {'q/s':>7} {'seconds':>8} {'compile s':>9} {'to f32':>6} "
        f"{'recall@k':>8} {'/numpy':>6} {'/faiss':>6}")
  for name in ("ours", "float32", "bf16_certified", "numpy", "faiss", "f32 matmul",
               "bf16 matmul"):
    if name not in fns:
      continue
    jax_search = name in ("ours", "float32", "bf16_certified")
    comp = f"{compile_s[name]:9.2f}" if jax_search else f"{'-':>9}"
    back = f"{fallbacks[name]:6d}" if jax_search else f"{'-':>6}"
    rec = f"{_recall(out[name][1], ref):8.4f}" if "matmul" not in name else f"{'-':>8}"
    vs_faiss = f"{med['faiss'] / med[name]:5.2f}x" if "faiss" in med else f"{'-':>6}"
    print(f"{labels[name]:<52} {len(q) / med[name]:7.0f} {med[name]:8.3f} {comp} {back} {rec} "
          f"{med['numpy'] / med[name]:5.2f}x {vs_faiss}")
  if "faiss" in fns:
    print(f"\nrecall@{k} ours (defaults) vs faiss: {_recall(out['ours'][1], out['faiss'][1]):.4f}")

  if args.sweep:
    grid = list(itertools.product((32_768, 131_072), (256, 512, 1024),
                                  ("float32", "bf16_certified")))
    sweep = {c: ours(*c) for c in grid}
    if "faiss" in fns:
      sweep["faiss"] = fns["faiss"]
    compile_s, med, out, fallbacks = _time(sweep, max(2, args.repeats // 2), rounds=1)
    print(f"\n{'chunk':>7} {'qbatch':>7} {'precision':>15} {'q/s':>7} {'vs faiss':>8} "
          f"{'compile s':>9} {'to f32':>6} {'recall':>7}")
    for c in grid:
      vs = f"{med['faiss'] / med[c]:8.2f}" if "faiss" in med else f"{'-':>8}"
      print(f"{c[0]:7d} {c[1]:7d} {c[2]:>15} {len(q) / med[c]:7.0f} {vs} "
            f"{compile_s[c]:9.2f} {fallbacks[c]:6d} {_recall(out[c][1], ref):7.4f}")


if __name__ == "__main__":
  main()
