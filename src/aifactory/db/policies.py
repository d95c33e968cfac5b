"""Source policies: per-domain licence, permission to train and sampling weight; their table; re-tagging.

A pattern matches a host on label boundaries: `example.com` matches `example.com` and
`news.example.com`, never `badexample.com` (the original matched any suffix). The most specific
matching pattern wins, and a policy may be limited to one source type. The defaults (seeded by the
migration that creates the table) follow the original: Wikipedia is CC BY-SA, arXiv metadata CC0,
social networks are not trained on. The rules live here, beside their table, because the text
pipeline, the dataset and the API all apply them.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from aifactory.db.database import Database
from aifactory.db.schema import documents, source_policies

ANY_SOURCE = "any"


@dataclass(frozen=True)
class Policy:
    domain_pattern: str
    source_type: str = ANY_SOURCE
    license_tag: str = "unknown"
    allow_training: bool = True
    base_weight: float = 1.0
    notes: str = ""


DEFAULT_POLICY = Policy(domain_pattern="", notes="no policy matched")


def normalize_pattern(pattern: str) -> str:
    pattern = pattern.strip().lower().rstrip(".")
    for prefix in ("https://", "http://", "*."):
        if pattern.startswith(prefix):
            pattern = pattern[len(prefix) :]
    return pattern.split("/", 1)[0].split(":", 1)[0]


def matches(pattern: str, host: str) -> bool:
    """Label-boundary match: the host is the pattern or a subdomain of it."""
    host = host.lower().rstrip(".")
    return bool(pattern) and (host == pattern or host.endswith("." + pattern))


def resolve(policies: list[Policy], host: str, source_type: str) -> Policy:
    """The most specific policy for this host and source type (or the default: allowed, unknown)."""
    best: Policy | None = None
    for policy in policies:
        if policy.source_type not in (ANY_SOURCE, source_type) or not matches(policy.domain_pattern, host):
            continue
        more_specific = best is None or len(policy.domain_pattern) > len(best.domain_pattern)
        same_but_typed = (
            best is not None
            and len(policy.domain_pattern) == len(best.domain_pattern)
            and policy.source_type != ANY_SOURCE
        )
        if more_specific or same_but_typed:
            best = policy
    return best or DEFAULT_POLICY


def load(db: Database) -> list[Policy]:
    with db.read() as conn:
        rows = conn.execute(sa.select(source_policies).order_by(source_policies.c.domain_pattern))
        return [
            Policy(
                row.domain_pattern,
                row.source_type,
                row.license_tag,
                bool(row.allow_training),
                float(row.base_weight),
                row.notes,
            )
            for row in rows
        ]


def list_rows(db: Database, limit: int = 1000) -> list[dict]:
    query = sa.select(source_policies).order_by(source_policies.c.updated_at.desc()).limit(limit)
    with db.read() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def upsert(db: Database, policy: Policy) -> Policy:
    pattern = normalize_pattern(policy.domain_pattern)
    values = {
        "domain_pattern": pattern,
        "source_type": policy.source_type,
        "license_tag": policy.license_tag,
        "allow_training": policy.allow_training,
        "base_weight": policy.base_weight,
        "notes": policy.notes,
        "created_at": db.now(),
        "updated_at": db.now(),
    }
    with db.begin() as conn:
        db.upsert(
            conn,
            source_policies,
            values,
            keys=["domain_pattern", "source_type"],
            update=lambda new: {
                name: new[name]
                for name in ("license_tag", "allow_training", "base_weight", "notes", "updated_at")
            },
        )
    return Policy(
        pattern,
        policy.source_type,
        policy.license_tag,
        policy.allow_training,
        policy.base_weight,
        policy.notes,
    )


def retag(db: Database, pattern: str) -> int:
    """Re-apply the policies to stored documents of hosts the pattern covers; returns rows changed.

    Works domain by domain, one short transaction each, so the crawler and the API are never held
    up by a policy that covers a million documents."""
    pattern = normalize_pattern(pattern)
    rules = load(db)
    with db.read() as conn:
        domains = list(
            conn.execute(
                sa.select(documents.c.domain)
                .distinct()
                .where(sa.or_(documents.c.domain == pattern, documents.c.domain.like(f"%.{pattern}")))
            ).scalars()
        )
    changed = 0
    for domain in (d for d in domains if matches(pattern, d)):
        with db.read() as conn:
            sources = list(
                conn.execute(
                    sa.select(documents.c.source_type).distinct().where(documents.c.domain == domain)
                ).scalars()
            )
        for source in sources:
            policy = resolve(rules, domain, source)
            block = "" if policy.allow_training else f"policy:{policy.domain_pattern}"
            with db.begin() as conn:
                # A page's own opt-out (robots, TDM, noai) is not the policy's to lift.
                result = conn.execute(
                    documents.update()
                    .where(documents.c.domain == domain, documents.c.source_type == source)
                    .values(
                        license_tag=policy.license_tag,
                        block_reason=sa.case(
                            (documents.c.optout_reason != "", documents.c.optout_reason), else_=block
                        ),
                        allowed_for_training=sa.and_(documents.c.optout_reason == "", sa.literal(not block)),
                    )
                )
                changed += result.rowcount or 0
    return changed
