"""Logging for every process of the factory: one format, and secrets masked in every line."""

from __future__ import annotations

import logging

from aifactory.settings import Settings, mask_secrets


class SecretFilter(logging.Filter):
    """Replaces tokens and database passwords in a record's message (and traceback) with ***."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message, self.secrets)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text, self.secrets)
        return True


def configure_logging(settings: Settings, level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or settings.log_level).upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration is enough
    secret_filter = SecretFilter(settings.secrets())
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, SecretFilter) for f in handler.filters):
            handler.addFilter(secret_filter)
