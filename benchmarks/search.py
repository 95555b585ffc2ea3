"""Exact top-k search throughput: optical_jax.retrieval.topk vs numpy vs FAISS flat.

Default problem: top-100 of 1,000 queries over a 100,000 x 384 float32 corpus
(random normal rows, unit-normalised, fixed seed), inner product. Reports
queries/second (median of --repeats timed runs after a warm-up), our compile
time separately, the ratios ours/numpy and ours/faiss, and recall@k of each
method's top-k set against numpy's.

  python benchmarks/search.py                      # one configuration
  python benchmarks/search.py --sweep              # chunk / query-batch grid

Our corpus is placed on the device once, outside the timed region (as a loaded
index would be); queries are passed as numpy arrays, and results come back as
numpy arrays, so the timed region includes the transfers.
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from optical_jax import retrieval


def _problem(num_queries: int, num_docs: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((num_docs, dim), dtype=np.float32)
  q = rng.standard_normal((num_queries, dim), dtype=np.float32)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  q /= np.linalg.norm(q, axis=1, keepdims=True)
  return q, x


_COMPILE_SECONDS = [0.0]


def _count_compile(event: str, duration: float, **_: Any) -> None:
  # Tracing, lowering and XLA compilation all report under this prefix.
  if event.startswith("/jax/core/compile/"):
    _COMPILE_SECONDS[0] += duration


def _time_interleaved(fns: dict[Any, Callable[[], Any]], repeats: int
                      ) -> tuple[dict[Any, float], dict[Any, float], dict[Any, Any]]:
  """Calls each fn once (warm-up), then `repeats` rounds of all fns in turn.

  Round-robin rather than one method after another: the machine is shared, and
  load that comes and goes then hits every method alike, so the ratios hold
  better than the absolute numbers.

  Returns:
    (JAX compile seconds during the warm-up call, median seconds of the timed
    calls, last results), each by name.
  """
  compile_s, times, out = {}, {name: [] for name in fns}, {}
  for name, fn in fns.items():
    before = _COMPILE_SECONDS[0]
    out[name] = fn()
    compile_s[name] = _COMPILE_SECONDS[0] - before
  for _ in range(repeats):
    for name, fn in fns.items():
      t = time.perf_counter()
      out[name] = fn()
      times[name].append(time.perf_counter() - t)
  return compile_s, {name: statistics.median(ts) for name, ts in times.items()}, out


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
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--chunk_size", type=int, default=131_072)
  p.add_argument("--query_batch_size", type=int, default=512)
  p.add_argument("--precision", choices=["default", "highest"], default="default",
                 help="jax.default_matmul_precision around our search")
  p.add_argument("--host_corpus", action="store_true",
                 help="pass our corpus as a numpy array (copied in per chunk)")
  p.add_argument("--sweep", action="store_true",
                 help="also time a grid of chunk sizes, query batch sizes and precisions")
  args = p.parse_args()
  jax.monitoring.register_event_duration_secs_listener(_count_compile)

  q, x = _problem(args.num_queries, args.num_docs, args.dim, args.seed)
  k = args.k
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} cpus, "
        f"load {os.getloadavg()[0]:.1f}; top-{k} of {len(q)} queries over "
        f"{x.shape[0]} x {x.shape[1]} float32; median of {args.repeats}, round-robin")
  corpus = x if args.host_corpus else jax.block_until_ready(jnp.asarray(x))
  q_dev = jnp.asarray(q)

  def ours(chunk_size: int, query_batch_size: int, precision: str) -> Callable[[], Any]:
    def run():
      with jax.default_matmul_precision(None if precision == "default" else precision):
        return retrieval.topk(q, corpus, k, chunk_size=chunk_size,
                              query_batch_size=query_batch_size)
    return run

  # The f32 matmul alone, as XLA:CPU runs it: a floor for any jitted search.
  matmul = jax.jit(lambda a, b: a @ b.T)
  fns = {"ours": ours(args.chunk_size, args.query_batch_size, args.precision),
         "numpy": lambda: numpy_topk(q, x, k),
         "matmul": lambda: (None, jax.block_until_ready(matmul(q_dev, jnp.asarray(corpus))))}
  labels = {"ours": f"ours (chunk {args.chunk_size}, qbatch {args.query_batch_size}, "
                    f"{args.precision})",
            "numpy": "numpy (matmul + argpartition + sort)", "faiss": "faiss IndexFlatIP",
            "matmul": "  (ref: jax f32 matmul alone, no top-k)"}
  try:
    faiss_index = retrieval.FaissIndex(x)
    fns["faiss"] = lambda: faiss_index.search(q, k)
  except ImportError as e:
    print(f"skipping faiss: {e}")
  compile_s, med, out = _time_interleaved(fns, args.repeats)
  ref = out["numpy"][1]
  print(f"\n{'method':<46} {'q/s':>7} {'seconds':>8} {'compile s':>9} {'recall@k vs numpy':>18}")
  for name in ("ours", "numpy", "faiss", "matmul"):
    if name in fns:
      comp = f"{compile_s[name]:9.2f}" if name == "ours" else f"{'-':>9}"
      rec = f"{_recall(out[name][1], ref):18.4f}" if name != "matmul" else f"{'-':>18}"
      print(f"{labels[name]:<46} {len(q) / med[name]:7.0f} {med[name]:8.3f} {comp} {rec}")
  print(f"\nours/numpy: {med['numpy'] / med['ours']:.2f}x", end="")
  if "faiss" in fns:
    print(f"   ours/faiss: {med['faiss'] / med['ours']:.2f}x   (recall@{k} ours vs faiss: "
          f"{_recall(out['ours'][1], out['faiss'][1]):.4f})", end="")
  print()

  if args.sweep:
    grid = list(itertools.product((16_384, 32_768, 65_536, 131_072), (256, 1024), ("default",)))
    grid.append((131_072, 512, "highest"))
    sweep = {cfg: ours(*cfg) for cfg in grid}
    if "faiss" in fns:
      sweep["faiss"] = fns["faiss"]
    compile_s, med, out = _time_interleaved(sweep, max(2, args.repeats // 2))
    print(f"\n{'chunk':>7} {'qbatch':>7} {'precision':>9} {'q/s':>7} {'vs faiss':>8} "
          f"{'compile s':>9} {'recall':>7}")
    for cfg in grid:
      vs = f"{med['faiss'] / med[cfg]:8.2f}" if "faiss" in med else f"{'-':>8}"
      print(f"{cfg[0]:7d} {cfg[1]:7d} {cfg[2]:>9} {len(q) / med[cfg]:7.0f} {vs} "
            f"{compile_s[cfg]:9.2f} {_recall(out[cfg][1], ref):7.4f}")


if __name__ == "__main__":
  main()
