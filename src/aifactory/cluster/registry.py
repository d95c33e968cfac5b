"""The engines this installation can run, named lazily: a node imports only the engines it starts.

A spec's `run` is "module:function" (imported in the thread or process that runs it, so `aifactory
status` never loads the crawler, and torch is only ever imported by the trainer's own process) or, in
tests, a function. Each area of the factory adds its engine here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aifactory.cluster.context import EngineContext

EngineFunction = Callable[["EngineContext"], None]


@dataclass(frozen=True)
class EngineSpec:
    """An engine a node can run. An own-process engine's `run` must be a string or a module-level
    function (it is sent to the child process by name)."""

    name: str
    run: str | EngineFunction
    description: str = ""
    roles: tuple[str, ...] = ("master",)
    own_process: bool = False
    # False: started when the node starts and left alone by Ignite/Stop, so it runs whether or not the
    # factory is collecting and training (the inference engine); only its own control stops it.
    follows_ignite: bool = True

    def load(self) -> EngineFunction:
        """The engine's function, importing its module now if `run` names it."""
        if callable(self.run):
            return self.run
        module, _, function = self.run.partition(":")
        return getattr(importlib.import_module(module), function)


ENGINES = (
    EngineSpec(
        "collector",
        "aifactory.collect.engine:run",
        "Polite distributed web crawler: frontier in the database, pages to the pipeline.",
        roles=("master", "worker"),
    ),
    EngineSpec(
        "sources",
        "aifactory.sources.engine:run",
        "Feeds, Hacker News, arXiv, Wikipedia and discovery search, each on its schedule.",
        roles=("master", "worker"),
    ),
    EngineSpec(
        "text",
        "aifactory.text.engine:run",
        "Extraction, language, quality, PII masking and dedup of fetched pages, in a process pool; "
        "stores documents.",
        roles=("master", "worker"),
    ),
    EngineSpec(
        "dataset",
        "aifactory.dataset.engine:run",
        "Trains the tokenizer once, then tokenizes new documents into token shards in parallel "
        "processes and records dataset versions.",
        roles=("master",),
    ),
    EngineSpec(
        "trainer",
        "aifactory.train.engine:run",
        "Trains the model continuously on the token dataset, in its own process.",
        roles=("master",),
        own_process=True,
    ),
    EngineSpec(
        "inference",
        "aifactory.serve.server:run",
        "Serves the model to the chat and the generation APIs, in its own process; runs from the node's "
        "start, whether or not Ignite was pressed, and keeps the RAG index up to date.",
        roles=("master",),
        own_process=True,
        follows_ignite=False,
    ),
    EngineSpec(
        "evaluator",
        "aifactory.evaluate.engine:run",
        "Evaluates each new best checkpoint within EVAL_TIME_BUDGET_SEC at low priority, in its own "
        "process; promotes it through the gate when AUTO_PROMOTE=1.",
        roles=("master",),
        own_process=True,
    ),
)


def available_engines() -> list[EngineSpec]:
    """Engine specs for every role; a node keeps those whose `roles` include its own."""
    return list(ENGINES)
