"""The model registry: immutable model versions under DATA_DIR/models, the production pointer, the
promotion gate and rollback. See docs/evaluation.md. Only `gate` evaluates (and so imports torch, lazily);
`versions`, `pointer` and `card` do not."""

from __future__ import annotations

from typing import Any


class RegistryError(Exception):
    """A registry operation cannot be done (no such version, no checkpoint); the message says why."""


class PromotionRefused(RegistryError):
    """The gate said no (or another promotion won): `details` has the scores and the deciding rule."""

    def __init__(self, rule: str, details: dict[str, Any]) -> None:
        super().__init__(rule)
        self.rule = rule
        self.details = {"promoted": False, "rule": rule, **details}
