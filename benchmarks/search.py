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


def _time(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
  """(first-call seconds, median seconds over `repeats` later calls, last result)."""
  t = time.perf_counter()
  out = fn()
  first = time.perf_counter() - t
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t)
  return first, statistics.median(times), out


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
  p.add_argument("--chunk_size", type=int, default=32_768)
  p.add_argument("--query_batch_size", type=int, default=1024)
  p.add_argument("--precision", choices=["default", "highest", "bfloat16"], default="default",
                 help="jax.default_matmul_precision for our matmul ('bfloat16' is inexact)")
  p.add_argument("--host_corpus", action="store_true",
                 help="pass our corpus as a numpy array (streamed per chunk) instead")
  p.add_argument("--sweep", action="store_true",
                 help="also time a grid of chunk sizes and query batch sizes")
  args = p.parse_args()

  q, x = _problem(args.num_queries, args.num_docs, args.dim, args.seed)
  k = args.k
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} cpus; "
        f"top-{k} of {len(q)} queries over {x.shape[0]} x {x.shape[1]} float32, "
        f"median of {args.repeats}")
  corpus = x if args.host_corpus else jax.block_until_ready(jnp.asarray(x))

  def ours(chunk_size: int, query_batch_size: int, precision: str) -> Callable[[], Any]:
    prec = None if precision == "default" else precision

    def run():
      with jax.default_matmul_precision(prec):
        return retrieval.topk(q, corpus, k, chunk_size=chunk_size,
                              query_batch_size=query_batch_size)
    return run

  rows = []  # (name, qps, seconds, compile seconds or None, indices)
  jax.clear_caches()  # Count our compile even if something imported compiled before.
  first, med, (_, ours_i) = _time(ours(args.chunk_size, args.query_batch_size, args.precision),
                                  args.repeats)
  rows.append((f"ours (chunk {args.chunk_size}, qbatch {args.query_batch_size}, "
               f"{args.precision})", med, max(first - med, 0.0), ours_i))
  _, med, (_, np_i) = _time(lambda: numpy_topk(q, x, k), args.repeats)
  rows.append(("numpy (matmul + argpartition)", med, None, np_i))
  try:
    faiss_index = retrieval.FaissIndex(x)
    _, med, (_, faiss_i) = _time(lambda: faiss_index.search(q, k), args.repeats)
    rows.append(("faiss IndexFlatIP", med, None, faiss_i))
  except ImportError as e:
    print(f"skipping faiss: {e}")

  print(f"\n{'method':<48} {'q/s':>9} {'seconds':>8} {'compile s':>9} {'recall@k vs numpy':>18}")
  for name, sec, comp, idx in rows:
    comp_s = f"{comp:9.2f}" if comp is not None else f"{'-':>9}"
    print(f"{name:<48} {len(q) / sec:9.0f} {sec:8.3f} {comp_s} {_recall(idx, np_i):18.4f}")
  by_name = {r[0].split()[0]: r[1] for r in rows}
  print(f"\nours/numpy: {by_name['numpy'] / by_name['ours']:.2f}x", end="")
  if "faiss" in by_name:
    print(f"   ours/faiss: {by_name['faiss'] / by_name['ours']:.2f}x   "
          f"(recall@{k} ours vs faiss: {_recall(ours_i, rows[-1][3]):.4f})")
  print()

  if args.sweep:
    print(f"\n{'chunk':>7} {'qbatch':>7} {'precision':>9} {'q/s':>8} {'compile s':>9} "
          f"{'recall':>7}")
    for chunk, qb, prec in itertools.product((8192, 32_768, 100_000), (256, 1000),
                                             ("default", "highest")):
      first, med, (_, idx) = _time(ours(chunk, qb, prec), max(2, args.repeats // 2))
      print(f"{chunk:7d} {qb:7d} {prec:>9} {len(q) / med:8.0f} {max(first - med, 0):9.2f} "
            f"{_recall(idx, np_i):7.4f}")


if __name__ == "__main__":
  main()
