"""config.py: the checks name the key, the blocks build the core dataclasses, and resuming
compares config records (a field added later matches while it stays at its default)."""
import copy
import json
import re

import pytest

from optical_jax import config as config_lib

from tests import repo


def _teacher_config(arg=None):
  return repo.load_config("configs/teacher.py", arg)


def test_check_names_the_key():
  c = config_lib.default()
  c.ot.epsilon = -1.0
  with pytest.raises(config_lib.ConfigError, match=r"config\.ot: epsilon must be > 0"):
    config_lib.check(c)
  c = config_lib.default()
  c.data.on_bad_line = "ignore"
  with pytest.raises(config_lib.ConfigError, match=r"config\.data\.on_bad_line='ignore'"):
    config_lib.check(c)
  for block, field in (("train", "lr"), ("model", "attention_chunk_mib")):
    c = config_lib.default()
    c[block][field] = 0.0
    with pytest.raises(config_lib.ConfigError, match=rf"config\.{block}\.{field} must be > 0"):
      config_lib.check(c)
  c = config_lib.default()
  c.model.attention_unrolled_chunks = -1
  with pytest.raises(config_lib.ConfigError,
                     match=r"config\.model\.attention_unrolled_chunks must be >= 0"):
    config_lib.check(c)
  c.model.attention_unrolled_chunks = 0    # always a loop
  config_lib.check(c)
  c = config_lib.default()
  c.model.attention = "chunked"
  config_lib.check(c)
  c.model.attention = "flash"
  with pytest.raises(config_lib.ConfigError, match=r"config\.model\.attention='flash'"):
    config_lib.check(c)


def test_unknown_and_missing_keys_are_named():
  c = config_lib.default()          # unlocked, as a notebook edits it
  c.train.stpes = 3
  with pytest.raises(config_lib.ConfigError,
                     match=r"config\.train\.stpes: unknown key; did you mean train\.steps\?"):
    config_lib.check(c)
  c = config_lib.default()
  del c.train["steps"]
  with pytest.raises(config_lib.ConfigError, match=r"config\.train\.steps is missing"):
    config_lib.check(c)


def test_unknown_method_is_a_config_error():
  c = config_lib.default()
  c.method = "kd_msee"
  with pytest.raises(config_lib.ConfigError, match="config.method='kd_msee'"):
    config_lib.check(c)
  c.method, c.loss.token_mse_weight = "kd_token", 0.0
  with pytest.raises(config_lib.ConfigError, match="loss.token_mse_weight, which is 0"):
    config_lib.check(c)


def test_check_teacher_names_the_key():
  c = _teacher_config("smoke")
  config_lib.check_teacher(c)
  with pytest.raises(AttributeError):
    c.teacher.scorign = "dense"          # locked: a typo is no new field
  bad = _teacher_config("smoke")
  with bad.unlocked():
    bad.teacher.scoring = "dence"
  with pytest.raises(config_lib.ConfigError, match=r"config\.teacher\.scoring='dence'"):
    config_lib.check_teacher(bad)
  with bad.unlocked():                   # unlocked (a notebook): still an error
    bad.teacher.scoring = "dense"
    bad.teacher.scorign = "dense"
  with pytest.raises(config_lib.ConfigError, match=r"config\.teacher\.scorign: unknown key"):
    config_lib.check_teacher(bad)
  for key, value, pattern in (("temperature", 0.0, "temperature"),
                              ("max_pairs", -1, "max_pairs"), ("format", "csv", "format")):
    c = _teacher_config("smoke")
    with c.unlocked():
      c.teacher[key] = value
    with pytest.raises(config_lib.ConfigError, match=rf"config\.teacher\.{pattern}"):
      config_lib.check_teacher(c)
  with pytest.raises(config_lib.ConfigError, match=r"config\.teacher\.triples is empty"):
    config_lib.check_teacher(_teacher_config())     # the default needs the user's triples
  with pytest.raises(ValueError, match="'smoke'"):
    _teacher_config("huge")
  missing = config_lib.default()
  del missing["teacher"]
  with pytest.raises(config_lib.ConfigError, match=r"config\.teacher is missing"):
    config_lib.check_teacher(missing)


def test_blocks_build_the_core_dataclasses():
  c = config_lib.default()
  c.ot.epsilon = 0.25
  c.pretrain.tlm_max_length = 0            # 0: no limit of its own
  assert config_lib.ot_config(c).epsilon == 0.25
  assert config_lib.pretrain_config(c).tlm_max_length is None
  c.intent.hidden = -1
  with pytest.raises(config_lib.ConfigError, match=r"config\.intent\.hidden"):
    config_lib.intent_head_config(c)


def test_differences_count_a_missing_field_as_its_default():
  saved = {"loss": {"ot_weight": 1.0}, "seed": 0}            # written before 'added' existed
  defaults = {"loss": {"ot_weight": 0.5, "added": 3}, "seed": 0}
  now = {"loss": {"ot_weight": 1.0, "added": 3}, "seed": 0}
  assert config_lib.differences(saved, now, defaults) == []
  now["loss"]["added"] = 4
  assert config_lib.differences(saved, now, defaults) == ["loss.added"]
  now["seed"] = 1
  assert config_lib.differences(saved, now, defaults) == ["loss.added", "seed"]
  # A key only one side has, with no default to stand in, differs.
  assert config_lib.differences({"loss": {"gone": 1}}, {"loss": {}}, {}) == ["loss.gone"]
  assert config_lib.differences({}, {"new": 1}, {}) == ["new"]
  # Without `defaults`, default() stands in: a record lacking a field at its default matches.
  record = json.loads(config_lib.default().to_json_best_effort())
  old = copy.deepcopy(record)
  del old["train"]["steps"]
  assert config_lib.differences(old, record) == []
  record["train"]["steps"] += 1
  assert config_lib.differences(old, record) == ["train.steps"]


def test_check_resumable_names_the_first_differing_key(tmp_path):
  c = config_lib.default()
  keys = ("seed", "loss", "train.steps")
  record = config_lib.resume_record(c, keys)
  assert record["seed"] == c.seed and record["train.steps"] == c.train.steps
  assert record["loss"]["temperature"] == c.loss.temperature
  json.dumps(record)                          # what a checkpoint's JSON holds
  config_lib.check_resumable(record, c, keys, tmp_path)
  c.train.lr *= 2                             # not a resume key: resumes
  config_lib.check_resumable(record, c, keys, tmp_path)
  c.loss.temperature *= 2
  c.seed += 1
  with pytest.raises(config_lib.ConfigError, match=re.escape(
      f"{tmp_path} holds a run with a different config.loss.temperature (and 1 more keys)")):
    config_lib.check_resumable(record, c, keys, tmp_path)
