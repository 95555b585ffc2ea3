"""The core dataclasses at the config's defaults, with overrides: what a test that
builds one by hand starts from. `config.default()` is the one source of defaults."""
import dataclasses

from optical_jax import config as config_lib


def ot_config(**overrides):
  """`core.ot.OTConfig` of the default `ot` block, fields replaced by `overrides`."""
  return dataclasses.replace(config_lib.ot_config(config_lib.default()), **overrides)


def loss_config(method: str = "optical", **overrides):
  """`core.losses.LossConfig` the default config trains `method` with, then `overrides`."""
  c = config_lib.default()
  c.method = method
  return dataclasses.replace(config_lib.loss_config(c), **overrides)


def mlm_config(**overrides):
  """`core.masking.MLMConfig` of the default `pretrain` block, then `overrides`."""
  return dataclasses.replace(config_lib.pretrain_config(config_lib.default()), **overrides)


def head_config(**overrides):
  """`core.probe.HeadConfig` of the default `intent` block, then `overrides`."""
  return dataclasses.replace(config_lib.intent_head_config(config_lib.default()), **overrides)
