"""Ratios from the benchmarks' JSONL records: ours against the peer, per problem.

  python benchmarks/report.py results.jsonl

Each problem (benchmark, model, dtype, batch, length) with both an optical_jax
record and a PyTorch one gets a row: both throughputs, the ratio ours / peer
(above 1: we are faster), and both MFUs. When a problem ran more than once, the
median of its records is used.
"""
import collections
import json
import statistics
import sys


def rows(records):
  """[(problem, {engine: (per_s, mfu)})] in the order problems first appear."""
  by = collections.OrderedDict()
  for r in records:
    key = (r["benchmark"], r["model"], r["dtype"], r["batch"], r["length"],
           r.get("attention", "auto"), r.get("variant", ""))
    by.setdefault(key, collections.defaultdict(list))[r["engine"]].append(r)
  out = []
  for key, engines in by.items():
    out.append((key, {e: (statistics.median(x["per_s"] for x in rs),
                          statistics.median(x["mfu"] for x in rs), rs[0]["name"])
                      for e, rs in engines.items()}))
  return out


def table(records) -> str:
  device = records[0]["device"] if records else "?"
  lines = [f"device: {device}", "",
           "| work | optical_jax | peer | ratio | MFU ours / peer |", "|---|---|---|---|---|"]
  for (bench, model, dtype, batch, length, attention, variant), engines in rows(records):
    unit = "pairs/s" if bench == "distill_step" else "texts/s"
    work = f"{bench}, {model}, {batch} x {length}, {dtype}"
    if attention != "auto":
      work += f", attention {attention}"
    if variant and variant != f"attention {attention}":   # said once, not twice
      work += f", {variant}"
    ours, peer = engines.get("jax"), engines.get("torch")
    cell = lambda e: f"{e[0]:,.1f} {unit}" if e else "-"
    ratio = f"{ours[0] / peer[0]:.2f}x" if ours and peer else "-"
    mfu = " / ".join(f"{e[1]:.1%}" if e else "-" for e in (ours, peer))
    lines.append(f"| {work} | {cell(ours)} | {cell(peer)}"
                 f"{' (' + peer[2] + ')' if peer else ''} | {ratio} | {mfu} |")
  return "\n".join(lines)


def main():
  if len(sys.argv) != 2:
    raise SystemExit(__doc__)
  with open(sys.argv[1], encoding="utf-8") as f:
    records = [json.loads(line) for line in f if line.strip()]
  print(table(records))


if __name__ == "__main__":
  main()
