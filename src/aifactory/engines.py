"""The engines this installation can run. Each area of the factory adds its engine spec here."""

from __future__ import annotations

from aifactory.collect import engine as collector
from aifactory.dataset import engine as dataset
from aifactory.engine import EngineContext, EngineSpec
from aifactory.sources import engine as sources
from aifactory.text import engine as text


def available_engines() -> list[EngineSpec]:
    """Engine specs for every role; a node keeps those whose `roles` include its own."""
    return [
        EngineSpec(
            name="collector",
            run=collector.run,
            description="Polite distributed web crawler: frontier in the database, pages to the pipeline.",
            roles=("master", "worker"),
        ),
        EngineSpec(
            name="sources",
            run=sources.run,
            description="Feeds, Hacker News, arXiv, Wikipedia and discovery search, each on its schedule.",
            roles=("master", "worker"),
        ),
        EngineSpec(
            name="text",
            run=text.run,
            description="Extraction, language, quality, PII masking and dedup of fetched pages, in a "
            "process pool; stores documents.",
            roles=("master", "worker"),
        ),
        EngineSpec(
            name="dataset",
            run=dataset.run,
            description="Trains the tokenizer once, then tokenizes new documents into token shards in "
            "parallel processes and records dataset versions.",
            roles=("master",),
        ),
        EngineSpec(
            name="trainer",
            run=run_trainer,
            description="Trains the model continuously on the token dataset, in its own process.",
            roles=("master",),
            own_process=True,
        ),
        EngineSpec(
            name="inference",
            run=run_inference,
            description="Serves the model to the chat and the generation APIs, in its own process; runs "
            "from the node's start, whether or not Ignite was pressed, and keeps the RAG index up to date.",
            roles=("master",),
            own_process=True,
            follows_ignite=False,
        ),
    ]


def run_trainer(ctx: EngineContext) -> None:
    # Imported here, in the trainer's own process: the web server and workers never load torch.
    from aifactory.train.engine import run

    run(ctx)


def run_inference(ctx: EngineContext) -> None:
    # Its own process too: torch is imported there (once a model exists), never in the web server.
    from aifactory.serve.server import run

    run(ctx)
