"""The distill job (jobs/distill.py) end to end, through the command line, and how it fails."""
import json
import os

import ml_collections
import numpy as np
import pytest

from optical_jax import config as config_lib
from optical_jax.core import host_heap
from optical_jax.data import batches
from optical_jax.jobs import distill
from optical_jax.models import tokenizer as tokenizer_lib
from optical_jax.training import checkpoint

from tests import repo
from tests import tiny_checkpoints
from tests.conftest import read_multilingual

_cli = repo.cli


@pytest.mark.real_model
def test_demo_pipeline_through_the_cli(tmp_path):
  wd = tmp_path / "demo"
  out = _cli("--config=configs/demo.py:tiny", f"--workdir={wd}")
  assert out.returncode == 0, out.stderr[-3000:]
  # One table: zero-shot vs the student, every configured metric.
  assert "| teacher, zero-shot |" in out.stdout and "| OPTICAL student |" in out.stdout
  results = json.loads((wd / "results.json").read_text())
  for name in ("zero_shot", "optical"):
    assert set(results[name]) >= {"nDCG@10", "MRR@10", "R@100"}
    assert all(0.0 <= results[name][m] <= 1.0 for m in ("nDCG@10", "MRR@10", "R@100"))
  assert results["steps"] == 4
  # The runs on disk are real TREC runs of the held-out queries.
  run_lines = (wd / "eval" / "optical.run").read_text().splitlines()
  assert len({l.split()[0] for l in run_lines}) == 48
  assert all(len(l.split()) == 6 for l in run_lines)
  records = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
  assert (wd / "tensorboard").is_dir()
  # On a CPU with glibc's defaults, the training job names the faster setting.
  hint = "--host_heap=tcmalloc (or keep) runs training steps faster"
  on_cpu_defaults = (host_heap.configure("os") == host_heap.OS_DEFAULT
                     and not host_heap.accelerator_expected(os.environ))
  assert (hint in out.stderr) == on_cpu_defaults

  # The same run again: everything is done, nothing is recomputed.
  again = _cli("--config=configs/demo.py:tiny", f"--workdir={wd}")
  assert again.returncode == 0, again.stderr[-3000:]
  assert json.loads((wd / "results.json").read_text()) == results

  # Export: PyTorch transformers loads the student and embeds as we do.
  export = _cli("--config=configs/demo.py:tiny", f"--workdir={wd}", "--mode=export",
                f"--export_dir={tmp_path / 'hf'}")
  assert export.returncode == 0, export.stderr[-3000:]
  assert hint not in export.stderr   # no training steps there
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from optical_jax.models import weights
  tok = tokenizer_lib.Tokenizer.from_pretrained(tmp_path / "hf")
  batch = tok.encode(["Mulungu anakonda dziko lapansi"], prefix="query: ")
  ours = np.asarray(weights.load_pretrained(str(tmp_path / "hf")).token_embeddings(
      batch.ids, batch.mask))
  hf = transformers.AutoModel.from_pretrained(str(tmp_path / "hf")).eval()
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(batch.ids, dtype=torch.long),
             attention_mask=torch.tensor(batch.mask)).last_hidden_state.numpy()
  assert np.abs(ours - ref).max() < 1e-4


def _files_config(tmp_path, **train) -> ml_collections.ConfigDict:
  teacher = tiny_checkpoints.write_xlmr(tmp_path / "teacher")
  rows = read_multilingual()
  english = [t for lang, t in rows if lang == "en"]
  data = tmp_path / "pairs.tsv"
  data.write_text("".join(f"{t}\t{english[i % 2]}\n" for i, (lang, t) in enumerate(rows)))
  c = config_lib.default()
  c.model.teacher = str(teacher)
  c.data.update(source="files", format="tsv", path=str(data))
  c.eval.collection = "none"
  c.train.update(steps=6, batch_size=8, max_length=32, log_every=1, progress=False, **train)
  c.ot.num_iterations = 5
  c.checkpoint.update(every_steps=2, async_save=False)
  c.lock()
  return c


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  # An absurd learning rate sends the parameters to inf within a few steps.
  c = _files_config(tmp_path, lr=1e30, warmup_frac=0.0, clip_norm=0.0)
  with pytest.raises(FloatingPointError, match=r"loss became nan at step (\d+).*last good "
                                               r"checkpoint \(step (\d+)\)") as err:
    distill.run(c, str(tmp_path / "wd"))
  import re
  bad, good = map(int, re.search(r"step (\d+);.*\(step (\d+)\)", str(err.value)).groups())
  assert good < bad
  ckpt = checkpoint.Checkpointer(tmp_path / "wd")
  assert ckpt.latest_step() == good
  state = ckpt.manager.restore(good)["state"]
  ckpt.close()
  assert all(np.isfinite(np.asarray(v)).all() for v in state["params"].values())


