"""Training infrastructure: everything a job needs to train a model on a mesh and resume.

  trainable.py    a model as a graph plus named parameter dicts; which parameters train
  state.py        the checkpointed state and the optimizer
  pretraining.py  the MLM / TLM terms as an extra loss on the student
  step.py         the pure steps: distillation (OT + contrastive ...) and the teacher's
  runner.py       one step on one device, on a mesh (jit with shardings) or under pmap
  loop.py         the loop every job runs: batches, NaN stop, logs, checkpoints, signals
  checkpoint.py   Orbax checkpoints, the preemption guard
  sharding.py     meshes, logical-axis rules, placement, per-device OT
  metric_log.py   metrics.jsonl and TensorBoard
  student.py      the student's parameters, and restoring a trained one from a workdir
  setup.py        what a distillation job works with (teacher, tokenizer, bitext, collection)
"""
