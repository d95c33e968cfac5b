"""The dataset tests' small bilingual corpus and its tokenizer (which has the chat control tokens)."""

from tests.dataset.conftest import corpus_db, settings, tokenizer  # noqa: F401
