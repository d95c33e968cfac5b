"""The engines this installation can run. Each area of the factory adds its engine spec here."""

from __future__ import annotations

from aifactory.engine import EngineSpec


def available_engines() -> list[EngineSpec]:
    """Engine specs for every role; a node keeps those whose `roles` include its own."""
    return []
