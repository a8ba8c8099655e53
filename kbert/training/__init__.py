"""Training runs and what they are made of: optimizers and schedules (`optimizers`),
`tf.distribute` strategy selection (`distribute`), checkpoint / resume callbacks
(`checkpointing`), and the two runs: `pretrain` (masked LM + NSP) and `finetune` (a task).
"""
