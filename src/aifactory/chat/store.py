"""The conversations table: storing conversations (deduplicated, policy-checked, versioned, split) and
reading them back for training and evaluation.

Like documents: a conversation has a key (its file and record, or its page and question) the way a
document has its URL. The same key with new text replaces the row and counts up `version`; the same
text under any key is a duplicate (content hash, whitespace and case folded); the validation split is
drawn once from the key, so a conversation never moves between training and validation, not even
when it is edited. The source policies apply by the domain of the conversation's source URL, with the
source type "chat" (ingested) or "synthetic": a conversation the policies do not allow to be trained
on is refused, not stored, and counted as such.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from aifactory.chat.conversation import Conversation
from aifactory.db import counters
from aifactory.db import policies as policy_rules
from aifactory.db.database import Database
from aifactory.db.schema import conversations
from aifactory.text.pipeline import domain_of

TRAIN, VAL = "train", "val"
LOOKUP_CHUNK = 500


@dataclass(frozen=True)
class Keyed:
    key: str  # names the conversation across versions
    origin: str  # the file name, or "corpus" for synthetic ones
    conversation: Conversation
    doc_id: int | None = None


def split_of(key: str, fraction: float) -> str:
    """Validation when the key's SHA-256 draw is below `fraction`: fixed by the key alone."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return VAL if int.from_bytes(digest[:8], "big") / 2.0**64 < fraction else TRAIN


def store(
    db: Database,
    items: Iterable[Keyed],
    policies: list[policy_rules.Policy],
    *,
    val_fraction: float,
    node_id: str = "",
) -> Counter[str]:
    """Store conversations in one transaction; returns the outcome counts (chat.stored, chat.replaced,
    chat.unchanged, chat.duplicate, chat.refused.policy), which also go to the shared counters."""
    outcome: Counter[str] = Counter()
    batch: dict[str, Keyed] = {}
    hashes: set[bytes] = set()
    for item in items:
        digest = item.conversation.content_hash()
        if item.key in batch or digest in hashes:
            outcome["chat.duplicate"] += 1
            continue
        source_type = "synthetic" if item.conversation.synthetic else "chat"
        policy = policy_rules.resolve(policies, domain_of(item.conversation.source_url), source_type)
        if not policy.allow_training:
            outcome["chat.refused.policy"] += 1
            continue
        batch[item.key] = item
        hashes.add(digest)
    if not batch:
        if outcome:
            counters.add(db, dict(outcome))
        return outcome
    with db.begin() as conn:
        previous = _stored(conn, sorted(batch))
        now = db.now_value(conn)
        fresh: list[dict] = []
        for key, item in batch.items():
            row = _row(item, policies, val_fraction, node_id, now)
            old = previous.get(key)
            if old is None:
                fresh.append(row)
            elif old[1] == row["content_hash"]:
                outcome["chat.unchanged"] += 1
            elif _hash_taken(conn, row["content_hash"]):
                outcome["chat.duplicate"] += 1
            else:  # a new version: same key, same split, new text
                row.pop("created_at")
                row["split"] = old[2]
                row["version"] = old[3] + 1
                conn.execute(conversations.update().where(conversations.c.id == old[0]).values(**row))
                outcome["chat.replaced"] += 1
        if fresh:
            dialect = postgresql if db.backend == "postgresql" else sqlite
            statement = dialect.insert(conversations).on_conflict_do_nothing().returning(conversations.c.key)
            inserted = set(conn.execute(statement, fresh).scalars())
            outcome["chat.stored"] += len(inserted)
            outcome["chat.duplicate"] += len(fresh) - len(inserted)  # the same text under another key
            outcome["chat.stored.synthetic"] += sum(
                1 for row in fresh if row["key"] in inserted and row["synthetic"]
            )
        counters.add(db, {name: value for name, value in outcome.items() if value}, conn)
    return outcome


def _row(item: Keyed, policies: list[policy_rules.Policy], fraction: float, node_id: str, now: float) -> dict:
    conversation = item.conversation
    domain = domain_of(conversation.source_url)
    source_type = "synthetic" if conversation.synthetic else "chat"
    policy = policy_rules.resolve(policies, domain, source_type)
    return {
        "key": item.key[:600],
        "origin": item.origin[:500],
        "source_url": conversation.source_url[:2000],
        "domain": domain[:255],
        "format": conversation.format,
        "synthetic": conversation.synthetic,
        "messages": conversation.as_messages(),
        "language": conversation.language,
        "split": split_of(item.key, fraction),
        "content_hash": conversation.content_hash(),
        "turns": len(conversation.messages),
        "char_count": conversation.chars,
        "license_tag": policy.license_tag,
        "version": 1,
        "doc_id": item.doc_id,
        "node_id": node_id,
        "created_at": now,
        "updated_at": now,
    }


def _stored(conn: Connection, keys: list[str]) -> dict[str, tuple[int, bytes, str, int]]:
    """key -> (id, content hash, split, version) of the stored conversations with these keys."""
    found: dict[str, tuple[int, bytes, str, int]] = {}
    c = conversations.c
    for start in range(0, len(keys), LOOKUP_CHUNK):
        rows = conn.execute(
            sa.select(c.key, c.id, c.content_hash, c.split, c.version).where(
                c.key.in_(keys[start : start + LOOKUP_CHUNK])
            )
        )
        found.update((key, (int(i), bytes(h), split, int(v))) for key, i, h, split, v in rows)
    return found


def _hash_taken(conn: Connection, digest: bytes) -> bool:
    query = sa.select(conversations.c.id).where(conversations.c.content_hash == digest).limit(1)
    return conn.execute(query).first() is not None


# --- reading back -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredConversation:
    id: int
    messages: list[dict[str, str]]
    language: str
    synthetic: bool
    split: str
    source_url: str
    version: int


def load(
    db: Database, *, split: str | None = None, synthetic: bool | None = None, limit: int | None = None
) -> list[StoredConversation]:
    """Stored conversations in id order (the order is part of what makes a training run repeatable)."""
    c = conversations.c
    query = sa.select(c.id, c.messages, c.language, c.synthetic, c.split, c.source_url, c.version)
    if split is not None:
        query = query.where(c.split == split)
    if synthetic is not None:
        query = query.where(c.synthetic == synthetic)
    query = query.order_by(c.id)
    if limit is not None:
        query = query.limit(limit)
    with db.read() as conn:
        return [
            StoredConversation(
                int(row.id),
                list(row.messages),
                row.language,
                bool(row.synthetic),
                row.split,
                row.source_url,
                int(row.version),
            )
            for row in conn.execute(query)
        ]


def fingerprint(db: Database) -> str:
    """Changes whenever a conversation is added, replaced or removed (count, newest id, versions)."""
    c = conversations.c
    with db.read() as conn:
        count, newest, versions, updated = conn.execute(
            sa.select(sa.func.count(), sa.func.max(c.id), sa.func.sum(c.version), sa.func.max(c.updated_at))
        ).one()
    return f"{count}:{newest}:{versions}:{updated}"


def summary(db: Database) -> dict[str, int]:
    """Conversations by split and kind, for status lines."""
    c = conversations.c
    with db.read() as conn:
        rows = conn.execute(sa.select(c.split, c.synthetic, sa.func.count()).group_by(c.split, c.synthetic))
        out: Counter[str] = Counter()
        for split, synthetic, count in rows:
            out[f"{split}.{'synthetic' if synthetic else 'ingested'}"] += int(count)
    return dict(out)
