"""Training: the continuous trainer and everything it needs.

batches.py     BatchSource, the protocol the trainer reads data through, and TokenArraySource
schedule.py    the learning-rate schedules
runtime.py     device, precision, threads and DDP set-up
checkpoint.py  atomic, verifiable checkpoints (safetensors + JSON) with latest/best/backup pointers
trainer.py     the model, its optimizer and one optimizer step / one evaluation
cycle.py       a training cycle: steps, evaluations, early stopping, and recovery from failures
metrics.py     the training_metrics table: writing, bounding and reading the series (no torch)
mfu.py         the machine's measured matmul peak, for model FLOP utilisation
engine.py      the trainer engine the node runs (its data source comes from the dataset)
foreground.py  `aifactory train` and `aifactory model info`

Nothing is imported here: `aifactory.train.metrics` must stay importable without torch (web server).
"""
