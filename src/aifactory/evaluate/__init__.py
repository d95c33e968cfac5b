"""Evaluation: an honest 0..1 score (chance-adjusted multiple-choice accuracy on held-out documents),
bits per byte per language, user prompts and growth samples. See docs/evaluation.md.

`task`, `bpb`, `generate`, `validation`, `load` and `suite` import torch; `target`, `store`, `jobs`,
`prompts` and `score` do not (the web process checks requests and reads results through them)."""


class EvalError(Exception):
    """An evaluation cannot run (no checkpoint, no validation data, a bad prompt file): the message says
    why."""


class EvalInterrupted(EvalError):
    """Stop was asked for, or the time budget ran out, before the evaluation finished: nothing was stored."""