def test_resume_with_another_config_is_refused(tmp_path):
  c = _files_config(tmp_path)
  distill.run(c, str(tmp_path / "wd"))
  c2 = _files_config(tmp_path)
  with c2.unlocked():
    c2.loss.temperature = 0.1
  with pytest.raises(config_lib.ConfigError,
                     match=r"another training config: config\.loss\.temperature \(0\.05 there"):
    distill.run(c2, str(tmp_path / "wd"))


def _train_records(workdir) -> list[dict]:
  """The train records of metrics.jsonl without the throughput (a wall-clock rate)."""
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [{k: v for k, v in r.items() if not k.endswith("_per_s")}
          for r in records if r["kind"] == "train"]


def _saved_params(workdir) -> dict[str, np.ndarray]:
  """The trainable parameters of the latest checkpoint."""
  ckpt = checkpoint.Checkpointer(workdir)
  saved = ckpt.manager.restore(ckpt.latest_step())["state"]["params"]
  ckpt.close()
  return {k: np.asarray(v) for k, v in saved.items()}


def test_code_switching_in_the_job(tmp_path, monkeypatch):
  """With a dictionary file at rate 1 the job trains on the switched source side, every
  dictionary word replaced (capitals kept), and it is deterministic: two runs in two
  workdirs see the same batches, log the same losses and save the same parameters."""
  cfg = _files_config(tmp_path)
  (tmp_path / "dict.tsv").write_text("ana\tchildren\nkusukulu\tto school\nmulungu\tgod\n")
  with cfg.unlocked():
    cfg.data.codeswitch_rate = 1.0
    cfg.data.codeswitch_dictionary = str(tmp_path / "dict.tsv")
  sources = []
  pair_batch = batches.pair_batch
  monkeypatch.setattr(batches, "pair_batch", lambda tokenizer, src, *a, **kw: sources.append(
      list(src)) or pair_batch(tokenizer, src, *a, **kw))
  runs = []
  for name in ("a", "b"):
    sources.clear()
    results = distill.run(cfg, str(tmp_path / name))
    assert results["steps"] == 6
    runs.append((list(sources), _train_records(tmp_path / name), _saved_params(tmp_path / name)))

  # By hand: the two Chichewa sentences with dictionary words, switched; the others as read.
  switched = {
      "Mulungu anakonda dziko lapansi kotero kuti anapereka Mwana wake.":
          "God anakonda dziko lapansi kotero kuti anapereka Mwana wake.",
      "Ana anapita kusukulu m'mawa uno.": "Children anapita to school m'mawa uno."}
  texts = [t for _, t in read_multilingual()]
  assert set(switched) <= set(texts)
  seen = {t for batch in runs[0][0] for t in batch}
  assert len(runs[0][0]) == 6 and all(len(batch) == 8 for batch in runs[0][0])
  assert seen == {switched.get(t, t) for t in texts}      # 48 rows: every one of the 15

  (sources_a, records_a, params_a), (sources_b, records_b, params_b) = runs
  assert sources_b == sources_a
  assert [r["step"] for r in records_a] == [1, 2, 3, 4, 5, 6]
  assert records_b == records_a
  assert params_b.keys() == params_a.keys()
  for k in params_a:
    np.testing.assert_array_equal(params_b[k], params_a[k], err_msg=k)
