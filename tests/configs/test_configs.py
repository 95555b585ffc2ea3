"""configs/demo.py and configs/optical.py: each variant loads locked and passes the checks."""
import pytest

from optical_jax import config as config_lib

from tests import repo


@pytest.mark.parametrize("name", ["demo", "optical"])
def test_configs_load_locked_and_checked(name):
  module = repo.config_module(f"configs/{name}.py")
  for arg in (None, "tiny"):
    c = module.get_config(arg)
    if name == "optical":   # a template: the user's files are what it lacks, named
      with pytest.raises(config_lib.ConfigError, match=r"config\.data\.path is empty"):
        config_lib.check(c)
      with c.unlocked():
        c.data.path = "pairs.tsv"
        c.eval.update(queries="q.tsv", corpus="c.tsv", qrels="qrels.txt")
    config_lib.check(c)
    with pytest.raises(AttributeError):
      c.train.stpes = 3          # locked: a typo is an error, not a new field
  with pytest.raises(ValueError, match="takes no argument or 'tiny'"):
    module.get_config("huge")
