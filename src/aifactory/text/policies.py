"""Source policies: per-domain licence, permission to train, and sampling weight.

A pattern matches a host on label boundaries: `example.com` matches `example.com` and
`news.example.com`, never `badexample.com` (the original matched any suffix). The most specific
matching pattern wins, and a policy may be limited to one source type. The defaults (seeded by the
migration that creates the table) follow the original: Wikipedia is CC BY-SA, arXiv metadata CC0,
social networks are not trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

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
