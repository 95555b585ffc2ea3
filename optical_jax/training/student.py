"""The student: what it starts as, and a trained one restored from a workdir.

The student starts as a copy of the teacher; `train.trainable` says which of
its parameters train, plus the LM head when the `pretrain` terms are on.
`restore_student` rebuilds the student of a workdir's latest checkpoint, which
the retrieval modes (evaluate, search, export) and the research jobs use.
"""
from __future__ import annotations

import ml_collections

from optical_jax import config as config_lib
from optical_jax import models
from optical_jax.models import heads as heads_lib
from optical_jax.models import tokenizer as tokenizer_lib
from optical_jax.training import checkpoint as checkpoint_lib
from optical_jax.training import state as state_lib
from optical_jax.training.pretraining import Pretraining
from optical_jax.training.trainable import split_model

# Config blocks that must not change when a distillation run resumes (steps may grow).
RESUME_INVARIANT = ("seed", "method", "model", "text", "data", "loss", "ot", "pretrain")


def student_parameters(config: ml_collections.ConfigDict, teacher: heads_lib.TextModel,
                       directory, tokenizer: tokenizer_lib.Tokenizer):
  """(teacher parts, teacher params, trainable, frozen, Pretraining or None).

  The student starts as the teacher; only `train.trainable` names get
  optimised, plus the LM head when the `pretrain` terms are on.
  """
  parts, teacher_params, params, frozen = split_model(teacher, config.train.trainable,
                                                     teacher.encoder.cfg.num_layers)
  pretrain = None
  mlm_cfg = config_lib.pretrain_config(config)
  if mlm_cfg.enabled:
    pretrain, head_params = Pretraining.create(mlm_cfg, teacher, directory, tokenizer,
                                               config.seed)
    params = dict(params, **head_params)
  return parts, teacher_params, params, frozen, pretrain


def restore_student(config: ml_collections.ConfigDict, workdir: str,
                    teacher: heads_lib.TextModel | None = None) -> heads_lib.TextModel:
  """The student of the latest checkpoint in `workdir` (error if there is none)."""
  if teacher is None:
    teacher, tokenizer, directory = models.load_configured(config.model)
  else:
    directory = models.resolve_dir(config.model.teacher)
    tokenizer = tokenizer_lib.Tokenizer.from_pretrained(directory)
  parts, _, train_params, frozen, _ = student_parameters(config, teacher, directory, tokenizer)
  tx, _ = state_lib.make_optimizer(config.train)
  ckpt = checkpoint_lib.Checkpointer(workdir)
  restored = ckpt.restore(state_lib.init_state(train_params, tx, config.seed))
  ckpt.close()
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {ckpt.directory}: run --mode=distill first")
  state, meta = restored
  config_lib.check_resumable(meta["config"], config, RESUME_INVARIANT, workdir)
  return parts.merge(frozen, state.params)
