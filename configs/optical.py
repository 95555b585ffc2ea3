r"""OPTICAL on your own teacher, bitext and evaluation collection.

  optical-jax --config=configs/optical.py --workdir=runs/sw \
      --config.model.teacher=intfloat/multilingual-e5-base \
      --config.data.path=sw-en.tsv \
      --config.eval.queries=queries.tsv --config.eval.corpus=corpus.tsv \
      --config.eval.qrels=qrels.txt

model.teacher   a Hugging Face directory or hub id (BERT / mBERT / XLM-R / e5); the
                student starts as a copy of it.
data            bitext: format tsv (data.path, columns data.src_column/tgt_column),
                parallel (data.src_path + data.tgt_path, line i of each) or jsonl
                (data.path, keys data.src_key/tgt_key); on_bad_line error | skip.
eval            queries / corpus: `id<TAB>text` or BEIR .jsonl; qrels: TREC.
                eval.collection='none' trains without evaluating.
text            prefixes: e5 models want "query: " / "passage: "; set all four to ''
                for models trained without prefixes.
loss, ot        the objective (see README: OT + in-batch contrastive by default).

`:tiny` runs a few steps for smoke tests.
"""
import ml_collections

from optical_jax import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = config_lib.default()
  c.data.source = "files"
  c.data.format = "tsv"
  c.eval.collection = "files"
  if arg == "tiny":
    c.train.steps = 4
    c.train.batch_size = 8
    c.train.log_every = 1
  elif arg:
    raise ValueError(f"configs/optical.py takes no argument or 'tiny', got {arg!r}")
  c.lock()
  return c
