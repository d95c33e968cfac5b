"""Fixtures for the dataset tests: a migrated database with a small bilingual corpus and its tokenizer."""

from __future__ import annotations

from typing import Any

import pytest

from aifactory.dataset import tokenizer as tokenizers
from aifactory.db.database import Database
from aifactory.settings import Settings
from tests.dataset.helpers import add_documents, small_settings, trained_tokenizer


@pytest.fixture
def settings(make_settings: Any, db: Database) -> Settings:
    return small_settings(make_settings, db)


@pytest.fixture
def corpus_db(db: Database) -> Database:
    """The database with 120 documents, half English, half Japanese."""
    add_documents(db, range(120))
    return db


@pytest.fixture
def tokenizer(settings: Settings, corpus_db: Database) -> tokenizers.Tokenizer:
    return trained_tokenizer(settings, corpus_db)
