"""The command line (main.py): every --mode runs a mode, a typo in a config key or a stray
argument is an error."""
from absl import app
from absl import flags
import pytest

from optical_jax import main

from tests import repo


def test_every_mode_flag_has_a_mode():
  assert sorted(flags.FLAGS["mode"].parser.enum_values) == sorted(main.MODES)
  assert all(callable(mode) for mode in main.MODES.values())


def test_a_stray_argument_is_an_error():
  with pytest.raises(app.UsageError, match=r"unexpected arguments: \['stray'\]"):
    main.main(["optical-jax", "stray"])


def test_config_typo_is_an_error():
  out = repo.cli("--config=configs/demo.py", "--workdir=/tmp/never", "--config.trian.steps=5",
                 timeout=120)
  assert out.returncode != 0
  assert "trian" in out.stderr
