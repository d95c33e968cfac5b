"""What the text engine does for chat tuning between batches: ingest the conversation files dropped
into DATA_DIR/chat-inbox and build synthetic conversations from the documents stored since last time.
Every CHAT_INBOX_POLL_SEC; cheap when there is nothing new (a directory listing and one query)."""

from __future__ import annotations

from collections import Counter

from aifactory.chat import synthetic
from aifactory.chat.ingest import scan_inbox
from aifactory.db.database import Database
from aifactory.settings import Settings


def chat_upkeep(settings: Settings, db: Database) -> Counter[str]:
    outcome: Counter[str] = Counter()
    for result in scan_inbox(settings, db):
        outcome.update(result.counts)
        outcome["chat.files"] += 1
    outcome.update(synthetic.build(settings, db))
    return outcome
