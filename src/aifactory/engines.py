"""The engines this installation can run. Each area of the factory adds its engine spec here."""

from __future__ import annotations

from aifactory.collect import engine as collector
from aifactory.engine import EngineSpec
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
    ]
