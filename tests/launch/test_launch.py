"""The TPU launch scripts and the Colab notebook."""
import os
import subprocess

import pytest

from tests import repo

REPO = repo.ROOT
SCRIPTS = [REPO / "launch" / "tpu.sh", REPO / "launch" / "run_tpu.sh"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_and_pass_shellcheck(script):
  out = repo.shellcheck(script)
  assert out.returncode == 0, out.stdout


def test_dry_run_prints_the_gcloud_commands():
  env = dict(os.environ, TPU_NAME="t1", ZONE="europe-west4-a", ACCELERATOR_TYPE="v5litepod-8",
             PROJECT="p")
  out = subprocess.run(["bash", str(SCRIPTS[0]), "--dry-run", "all", "--config=configs/demo.py",
                        "--workdir=/mnt/gcs/runs/demo"], env=env, capture_output=True,
                       text=True, check=True).stdout.splitlines()
  assert len(out) == 5 and all(line.startswith("gcloud compute tpus ") for line in out)
  assert "tpu-vm create t1 --zone=europe-west4-a --accelerator-type=v5litepod-8" in out[0]
  assert "--worker=all" in out[1] and "--worker=all" in out[2] and "--worker=all" in out[3]
  assert "launch/run_tpu.sh\\ --config=configs/demo.py" in out[3]
  assert all(line.endswith("--project=p") for line in out)
  queued = subprocess.run(["bash", str(SCRIPTS[0]), "--dry-run", "create"],
                          env=dict(env, QUEUED="1"), capture_output=True, text=True,
                          check=True).stdout
  assert queued.startswith("gcloud compute tpus queued-resources create t1 --node-id=t1")


@pytest.mark.real_model
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat", reason="nbformat comes with the test extra")
  nbclient = pytest.importorskip("nbclient", reason="nbclient comes with the test extra")
  # The kernel inherits this environment: a few steps of the tiny demo, one CPU device.
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.setenv("NOTEBOOK_CONFIG_ARG", "tiny")
  monkeypatch.setenv("NOTEBOOK_WORKDIR", str(tmp_path / "wd"))
  nb = nbformat.read(REPO / "launch" / "colab_tpu.ipynb", as_version=4)
  nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                          resources={"metadata": {"path": str(tmp_path)}}).execute()
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.get("outputs", []))
  assert "| OPTICAL student |" in outputs
  assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
             for o in c.get("outputs", [])), "the loss / metrics figure was drawn"
  assert (tmp_path / "wd" / "results.json").exists()
